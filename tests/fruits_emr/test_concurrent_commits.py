"""Two commits at once (issue 26 (c)): two threads, each with its own S3 client, run commit_outputs
against the moto server; both read the PCA pointer before either writes it (a barrier on the first
PUT of _CURRENT.json), so the conditional writes really race.

- two applies of different dates merge: both dates are in the corpus, no entry lost;
- two fits: at most one wins, the loser's message says what to clear, and doing so commits it;
- two attempts of one date: one wins, the loser's message says what to clear, and doing so commits it.
After each: every image under raw/ is in the corpus exactly once, and coverage reports 0 pending.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from fruits_emr import coverage, pca_pointer
from fruits_emr.layout import pca_pointer_key
from fruits_emr.settings import RunConfig
from tests.support import ACCOUNT, REGION
from tests.support.moto import certificate_of
from tests.support.pipeline import PipelineRun, committed_view, daily_run, raw_versions

BUCKET = "fruits-race"
DAY = datetime(2024, 6, 1, tzinfo=UTC)
CONFIG = RunConfig(bucket=BUCKET)


class PointerRace:
    """Hold each client's first PUT of the PCA pointer until both clients reached theirs; count the PUTs."""

    def __init__(self) -> None:
        self.barrier, self.puts, self.lock = threading.Barrier(2, timeout=60), 0, threading.Lock()

    def client(self, endpoint: str):
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, verify=certificate_of(endpoint))
        first = {"held": False}

        def before_put(params, **_):
            if params.get("Key") != pca_pointer_key(CONFIG):
                return
            with self.lock:
                self.puts += 1
            if not first["held"]:
                first["held"] = True
                self.barrier.wait()

        s3.meta.events.register("before-parameter-build.s3.PutObject", before_put)
        return s3


def upload(s3, day: datetime, names: list[str]) -> None:
    from moto.s3.models import s3_backends

    for name in names:
        key = f"raw/apple/{name}.jpg"
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"jpeg" + name.encode())
        s3_backends[ACCOUNT]["aws"].buckets[BUCKET].keys[key].last_modified = (day + timedelta(hours=1)).replace(tzinfo=None)


def until_commit(s3, day: datetime, run_id: str, **config) -> PipelineRun:
    end = day + timedelta(days=1)
    run = PipelineRun(s3, RunConfig(bucket=BUCKET, **config), run_id, day, end, end + timedelta(minutes=5))
    return run.run(until=lambda task: task == "commit_outputs")


def commit_both(*runs: PipelineRun) -> list[BaseException | None]:
    """commit_outputs of each run in its own thread, at once; the exception each raised (None: committed)."""
    def commit(run: PipelineRun) -> BaseException | None:
        try:
            run.step()
        except Exception as exc:  # noqa: BLE001 - the loser's error is the result under test
            return exc
        return None

    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(commit, runs))


def exactly_once(s3) -> None:
    view = committed_view(s3, CONFIG)
    assert sorted((uri, etag) for uri, etag, _ in view) == sorted(raw_versions(s3, CONFIG).items())
    counts = coverage.measure(s3, CONFIG).counts
    assert (counts["pending"], counts["in_failed_attempt"], counts["new"]) == (0, 0, 0), counts


@pytest.fixture
def first_day(moto, s3):
    """The bucket with day 1 committed (the first fit, v0001)."""
    s3.create_bucket(Bucket=BUCKET)
    upload(s3, DAY, ["a", "b"])
    assert daily_run(s3, CONFIG, DAY).run().commit is not None
    return moto


def test_two_applies_of_two_dates_merge(first_day, s3):
    race = PointerRace()
    upload(s3, DAY + timedelta(days=1), ["c"])
    upload(s3, DAY + timedelta(days=2), ["d"])
    # both select before either commits: the day-3 run takes day 2's image too (no committed run holds
    # it yet): the commits merge, and the image is kept once in the corpus
    second = until_commit(race.client(first_day), DAY + timedelta(days=1), "scheduled__2")
    third = until_commit(race.client(first_day), DAY + timedelta(days=2), "scheduled__3")
    assert (second.selection.images, third.selection.images) == (1, 2)  # c; c and d
    assert commit_both(second, third) == [None, None]
    assert race.puts == 3  # one of the two first writes lost the race and was merged at its second try
    pointer, _ = pca_pointer.read_pointer(s3, CONFIG)
    assert sorted(pointer["committed"]) == ["2024-06-01", "2024-06-02", "2024-06-03"]
    assert pointer["version"] == "v0001"
    exactly_once(s3)


def test_two_fits_at_once_one_wins_the_loser_says_what_to_clear(first_day, s3):
    race = PointerRace()
    upload(s3, DAY + timedelta(days=1), ["c"])
    upload(s3, DAY + timedelta(days=2), ["d"])
    runs = [until_commit(race.client(first_day), DAY + timedelta(days=offset), f"refit__{offset}", refit_pca=True)
            for offset in (1, 2)]
    assert [run.plan.version for run in runs] == ["v0002", "v0002"]  # both planned the same next version
    assert runs[0].plan.model != runs[1].plan.model  # each in its own attempt's model folder
    errors = commit_both(*runs)
    assert sum(error is None for error in errors) == 1
    loser, error = next((run, error) for run, error in zip(runs, errors, strict=True) if error is not None)
    winner = next(run for run in runs if run is not loser)
    assert isinstance(error, pca_pointer.CommitConflict)
    assert "only one fit can be the current model" in str(error) and "Clear this run from plan_pca" in str(error)
    pointer, _ = pca_pointer.read_pointer(s3, CONFIG)
    assert (pointer["version"], pointer["model"]) == ("v0002", winner.plan.model)
    assert loser.selection.paths.run_date not in pointer["committed"]
    # what the message says: clear the loser from plan_pca; a refit_pca run fits the next version on the
    # whole corpus (the winner's date too) and commits
    loser.done = ["find_new_images"]
    loser.run()
    assert (loser.plan.fit, loser.plan.version, loser.plan.pointer_number) == (True, "v0003", 2)
    assert loser.commit is not None and winner.selection.paths.run_date in loser.plan.planned_on
    exactly_once(s3)


def test_two_attempts_of_one_date_one_wins_the_loser_says_what_to_clear(first_day, s3):
    race = PointerRace()
    upload(s3, DAY + timedelta(days=1), ["c", "d"])
    day = DAY + timedelta(days=1)
    runs = [until_commit(race.client(first_day), day, run_id) for run_id in ("scheduled__2", "manual__2")]
    errors = commit_both(*runs)
    assert sum(error is None for error in errors) == 1
    loser = next(run for run, error in zip(runs, errors, strict=True) if error is not None)
    error = errors[runs.index(loser)]
    assert isinstance(error, pca_pointer.CommitConflict)
    assert "Clear this run from find_new_images" in str(error)
    exactly_once(s3)  # the winner holds the date's images once
    # what the message says: clear from find_new_images; the new attempt takes the date's images again
    cleared = until_commit(s3, day, loser.run_id)
    assert cleared.selection.taken == {"committed for this date before (a re-run replaces it)": 2}
    cleared.run()
    assert cleared.commit is not None and cleared.commit.previous_attempt is not None
    exactly_once(s3)
