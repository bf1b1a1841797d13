"""featurize job on real images with local Spark: counts reconcile, outputs, determinism."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from spark_jobs import featurize
from spark_jobs.cnn import model_acquisition
from spark_jobs.cnn.backbones import ModelConfigError, ModelSpec
from spark_jobs.featurization import image_listing
from tests.support import LABELS, SAMPLE, WEIGHTS, copy_sample
from tests.support.images import broken_images, odd_valid_images, write_files

PHOTO = sorted((SAMPLE / "mango").iterdir())[0]


def job_args(**overrides) -> argparse.Namespace:
    argv = ["--output", str(overrides.pop("output")), "--alpha", "0.35", "--weights", str(WEIGHTS)]
    argv += ["--images", str(overrides.pop("images"))] if "images" in overrides else ["--manifest", str(overrides.pop("manifest"))]
    for name, value in overrides.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return featurize.build_parser().parse_args(argv)


@pytest.fixture(scope="module")
def mixed_run(spark, tmp_path_factory):
    """10 real photos per fruit + odd-but-valid modes + every broken class, featurized once."""
    root = tmp_path_factory.mktemp("mixed")
    copy_sample(root, per_label=10)
    write_files(root / "odd", odd_valid_images(PHOTO))
    write_files(root / "broken", {name: data for name, (data, _) in broken_images(PHOTO).items()})
    (root / "notes.txt").write_text("not an image extension: never listed\n")
    out = tmp_path_factory.mktemp("mixed_out")
    summary = featurize.run(spark, job_args(images=root, output=out))
    return root, out, summary


def test_counts_reconcile_and_every_file_lands_once(spark, mixed_run):
    root, out, summary = mixed_run
    features = spark.read.parquet(str(out / "features")).toPandas()
    quarantine = spark.read.parquet(str(out / "quarantine")).toPandas()
    broken = broken_images(PHOTO)
    assert summary["images_seen"] == 40 + len(odd_valid_images(PHOTO)) + len(broken)
    assert summary["features_rows"] == len(features) == 40 + len(odd_valid_images(PHOTO))
    assert summary["quarantined"] == len(quarantine) == len(broken)
    assert summary["images_seen"] == summary["features_rows"] + summary["quarantined"]
    every_path = set(features.path) | set(quarantine.path)
    on_disk = {f"file:{p}" for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    assert every_path == on_disk and not set(features.path) & set(quarantine.path)


def test_quarantine_names_the_reason(spark, mixed_run):
    _, out, summary = mixed_run
    quarantine = spark.read.parquet(str(out / "quarantine")).toPandas().set_index("path")
    for name, (_, words) in broken_images(PHOTO).items():
        row = quarantine.loc[[p for p in quarantine.index if p.endswith("/" + name)][0]]
        assert words in row.reason, (name, row.reason)
        assert row.label == "broken" and row.model == summary["model"]
    assert summary["quarantine_reasons"]["decompression bomb"] == 2
    assert quarantine.loc[[p for p in quarantine.index if p.endswith("zero_bytes.jpg")][0]].bytes == 0


def test_feature_rows_carry_metadata(spark, mixed_run):
    _, out, summary = mixed_run
    features = spark.read.parquet(str(out / "features"))
    assert features.columns == featurize.FEATURE_COLUMNS
    rows = features.toPandas()
    assert set(rows.label) == set(LABELS) | {"odd"}
    assert all(len(f) == 1280 for f in rows.features) and summary["feature_dim"] == 1280
    assert dict(features.dtypes)["features"] == "array<float>"
    odd = rows[rows.label == "odd"].set_index(rows[rows.label == "odd"].path.str.rsplit("/", n=1).str[-1])
    assert odd.loc["cmyk.jpg", "mode"] == "CMYK" and odd.loc["palette_P.png", "mode"] == "P"
    assert (odd.width == 100).all() and (odd.height == 100).all()
    real = rows[rows.label != "odd"]
    assert (real["mode"] == "RGB").all() and (real.bytes > 1000).all()
    assert rows.modification_time.notna().all()
    assert (rows.model == "mobilenet_v2-a0.35-224-avg:" + WEIGHTS.name + "#7c82c6ab16e2").all()


def test_features_are_identical_whatever_the_partitioning(spark, tmp_path):
    copy_sample(tmp_path / "imgs", per_label=8, offset=20)
    spec = ModelSpec(alpha=0.35, weights=str(WEIGHTS))
    artifact = model_acquisition.model_artifact(spec, "onnxruntime")
    model_acquisition.ship_to_executors(spark, artifact)
    files, _ = image_listing.list_images(spark, images=str(tmp_path / "imgs"))
    by_partitions = {}
    for partitions in (1, 3, 7):
        rows = featurize.featurize_files(files, spec, "onnxruntime", artifact.name, 5, partitions, 10**8).toPandas()
        by_partitions[partitions] = rows.set_index("path").sort_index()
    one = np.stack(by_partitions[1].features)
    for partitions in (3, 7):
        assert list(by_partitions[partitions].index) == list(by_partitions[1].index)
        np.testing.assert_array_equal(np.stack(by_partitions[partitions].features), one)


@pytest.mark.parametrize("weights", ["bundled", "random"])
def test_features_are_not_degenerate(spark, tmp_path, weights):
    copy_sample(tmp_path / "imgs", per_label=10, offset=30)
    chosen = str(WEIGHTS) if weights == "bundled" else "random"
    featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / "out", weights=chosen))
    rows = spark.read.parquet(str(tmp_path / "out" / "features")).toPandas()
    matrix = np.stack(rows.features).astype(np.float64)
    spread = matrix.std(axis=0)
    assert np.isfinite(matrix).all()
    assert np.median(spread) > 1e-2, np.median(spread)  # plain random init gives ~1e-11
    assert (spread > 1e-4).mean() > 0.5
    # Different fruits get different features: mean within-label distance < between labels.
    labels = rows.label.to_numpy()
    centroids = np.stack([matrix[labels == label].mean(0) for label in LABELS])
    within = np.mean([np.linalg.norm(matrix[labels == label] - centroids[i], axis=1).mean() for i, label in enumerate(LABELS)])
    between = np.mean([np.linalg.norm(a - b) for i, a in enumerate(centroids) for b in centroids[i + 1 :]])
    assert between > 0.5 * within, (between, within)


def test_manifest_missing_and_unsupported_entries_are_quarantined(spark, tmp_path):
    photos = copy_sample(tmp_path / "imgs", per_label=2, offset=40)
    manifest = tmp_path / "manifest.txt"
    lines = ["# images of the day", *map(str, photos), str(photos[0]), "", str(tmp_path / "imgs/apple/gone.jpg"), str(tmp_path / "imgs/apple/readme.txt")]
    manifest.write_text("\n".join(lines) + "\n")
    summary = featurize.run(spark, job_args(manifest=manifest, output=tmp_path / "out"))
    quarantine = spark.read.parquet(str(tmp_path / "out" / "quarantine")).toPandas()
    assert summary["images_seen"] == 10 and summary["features_rows"] == 8 and summary["quarantined"] == 2
    reasons = dict(zip(quarantine.path.str.rsplit("/", n=1).str[-1], quarantine.reason, strict=True))
    assert reasons == {
        "gone.jpg": "listed in the manifest but not found",
        "readme.txt": "unsupported file extension (expected jpg, jpeg, png)",
    }
    assert set(quarantine.label) == {"apple"}


def test_rerun_overwrites_instead_of_duplicating(spark, tmp_path):
    copy_sample(tmp_path / "imgs", per_label=2, offset=50)
    args = job_args(images=tmp_path / "imgs", output=tmp_path / "out")
    featurize.run(spark, args)
    featurize.run(spark, args)
    assert spark.read.parquet(str(tmp_path / "out" / "features")).count() == 8


def test_tensorflow_and_onnx_engines_agree(spark, tmp_path):
    copy_sample(tmp_path / "imgs", per_label=3, offset=60)
    results = {}
    for engine in ("tensorflow", "onnxruntime"):
        featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / engine, engine=engine))
        rows = spark.read.parquet(str(tmp_path / engine / "features")).toPandas().set_index("path").sort_index()
        results[engine] = np.stack(rows.features)
    diff = np.abs(results["onnxruntime"] - results["tensorflow"]).max() / np.abs(results["tensorflow"]).max()
    assert diff <= 1e-4, diff


def test_user_errors_are_clear(spark, tmp_path):
    with pytest.raises(featurize.InputError, match="image root .*nowhere does not exist"):
        featurize.run(spark, job_args(images=tmp_path / "nowhere", output=tmp_path / "out"))
    with pytest.raises(featurize.InputError, match="manifest .* does not exist"):
        featurize.run(spark, job_args(manifest=tmp_path / "none.txt", output=tmp_path / "out"))
    with pytest.raises(featurize.InputError, match="weights file .* does not exist"):
        featurize.run(spark, job_args(images=tmp_path, output=tmp_path / "out", weights=tmp_path / "w.h5"))
    copy_sample(tmp_path / "imgs", per_label=1)
    with pytest.raises(ModelConfigError, match="bundled models/ file is mobilenet_v2 alpha 0.35"):
        featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / "out", alpha=1.0))
    with pytest.raises(ModelConfigError, match="--alpha applies to mobilenet_v2 only"):
        featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / "out", model="vgg16", alpha=0.5))


def test_exported_model_matches_the_in_job_export(spark, tmp_path):
    """--model-artifact: features equal those of the in-job export; sidecar gives the model id."""
    from model_export.export_model import main as export_main

    copy_sample(tmp_path / "imgs", per_label=2, offset=70)
    artifact = tmp_path / "staged" / "model.onnx"
    assert export_main(["--output", str(artifact), "--alpha", "0.35", "--weights", str(WEIGHTS)]) == 0
    for run in ("a", "b"):  # twice: the second run re-ships the same content under the same name
        exported = featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / run, model_artifact=artifact))
    inline = featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / "inline"))
    assert exported["model"] == inline["model"] and exported["weights"] == WEIGHTS.name
    a = spark.read.parquet(str(tmp_path / "b" / "features")).toPandas().set_index("path").sort_index()
    b = spark.read.parquet(str(tmp_path / "inline" / "features")).toPandas().set_index("path").sort_index()
    np.testing.assert_allclose(np.stack(a.features), np.stack(b.features), rtol=0, atol=1e-5)
    with pytest.raises(featurize.InputError, match="use it with --engine onnxruntime"):
        featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / "c", model_artifact=artifact, engine="tensorflow"))
    with pytest.raises(featurize.InputError, match="model artifact .*nothing.onnx does not exist"):
        featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / "c", model_artifact=tmp_path / "nothing.onnx"))


def test_the_featurize_pass_settings_end_with_the_run(spark, tmp_path):
    """Adaptive execution is off for the featurize pass only: run_local's pca shares the session."""
    copy_sample(tmp_path / "imgs", per_label=1)
    before = spark.conf.get("spark.sql.adaptive.enabled")
    summary = featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / "out"))
    assert summary["features_rows"] == summary["images_seen"] > 0
    assert spark.conf.get("spark.sql.adaptive.enabled") == before == "true"
    assert spark.conf.get("spark.sql.files.minPartitionNum", None) is None
