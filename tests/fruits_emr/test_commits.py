"""The commit protocol (plugins/fruits_emr/commits.py, pca_pointer.py) against moto: the manifest in
its attempt folder, the PCA pointer written first and the date pointer after it (both S3 conditional
writes), a commit stopped between the two and its retry, which attempts a commit deletes, a committed
attempt never written again, the reduced corpus a reader gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from fruits_emr import commits, coverage, layout, pca_pointer, s3_objects, selection, settings, validation
from fruits_emr.s3_objects import RunOutputError
from tests.support import ACCOUNT
from tests.support.pipeline import PipelineRun, committed_view, corpus_paths, daily_run, raw_versions

BUCKET = "fruits-data"
DAY = datetime(2024, 6, 1, tzinfo=UTC)


def config(**overrides) -> settings.RunConfig:
    return settings.RunConfig(**{"bucket": BUCKET, **overrides})


def keys(s3, prefix: str = "") -> list[str]:
    return sorted(obj["Key"] for obj in s3_objects.list_objects(s3, BUCKET, prefix))


def attempts(s3, run_date: str) -> list[str]:
    return sorted(s3_objects.list_folders(s3, BUCKET, f"features/run_date={run_date}/_attempts/"))


def upload(s3, names: list[str], when: datetime, body: bytes = b"jpeg") -> None:
    from moto.s3.models import s3_backends

    for name in names:
        s3.put_object(Bucket=BUCKET, Key=f"raw/{name}", Body=body + name.encode())
        s3_backends[ACCOUNT]["aws"].buckets[BUCKET].keys[f"raw/{name}"].last_modified = when.replace(tzinfo=None)


class FailOnce:
    """A botocore before-call handler that fails the first PutObject of a key ending so (a crash there)."""

    def __init__(self, suffix: str):
        self.suffix, self.fired = suffix, False

    def __call__(self, params, model, **_):
        if model.name == "PutObject" and not self.fired and params.get("Key", "").endswith(self.suffix):
            self.fired = True
            raise ClientError({"Error": {"Code": "InternalError", "Message": "the test's crash"}}, model.name)


def test_raw_files_lists_every_file_but_folder_markers(s3):
    s3.create_bucket(Bucket=BUCKET)
    stamped = {
        "raw/apple/before.jpg": DAY - timedelta(seconds=1),
        "raw/lemon/late.PNG": DAY + timedelta(hours=23, minutes=59),
        "raw/lemon/notes.txt": DAY + timedelta(hours=1),
        "raw/apple/": DAY + timedelta(hours=2),  # a console-made folder marker: no file
        "features/apple/x.jpg": DAY + timedelta(hours=1),
    }
    for key in stamped:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    from moto.s3.models import s3_backends

    for key, stamp in stamped.items():
        s3_backends[ACCOUNT]["aws"].buckets[BUCKET].keys[key].last_modified = stamp.replace(tzinfo=None)
    found = coverage.raw_files(s3, config())
    # every file, photos and the rest (featurize ignores and lists notes.txt); no folder marker
    assert sorted(found) == [f"s3://{BUCKET}/raw/apple/before.jpg", f"s3://{BUCKET}/raw/lemon/late.PNG",
                             f"s3://{BUCKET}/raw/lemon/notes.txt"]
    assert {raw.size for raw in found.values()} == {1}
    assert found[f"s3://{BUCKET}/raw/lemon/late.PNG"].stamped == stamped["raw/lemon/late.PNG"]


def test_manifest_goes_to_the_attempt_folder_encrypted(s3):
    s3.create_bucket(Bucket=BUCKET)
    paths = layout.run_paths(config(), "2024-06-01", "20240602T010000000000Z")
    images = ["s3://fruits-data/raw/a/1.jpg", "s3://fruits-data/raw/b/2.jpg"]
    selection.write_manifest(s3, paths, images, settings.sse_arguments(config()))
    assert keys(s3, "features/") == ["features/run_date=2024-06-01/_attempts/20240602T010000000000Z/manifest.txt"]
    assert s3.head_object(Bucket=BUCKET, Key=paths.manifest_key)["ServerSideEncryption"] == "AES256"
    assert selection.read_manifest(s3, paths.bucket, paths.manifest_key) == images
    assert validation.attempt_entries(s3, paths) == {"manifest.txt"}
    with pytest.raises(RunOutputError, match="report.json is missing"):
        validation.read_report(s3, paths)


def test_commit_writes_the_pca_pointer_first_and_a_stopped_commit_is_finished(s3):
    """Readers see nothing before the commit; a commit stopped after the PCA pointer and before the date
    pointer leaves the date's readers on what they saw, names the attempt in the corpus (never a date
    pointer ahead of the PCA pointer), and the task's retry, or the next run, writes the date pointer."""
    s3.create_bucket(Bucket=BUCKET)
    kms = config(kms_key_id="alias/fruits-outputs")
    upload(s3, ["apple/1.jpg", "lemon/2.jpg"], DAY + timedelta(hours=3))
    run = daily_run(s3, kms, DAY).run(until=lambda task: task == "commit_outputs")
    assert commits.committed_output(s3, kms, "2024-06-01") is None and commits.read_pca_pointer(s3, kms) is None

    crash = FailOnce(layout.COMMIT_FILE)
    s3.meta.events.register("before-parameter-build.s3.PutObject", crash)
    try:
        with pytest.raises(ClientError, match="the test's crash"):
            run.step()
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.PutObject", crash)
    pointer = commits.read_pca_pointer(s3, kms)
    assert pointer["committed"] == {"2024-06-01": run.selection.paths.output_uri}
    assert commits.committed_output(s3, kms, "2024-06-01") is None  # behind, never ahead
    assert coverage.measure(s3, kms).lagging == {"2024-06-01": None}

    run.step()  # Airflow's retry of commit_outputs
    record = commits.committed_output(s3, kms, "2024-06-01")
    assert (record["attempt"], record["previous_attempt"], record["images"]) == (run.selection.paths.attempt, None, 2)
    assert commits.read_pca_pointer(s3, kms) == pointer  # the retry found the PCA pointer written
    written_by_airflow = (layout.COMMIT_FILE, layout.PCA_POINTER_FILE, layout.IMAGES_FILE, layout.ATTEMPT_FILE,
                          layout.COMMIT_RECORD_FILE, "manifest.txt")
    for key in [key for key in keys(s3, "features/") if key.endswith(written_by_airflow)]:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", "alias/fruits-outputs"), key

    # a commit abandoned at the same point (no retry): the next run's find_new_images writes it
    upload(s3, ["mango/3.jpg"], DAY + timedelta(days=1, hours=3))
    second = daily_run(s3, kms, DAY + timedelta(days=1)).run(until=lambda task: task == "commit_outputs")
    crash = FailOnce(layout.COMMIT_FILE)
    s3.meta.events.register("before-parameter-build.s3.PutObject", crash)
    try:
        with pytest.raises(ClientError):
            second.step()
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.PutObject", crash)
    assert daily_run(s3, kms, DAY + timedelta(days=2)).run().skipped  # nothing new, but it repairs
    assert commits.committed_output(s3, kms, "2024-06-02")["attempt"] == second.selection.paths.attempt
    assert coverage.measure(s3, kms).lagging == {}


