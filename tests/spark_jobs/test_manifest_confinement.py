"""--allowed-prefix: images outside the allowed folders stop the featurize job before any work."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from local_spark import run_local
from spark_jobs import featurize
from spark_jobs.featurization import input_confinement
from tests.support import SAMPLE, WEIGHTS, copy_sample


def job_args(*, output: Path, allowed: list[str], images: Path | None = None, manifest: Path | None = None) -> argparse.Namespace:
    argv = ["--output", str(output), "--alpha", "0.35", "--weights", str(WEIGHTS)]
    argv += ["--images", str(images)] if images is not None else ["--manifest", str(manifest)]
    for prefix in allowed:
        argv += ["--allowed-prefix", prefix]
    return featurize.build_parser().parse_args(argv)


def last_job_id(spark) -> int:
    return max(spark.sparkContext.statusTracker().getJobIdsForGroup(), default=-1)


@pytest.fixture()
def folders(tmp_path) -> dict[str, list[Path]]:
    """Real photos in raw/ (the allowed folder), raw-other/ (a look-alike) and elsewhere/."""
    return {
        name: copy_sample(tmp_path / name, per_label=1, offset=offset)
        for name, offset in (("raw", 100), ("raw-other", 101), ("elsewhere", 102))
    }


def write_manifest(path: Path, entries: list[str]) -> Path:
    path.write_text("".join(f"{entry}\n" for entry in entries))
    return path


def test_entries_outside_the_prefix_are_rejected_before_any_work(spark, tmp_path, folders):
    inside = [str(p) for p in folders["raw"]]
    outside = [
        str(folders["raw-other"][0]),  # shares the text "raw", not the folder
        f"{tmp_path}/raw/../elsewhere/{folders['elsewhere'][0].relative_to(tmp_path / 'elsewhere')}",
        folders["elsewhere"][1].as_uri(),
        *map(str, folders["elsewhere"][2:]),
        str(folders["raw-other"][1]),
        str(folders["raw-other"][2]),
    ]
    manifest = write_manifest(tmp_path / "manifest.txt", [inside[0], *outside[:3], *inside[1:], *outside[3:]])
    jobs_before = last_job_id(spark)
    with pytest.raises(featurize.InputError) as raised:
        featurize.run(spark, job_args(manifest=manifest, output=tmp_path / "out", allowed=[str(tmp_path / "raw")]))
    message = str(raised.value)
    assert f"manifest {manifest}: {len(outside)} of {len(inside) + len(outside)} entries are not under" in message
    assert f"--allowed-prefix file://{tmp_path}/raw/:" in message  # normalised, as a folder
    shown = message.split(f"file://{tmp_path}/raw/: ", 1)[1]
    assert shown.startswith(", ".join(outside[:5]) + f" and {len(outside) - 5} more")
    assert not any(entry in message for entry in outside[5:] + inside)
    assert "'..' segments are never allowed" in message
    assert "Fix the manifest so that it lists only images under an allowed prefix" in message
    assert not (tmp_path / "out").exists()
    assert last_job_id(spark) == jobs_before, "a Spark job ran before the manifest was checked"


def test_entries_inside_the_prefix_are_featurized(spark, tmp_path, folders):
    """Plain paths and file: URIs, '.' and '//' alike; a second prefix admits its own folder."""
    raw = folders["raw"]
    entries = [str(raw[0]), raw[1].as_uri(), f"file:{raw[2]}", str(raw[3]).replace("/raw/", "/raw/./"),
               str(folders["elsewhere"][0]).replace("/elsewhere/", "//elsewhere/")]
    manifest = write_manifest(tmp_path / "manifest.txt", entries)
    allowed = [(tmp_path / "raw").as_uri() + "/", str(tmp_path / "elsewhere" / "apple")]
    summary = featurize.run(spark, job_args(manifest=manifest, output=tmp_path / "out", allowed=allowed))
    assert (summary["images_seen"], summary["features_rows"], summary["quarantined"]) == (5, 5, 0)


def test_images_root_must_be_under_the_prefix(spark, tmp_path, folders):
    allowed = [str(tmp_path / "raw")]
    summary = featurize.run(spark, job_args(images=tmp_path / "raw", output=tmp_path / "ok", allowed=allowed))
    assert summary["features_rows"] == len(folders["raw"])
    for root in (tmp_path, tmp_path / "raw-other", Path(f"{tmp_path}/raw/../elsewhere")):
        with pytest.raises(featurize.InputError, match=f"image root {root} is not under --allowed-prefix file://{tmp_path}/raw/"):
            featurize.run(spark, job_args(images=root, output=tmp_path / "out", allowed=allowed))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "entry, inside",
    [
        ("s3://fruits-data/raw/apple/1.jpg", True),
        ("s3a://fruits-data/raw/apple/1.jpg", True),  # same bucket through another connector
        ("s3://fruits-data/raw//apple/./1.jpg", True),
        ("s3://fruits-data/raw-other/apple/1.jpg", False),
        ("s3://fruits-data/raw/../private/1.jpg", False),
        ("s3://fruits-data/raw/apple/../../private/1.jpg", False),
        ("s3://other-bucket/raw/apple/1.jpg", False),
        ("s3://fruits-data/1.jpg", False),
        ("/fruits-data/raw/apple/1.jpg", False),  # a local path, not the bucket
    ],
)
def test_s3_entries_are_compared_on_normalised_uris(spark, entry, inside):
    """The DAG's case: --allowed-prefix s3://<bucket>/raw/ (a string check: S3 is never contacted)."""
    args = (spark, ["s3://fruits-data/raw"], None, "s3://fruits-data/m.txt", [entry])
    if inside:
        input_confinement.confine_inputs(*args)
    else:
        with pytest.raises(featurize.InputError, match="1 of 1 entries are not under --allowed-prefix s3://fruits-data/raw/"):
            input_confinement.confine_inputs(*args)


def test_unusable_prefixes_are_rejected(spark):
    with pytest.raises(featurize.InputError, match="--allowed-prefix s3://b/raw/../x has a '..' segment"):
        input_confinement.confine_inputs(spark, ["s3://b/raw/../x"], manifest_entries=["s3://b/x/1.jpg"])
    with pytest.raises(featurize.InputError, match="--allowed-prefix is empty"):
        input_confinement.confine_inputs(spark, [" "], manifest_entries=["s3://b/x/1.jpg"])


def test_the_job_exits_2_with_one_line(spark, tmp_path, folders, capsys):
    manifest = write_manifest(tmp_path / "manifest.txt", [str(folders["raw-other"][0])])
    code = featurize.main(["--manifest", str(manifest), "--output", str(tmp_path / "out"),
                           "--allowed-prefix", str(tmp_path / "raw"), "--weights", str(WEIGHTS), "--alpha", "0.35"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"featurize: error: manifest {manifest}: 1 of 1 entries are not under") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_run_local_takes_the_flag_and_its_default_master_retries_tasks():
    args = run_local.build_parser().parse_args(
        ["--images", str(SAMPLE), "--output", "out", "--allowed-prefix", "s3://b/raw/", "--allowed-prefix", str(SAMPLE)]
    )
    assert args.allowed_prefix == ["s3://b/raw/", str(SAMPLE)]
    assert args.master == "local[2,4]"
    assert featurize.build_parser().parse_args(["--images", "x", "--output", "o"]).allowed_prefix is None
