"""The commit pointers (plugins/fruits_emr/commits.py), the manifest and the run window
(plugins/fruits_emr/selection.py) against moto."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from fruits_emr import commits, layout, pca_plan, s3_objects, selection, settings, validation
from fruits_emr.s3_objects import RunOutputError
from tests.support import ACCOUNT, run_summary


def config(**overrides) -> settings.RunConfig:
    return settings.RunConfig(**{"bucket": "fruits-data", **overrides})


def keys(s3, bucket: str, prefix: str = "") -> list[str]:
    return sorted(obj["Key"] for obj in s3_objects.list_objects(s3, bucket, prefix))


def attempt(config_: settings.RunConfig, attempt_id: str, run_date: str = "2024-06-01") -> layout.RunPaths:
    return layout.run_paths(config_, run_date, attempt_id)


def test_new_images_by_last_modified_window(s3):
    from moto.s3.models import s3_backends

    s3.create_bucket(Bucket="fruits-data")
    day = datetime(2024, 6, 1, tzinfo=UTC)
    stamped = {
        "raw/apple/before.jpg": day - timedelta(seconds=1),
        "raw/apple/first.jpg": day,
        "raw/lemon/late.PNG": day + timedelta(hours=23, minutes=59),
        "raw/lemon/next.jpeg": day + timedelta(days=1),
        "raw/lemon/notes.txt": day + timedelta(hours=1),
        "features/apple/x.jpg": day + timedelta(hours=1),
    }
    for key in stamped:
        s3.put_object(Bucket="fruits-data", Key=key, Body=b"x")
    backend_keys = s3_backends[ACCOUNT]["aws"].buckets["fruits-data"].keys
    for key, stamp in stamped.items():
        backend_keys[key].last_modified = stamp

    found = sorted(selection.new_image_versions(s3, config(), day, day + timedelta(days=1)))
    assert found == ["s3://fruits-data/raw/apple/first.jpg", "s3://fruits-data/raw/lemon/late.PNG"]
    everything = sorted(selection.new_image_versions(s3, config(full_refresh=True), day, day + timedelta(days=1)))
    assert len(everything) == 4 and "s3://fruits-data/raw/lemon/notes.txt" not in everything


def test_manifest_goes_to_the_attempt_folder_encrypted(s3):
    s3.create_bucket(Bucket="fruits-data")
    paths = attempt(config(), "20240602T010000000000Z")
    images = ["s3://fruits-data/raw/a/1.jpg", "s3://fruits-data/raw/b/2.jpg"]
    selection.write_manifest(s3, paths, images, settings.sse_arguments(config()))
    assert keys(s3, "fruits-data", "features/") == [
        "features/run_date=2024-06-01/_attempts/20240602T010000000000Z/manifest.txt"]
    assert s3.head_object(Bucket="fruits-data", Key=paths.manifest_key)["ServerSideEncryption"] == "AES256"
    assert selection.read_manifest(s3, paths.bucket, paths.manifest_key) == images
    assert validation.attempt_entries(s3, paths) == {"manifest.txt"}
    with pytest.raises(RunOutputError, match="report.json is missing"):
        validation.read_report(s3, paths)


def test_commit_switches_readers_at_once_and_drops_unread_attempts(s3):
    """Readers follow _COMMITTED.json: nothing before the first commit, then exactly the committed
    attempt; a failed attempt never shows and is deleted by the next commit, the previous commit is kept."""
    s3.create_bucket(Bucket="fruits-data")
    kms = config(kms_key_id="alias/fruits-outputs")
    sse = settings.sse_arguments(kms)
    first, failed, second = (attempt(kms, a) for a in ("20240602T01Z", "20240602T02Z", "20240602T03Z"))
    other_day = attempt(kms, "20240603T01Z", "2024-06-02")
    for paths in (first, failed, second, other_day):
        s3.put_object(Bucket="fruits-data", Key=paths.attempt_key + "features/part-0.parquet", Body=b"rows", **sse)
    assert commits.committed_output(s3, kms, "2024-06-01") is None  # written, not committed: invisible

    now = datetime(2024, 6, 2, 4, tzinfo=UTC)
    record = commits.commit_record(first, run_summary(), "r1", now)
    assert commits.commit_run(s3, first, record, sse) == (None, 2)  # the failed and the later attempts' files
    seen = commits.committed_output(s3, kms, "2024-06-01")
    assert seen == dataclasses.asdict(record) and seen["features"] == first.output_uri + "/features"
    head = s3.head_object(Bucket="fruits-data", Key=first.commit_key)
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", "alias/fruits-outputs")

    for paths in (failed, second):  # a failed re-run, then a good one
        s3.put_object(Bucket="fruits-data", Key=paths.attempt_key + "features/part-0.parquet", Body=b"rows", **sse)
    assert commits.committed_output(s3, kms, "2024-06-01")["attempt"] == "20240602T01Z"
    record = commits.commit_record(second, run_summary(), "r3", now)
    assert commits.commit_run(s3, second, record, sse) == ("20240602T01Z", 1)
    assert commits.committed_output(s3, kms, "2024-06-01")["attempt"] == "20240602T03Z"
    assert keys(s3, "fruits-data", "features/") == [
        "features/run_date=2024-06-01/_COMMITTED.json",
        "features/run_date=2024-06-01/_attempts/20240602T01Z/features/part-0.parquet",  # kept for readers mid-way
        "features/run_date=2024-06-01/_attempts/20240602T03Z/features/part-0.parquet",
        "features/run_date=2024-06-02/_attempts/20240603T01Z/features/part-0.parquet",  # other dates untouched
    ]


def test_pca_pointer_commit_and_the_reduced_corpus(s3):
    """The corpus a refit reads is every committed date; the PCA pointer is replaced in one PUT, never
    over a version another run committed in between."""
    s3.create_bucket(Bucket="fruits-data")
    cfg, sse = config(), settings.sse_arguments(config())
    now = datetime(2024, 6, 3, tzinfo=UTC)
    day1, day2 = attempt(cfg, "20240602T01Z", "2024-06-01"), attempt(cfg, "20240603T01Z", "2024-06-02")
    commits.commit_run(s3, day1, commits.commit_record(day1, run_summary(), "r1", now), sse)
    s3.put_object(Bucket="fruits-data", Key=day2.attempt_key + "features/part-0.parquet", Body=b"rows")  # not committed
    assert commits.committed_features(s3, cfg) == {"2024-06-01": day1.output_uri + "/features"}
    assert commits.read_pca_pointer(s3, cfg) is None and commits.reduced_corpus(s3, cfg) is None

    fit = pca_plan.plan_pca(cfg, None, commits.committed_features(s3, cfg), "2024-06-01")
    commits.commit_pca(s3, cfg, commits.pca_pointer_record(None, fit, day1, run_summary(k=3), "r1", now), None, sse)
    assert commits.reduced_corpus(s3, cfg) == {
        "version": "v0001", "model": "s3://fruits-data/features/_pca_models/v0001", "k": 3,
        "parts": {"2024-06-01": day1.output_uri + "/pca"}}
    assert s3.head_object(Bucket="fruits-data", Key="features/_pca_models/_CURRENT.json")["ServerSideEncryption"] == "AES256"
    with pytest.raises(RunOutputError, match="is at version 1, this run planned on None: another run changed it"):
        commits.commit_pca(s3, cfg, commits.pca_pointer_record(None, fit, day1, run_summary(k=3), "r9", now), None, sse)
    assert not validation.pca_model_written(s3, fit.model)
    s3.put_object(Bucket="fruits-data", Key="features/_pca_models/v0001/pca_model.json", Body=b"{}")
    assert validation.pca_model_written(s3, fit.model)