def test_a_commit_deletes_only_finished_older_attempts(s3):
    """Re-runs of a date: the commit keeps the attempt it replaced (readers mid-way) and another run's
    attempt still in flight, deletes this run's own earlier attempt and the one two commits back."""
    s3.create_bucket(Bucket=BUCKET)
    cfg = config()
    upload(s3, ["apple/1.jpg", "apple/2.jpg"], DAY + timedelta(hours=3))
    first = daily_run(s3, cfg, DAY, "scheduled__1").run()
    in_flight = daily_run(s3, cfg, DAY, "manual__other").run(until=lambda task: task == "run_steps")
    failed = daily_run(s3, cfg, DAY, "manual__2").run(until=lambda task: task == "validate_outputs")  # then cleared
    second = daily_run(s3, cfg, DAY, "manual__2").run()  # same run id: its earlier attempt is finished
    assert set(attempts(s3, "2024-06-01")) == {first.selection.paths.attempt, in_flight.selection.paths.attempt,
                                                second.selection.paths.attempt}  # `failed`'s is gone
    assert commits.committed_output(s3, cfg, "2024-06-01")["previous_attempt"] == first.selection.paths.attempt
    third = daily_run(s3, cfg, DAY, "manual__3").run()
    assert set(attempts(s3, "2024-06-01")) == {in_flight.selection.paths.attempt, second.selection.paths.attempt,
                                                third.selection.paths.attempt}  # two back: `first` is gone
    assert failed.selection.paths.attempt not in attempts(s3, "2024-06-01")
    # the attempt in flight was selected before two commits of its date: its commit is refused
    in_flight.run(until=lambda task: task == "commit_outputs")
    with pytest.raises(pca_pointer.CommitConflict, match="run_date 2024-06-01 was committed by run 'manual__3'"
                       r".*Clear this run from find_new_images"):
        in_flight.step()
    assert sorted(committed_view(s3, cfg)) == sorted((uri, etag, "features") for uri, etag in raw_versions(s3, cfg).items())


