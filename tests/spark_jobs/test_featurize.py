"""featurize job on real images with local Spark: counts reconcile, outputs, determinism."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from spark_jobs import featurize
from spark_jobs.cnn import model_acquisition
from spark_jobs.cnn.backbones import ModelConfigError, ModelSpec
from spark_jobs.contract.model_choices import has_image_extension
from spark_jobs.featurization import image_listing
from tests.support import LABELS, SAMPLE, WEIGHTS, copy_sample
from tests.support.images import (
    EXIF_FORMATS,
    NON_PHOTOS,
    ODD_PHOTO_NAMES,
    PHOTO_FORMATS,
    broken_images,
    encode_as,
    odd_photo_files,
    odd_valid_images,
    photo,
    with_orientation,
    write_files,
)

PHOTO = sorted((SAMPLE / "mango").iterdir())[0]
LARGE = photo(PHOTO)  # 640 x 480


def phone_folder() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """A phone's upload folder: (photos in every format, oriented ones, odd-but-valid ones; broken
    ones, a truncated file of each format)."""
    photos = {f"photo.{extension}": encode_as(LARGE, extension) for extension in PHOTO_FORMATS}
    photos.update({f"rotated.{extension}": with_orientation(LARGE, extension, 6) for extension in EXIF_FORMATS})
    photos.update({name: data for name, (data, _) in odd_photo_files(LARGE).items()})
    broken = {f"truncated.{extension}": photos[f"photo.{extension}"][: len(photos[f"photo.{extension}"]) // 2]
              for extension in PHOTO_FORMATS}
    return photos, broken


def job_args(**overrides) -> argparse.Namespace:
    argv = ["--output", str(overrides.pop("output")), "--alpha", "0.35", "--weights", str(WEIGHTS)]
    argv += ["--images", str(overrides.pop("images"))] if "images" in overrides else ["--manifest", str(overrides.pop("manifest"))]
    for name, value in overrides.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return featurize.build_parser().parse_args(argv)


@pytest.fixture(scope="module")
def mixed_run(spark, tmp_path_factory):
    """10 real photos per fruit + odd-but-valid modes + every broken class + a phone's folder of
    every format + files that are not photos, featurized once."""
    root = tmp_path_factory.mktemp("mixed")
    copy_sample(root, per_label=10)
    write_files(root / "odd", odd_valid_images(PHOTO))
    write_files(root / "broken", {name: data for name, (data, _) in broken_images(PHOTO).items()})
    phone_photos, phone_broken = phone_folder()
    write_files(root / "phone", {**phone_photos, **phone_broken, **NON_PHOTOS})
    (root / "notes.txt").write_text("not a photo: ignored, and listed in the report\n")
    out = tmp_path_factory.mktemp("mixed_out")
    summary = featurize.run(spark, job_args(images=root, output=out))
    return root, out, summary


def test_counts_reconcile_and_every_file_lands_once(spark, mixed_run):
    """files seen = featurized + quarantined + ignored; each file on disk is in exactly one of them."""
    root, out, summary = mixed_run
    features = spark.read.parquet(str(out / "features")).toPandas()
    quarantine = spark.read.parquet(str(out / "quarantine")).toPandas()
    broken = broken_images(PHOTO)
    phone_photos, phone_broken = phone_folder()
    good = 40 + len(odd_valid_images(PHOTO)) + len(phone_photos)
    assert summary["images_seen"] == good + len(broken) + len(phone_broken)
    assert summary["features_rows"] == len(features) == good
    assert summary["quarantined"] == len(quarantine) == len(broken) + len(phone_broken)
    assert summary["ignored"] == len(summary["ignored_files"]) == len(NON_PHOTOS) + 1
    assert summary["ignored_kinds"] == {".mov": 1, ".txt": 2, ".xmp": 1, "(no extension)": 1}
    on_disk = {f"file:{p}" for p in root.rglob("*") if p.is_file()}
    assert summary["files_seen"] == len(on_disk) == summary["features_rows"] + summary["quarantined"] + summary["ignored"]
    landed = [*features.path, *quarantine.path, *summary["ignored_files"]]
    assert len(landed) == len(set(landed)) and set(landed) == on_disk
    assert not any(has_image_extension(path) for path in summary["ignored_files"])
    # an Arrow batch of files at the default 32 MiB cap stays within featurize.ARROW_BATCH_BYTES
    assert summary["arrow_batch_rows"] == featurize.ARROW_BATCH_BYTES // summary["max_file_bytes"] == 16


def test_a_phone_folder_of_every_format_is_featurized(spark, mixed_run):
    """Every format, oriented and odd-but-valid file decodes, with its format and its displayed size."""
    _, out, _ = mixed_run
    rows = spark.read.parquet(str(out / "features")).toPandas()
    phone = rows[rows.label == "phone"].set_index(rows[rows.label == "phone"].path.str.rsplit("/", n=1).str[-1])
    assert set(phone.index) == set(phone_folder()[0]) and len(ODD_PHOTO_NAMES) == len(odd_photo_files(LARGE))
    formats = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "heic": "HEIF", "avif": "AVIF", "tiff": "TIFF",
               "bmp": "BMP", "gif": "GIF"}
    assert {name: phone.loc[f"photo.{ext}", "format"] for ext, name in formats.items()} == {
        name: name for name in formats.values()}
    assert phone.loc["webp_named.jpg", "format"] == "WEBP" and phone.loc["heic_named.png", "format"] == "HEIF"
    assert (phone.loc[[f"rotated.{e}" for e in EXIF_FORMATS], ["width", "height"]].to_numpy() == [480, 640]).all()
    assert (phone.loc[[f"photo.{e}" for e in PHOTO_FORMATS], ["width", "height"]].to_numpy() == [640, 480]).all()
    reference = np.asarray(phone.loc["photo.png", "features"])
    for name, row in phone.iterrows():
        vector = np.asarray(row.features)
        if not name.startswith(("rotated", "alpha")):  # the same pixels: features close to the PNG's
            assert vector @ reference / np.linalg.norm(vector) / np.linalg.norm(reference) >= 0.98, name


def test_quarantine_names_the_reason(spark, mixed_run):
    _, out, summary = mixed_run
    quarantine = spark.read.parquet(str(out / "quarantine")).toPandas().set_index("path")
    for name, (_, words) in broken_images(PHOTO).items():
        row = quarantine.loc[[p for p in quarantine.index if p.endswith("/broken/" + name)][0]]
        assert words in row.reason, (name, row.reason)
        assert row.label == "broken" and row.model == summary["model"]
    phone = quarantine[quarantine.label == "phone"]
    assert sorted(phone.index.str.rsplit("/", n=1).str[-1]) == sorted(phone_folder()[1])
    assert phone.reason.str.match("truncated image|corrupt image").all() and (phone.bytes > 0).all()
    assert summary["quarantine_reasons"]["decompression bomb"] == 2
    assert quarantine.loc[[p for p in quarantine.index if p.endswith("zero_bytes.jpg")][0]].bytes == 0


def test_feature_rows_carry_metadata(spark, mixed_run):
    _, out, summary = mixed_run
    features = spark.read.parquet(str(out / "features"))
    assert features.columns == featurize.FEATURE_COLUMNS
    rows = features.toPandas()
    assert set(rows.label) == set(LABELS) | {"odd", "phone"}
    assert all(len(f) == 1280 for f in rows.features) and summary["feature_dim"] == 1280
    assert dict(features.dtypes)["features"] == "array<float>"
    odd = rows[rows.label == "odd"].set_index(rows[rows.label == "odd"].path.str.rsplit("/", n=1).str[-1])
    assert odd.loc["cmyk.jpg", "mode"] == "CMYK" and odd.loc["palette_P.png", "mode"] == "P"
    assert (odd.width == 100).all() and (odd.height == 100).all()
    real = rows[~rows.label.isin(["odd", "phone"])]
    assert (real["mode"] == "RGB").all() and (real.bytes > 1000).all()
    assert rows.modification_time.notna().all()
    assert (rows.model == "mobilenet_v2-a0.35-224-avg:" + WEIGHTS.name + "#7c82c6ab16e2").all()


def test_features_are_identical_whatever_the_partitioning(spark, tmp_path):
    copy_sample(tmp_path / "imgs", per_label=8, offset=20)
    spec = ModelSpec(alpha=0.35, weights=str(WEIGHTS))
    artifact = model_acquisition.model_artifact(spec, "onnxruntime")
    model_acquisition.ship_to_executors(spark, artifact)
    files = image_listing.list_images(spark, images=str(tmp_path / "imgs")).files
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


def test_manifest_missing_entries_are_quarantined_and_non_photos_ignored(spark, tmp_path):
    photos = copy_sample(tmp_path / "imgs", per_label=2, offset=40)
    (tmp_path / "imgs/apple/IMG_0002.MOV").write_bytes(NON_PHOTOS["IMG_0001.MOV"])
    manifest = tmp_path / "manifest.txt"
    lines = ["# images of the day", *map(str, photos), str(photos[0]), "", str(tmp_path / "imgs/apple/gone.jpg"),
             str(tmp_path / "imgs/apple/readme.txt"), str(tmp_path / "imgs/apple/IMG_0002.MOV")]
    manifest.write_text("\n".join(lines) + "\n")
    summary = featurize.run(spark, job_args(manifest=manifest, output=tmp_path / "out"))
    quarantine = spark.read.parquet(str(tmp_path / "out" / "quarantine")).toPandas()
    assert (summary["files_seen"], summary["images_seen"], summary["features_rows"], summary["quarantined"],
            summary["ignored"]) == (11, 9, 8, 1, 2)
    assert dict(zip(quarantine.path.str.rsplit("/", n=1).str[-1], quarantine.reason, strict=True)) == {
        "gone.jpg": "listed in the manifest but not found"}
    assert summary["ignored_files"] == [f"file:{tmp_path}/imgs/apple/IMG_0002.MOV", f"file:{tmp_path}/imgs/apple/readme.txt"]
    assert summary["ignored_kinds"] == {".mov": 1, ".txt": 1} and set(quarantine.label) == {"apple"}


def test_files_over_the_byte_cap_are_quarantined_before_their_bytes_are_read(spark, tmp_path):
    """The cap is a filter binaryFile's reader applies to the file's length: with Spark's own
    binaryFile.maxLength at the cap, reading an over-cap file's content would fail the job."""
    copy_sample(tmp_path / "imgs", per_label=1, offset=80)
    big = encode_as(photo(PHOTO, (1600, 1200)), "bmp")  # 5.8 MB
    write_files(tmp_path / "imgs" / "phone", {"scan.bmp": big, "photo.webp": encode_as(LARGE, "webp")})
    cap = 1_000_000
    spark.conf.set("spark.sql.sources.binaryFile.maxLength", str(cap))
    try:
        summary = featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / "out", max_file_bytes=cap))
    finally:
        spark.conf.unset("spark.sql.sources.binaryFile.maxLength")
    quarantine = spark.read.parquet(str(tmp_path / "out" / "quarantine")).toPandas()
    assert (summary["images_seen"], summary["features_rows"], summary["quarantined"]) == (6, 5, 1)
    assert summary["max_file_bytes"] == cap and quarantine.bytes.tolist() == [len(big)]
    assert summary["arrow_batch_rows"] == summary["arrow_batch_size"] == 128  # 128 files of 1 MB: within the budget
    assert quarantine.reason.tolist() == [f"file too large: {len(big)} bytes, over the cap of {cap} (--max-file-bytes)"]
    assert summary["quarantine_reasons"] == {"file too large": 1}


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
    with pytest.raises(featurize.InputError, match="--max-file-bytes must be at least 1"):
        featurize.run(spark, job_args(images=tmp_path, output=tmp_path / "out", max_file_bytes=0))
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