def test_a_committed_attempt_is_never_written_again(s3):
    s3.create_bucket(Bucket=BUCKET)
    upload(s3, ["apple/1.jpg"], DAY + timedelta(hours=3))
    run = daily_run(s3, config(), DAY).run()
    again = PipelineRun(s3, config(), run.run_id, run.start, run.end, run.run_after, selection=run.selection,
                        plan=run.plan, done=["find_new_images", "plan_pca"])  # run_steps cleared alone
    with pytest.raises(RunOutputError, match="is committed .readers read it.*Clear the run from find_new_images"):
        again.step()


def test_the_corpus_a_refit_reads_and_the_reduced_corpus(s3):
    """A refit fits on the dates the PCA pointer's corpus is made of (after a full refresh: that one
    date, not the older ones it holds again); readers get the corpus in one space, each image once."""
    s3.create_bucket(Bucket=BUCKET)
    cfg = config()
    upload(s3, ["apple/1.jpg", "lemon/2.jpg"], DAY + timedelta(hours=3))
    day1 = daily_run(s3, cfg, DAY).run()
    upload(s3, ["mango/3.jpg"], DAY + timedelta(days=1, hours=3))
    daily_run(s3, cfg, DAY + timedelta(days=1)).run()
    assert commits.committed_features(s3, cfg) == {
        "2024-06-01": f"{day1.selection.paths.output_uri}/features",
        "2024-06-02": f"{commits.committed_output(s3, cfg, '2024-06-02')['output']}/features"}
    full = daily_run(s3, config(full_refresh=True), DAY + timedelta(days=2), "manual__full").run()
    assert full.selection.images == 3 and full.plan.corpus == ()
    assert set(commits.committed_features(s3, cfg)) == {"2024-06-03"}  # the older dates are history now
    refit = daily_run(s3, config(refit_pca=True), DAY + timedelta(days=2), "manual__refit").run()
    assert refit.plan.corpus == () and refit.plan.version == "v0003"  # nothing else in the corpus
    corpus = commits.reduced_corpus(s3, cfg)
    assert (corpus["version"], list(corpus["parts"]), corpus["retired"]) == ("v0003", ["2024-06-03"], {})
    assert corpus_paths(s3, cfg) == sorted(raw_versions(s3, cfg))
    assert validation.pca_model_written(s3, corpus["model"])
