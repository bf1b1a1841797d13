"""Every image exactly once, whatever the schedule: a hypothesis rule-based state machine (issue 26 (f)).

Rules: uploads (new keys, overwrites, deletes, stamped late: inside intervals already run, broken
files), time passing, runs starting (scheduled, manual, refit_pca, full_refresh), a run's next task
(optionally failing at its n-th S3 call: SlowDown after the client's own retries), a failed task
retried, a run cleared (from find_new_images, same run id), two runs committing at once (the second's
whole commit lands between the first's read of the PCA pointer and its conditional write). Runs left
unfinished are failed runs nobody cleared.

The runs are tests.support.pipeline.PipelineRun: the functions the DAG's tasks call, in order, with a
fast stand-in for the Spark jobs, against in-process moto (S3 conditional writes enforced).

After every step: no image is held by two rows of the corpus, and every _COMMITTED.json names an
attempt the PCA pointer accepted. At the end of each schedule, a day passes and one clean daily run
runs; then: committed features ∪ quarantine = every image under raw/ (current ETag), each exactly
once (as a reader of the corpus sees it), the quarantine holds exactly the broken ones, and coverage
reports 0 pending, 0 in a failed attempt, no date pointer lagging.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fruits_emr import commits, coverage, ledger, pca_pointer
from fruits_emr.layout import COMMIT_FILE
from fruits_emr.settings import RunConfig
from tests.support import ACCOUNT, REGION
from tests.support.pipeline import (
    BROKEN,
    TASKS,
    PipelineRun,
    committed_view,
    corpus_paths,
    daily_run,
    raw_versions,
)

START = datetime(2024, 6, 1, 1, tzinfo=UTC)
SCHEDULES = int(os.environ.get("FRUITS_MACHINE_SCHEDULES", "100"))
STEPS = int(os.environ.get("FRUITS_MACHINE_STEPS", "20"))
STATS: Counter[str] = Counter()
picks = st.integers(0, 63)
kinds = st.sampled_from(["scheduled", "scheduled", "scheduled", "manual", "refit_pca", "full_refresh"])
faults = st.sampled_from([None, 1, 2, 4, 8, 13])
stops = st.sampled_from([None, None, None, *TASKS])


class InjectedFault(ClientError):
    pass


class S3Faults:
    """A botocore before-call handler: the n-th S3 call after `arm(n)` fails with 503 SlowDown (as
    when the client's own retries ran out), once."""

    def __init__(self) -> None:
        self.countdown: int | None = None

    def arm(self, calls: int | None) -> None:
        self.countdown = calls

    def __call__(self, model, **_):
        if self.countdown is None:
            return
        self.countdown -= 1
        if self.countdown <= 0:
            self.countdown = None
            STATS["S3 faults injected"] += 1
            raise InjectedFault({"Error": {"Code": "SlowDown", "Message": "injected by the test"},
                                 "ResponseMetadata": {"HTTPStatusCode": 503}}, model.name)


class Moto:
    """One in-process moto for all schedules (each gets its own bucket) and its two clients."""

    s3 = quiet = faults = None

    @classmethod
    def start(cls) -> None:
        import boto3

        cls.s3 = boto3.client("s3", region_name=REGION)
        cls.quiet = boto3.client("s3", region_name=REGION)  # no faults: the second of two commits at once
        cls.faults = S3Faults()
        cls.s3.meta.events.register("before-call.s3", cls.faults)


class ExactlyOnce(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        STATS["schedules"] += 1
        self.s3, self.quiet, self.faults = Moto.s3, Moto.quiet, Moto.faults
        self.bucket = f"fruits-machine-{STATS['schedules']}"
        self.config = RunConfig(bucket=self.bucket)
        self.s3.create_bucket(Bucket=self.bucket)
        self.now, self.serial = START, 0
        self.keys: dict[str, bool] = {}  # key under raw/ -> its current version is broken
        self.runs: list[PipelineRun] = []
        self.dates: set[str] = set()  # run dates a run selected for
        self.accepted: set[tuple[str, str]] = set()  # (run date, attempt) the PCA pointer has named
        self.committing = True  # a task that writes pointers ran since the last check

    # --- uploads and time ------------------------------------------------------------------------

    @initialize(days=st.integers(1, 3), per_day=st.integers(1, 3))
    def paused_days(self, days, per_day):
        """Uploads on the days before the first run (the DAG was paused, or not deployed yet)."""
        for day in range(days, 0, -1):
            for index in range(per_day):
                self.put(f"raw/apple/{self.serial}.jpg", index == 2, 24 * day)
    def put(self, key: str, broken: bool, age_hours: int) -> None:
        from moto.s3.models import s3_backends

        self.serial += 1
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=(BROKEN if broken else b"jpeg") + str(self.serial).encode())
        stamp = self.now - timedelta(hours=age_hours)  # age > 0: stamped before it became visible
        s3_backends[ACCOUNT]["aws"].buckets[self.bucket].keys[key].last_modified = stamp.replace(tzinfo=None)
        self.keys[key] = broken
        STATS["uploads"] += 1

    @rule(label=st.sampled_from(["apple", "lemon"]), count=st.integers(1, 4), broken=st.sampled_from([0, 0, 1, 2]),
          age=st.sampled_from([0, 0, 2, 30, 60]))
    def upload(self, label, count, broken, age):
        """count new images, the first `broken` of them broken, stamped `age` hours before now
        (an age over a day: stamped inside an interval a run may have listed already)."""
        for index in range(count):
            self.put(f"raw/{label}/{self.serial}.jpg", index < broken, age)

    @precondition(lambda self: self.keys)
    @rule(pick=picks, broken=st.booleans(), age=st.sampled_from([0, 5, 40]))
    def overwrite(self, pick, broken, age):
        self.put(sorted(self.keys)[pick % len(self.keys)], broken, age)
        STATS["overwrites"] += 1

    @precondition(lambda self: self.keys)
    @rule(pick=picks)
    def delete(self, pick):
        key = sorted(self.keys)[pick % len(self.keys)]
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        del self.keys[key]
        STATS["deletes"] += 1

    @rule(hours=st.sampled_from([6, 24, 24, 72]))
    def time_passes(self, hours):
        self.now += timedelta(hours=hours)

    # --- runs -------------------------------------------------------------------------------------

    def new_run(self, kind: str) -> PipelineRun:
        """A run of the last full day: scheduled or manual (their interval), with refit_pca or full_refresh."""
        day = datetime(self.now.year, self.now.month, self.now.day, tzinfo=UTC) - timedelta(days=1)
        config = RunConfig(bucket=self.bucket, refit_pca=kind == "refit_pca", full_refresh=kind == "full_refresh")
        run = PipelineRun(self.s3, config, f"{kind}__{self.serial}", day, day + timedelta(days=1), self.now)
        self.serial += 1
        self.runs.append(run)
        STATS["runs started"] += 1
        return run

    @precondition(lambda self: len(self.runs) < 4)
    @rule(hours=st.sampled_from([0, 24, 24]), kind=kinds, stop=stops, fault_at=faults)
    def a_run(self, hours, kind, stop, fault_at):
        """Time passes (a day: the next scheduled run), then a run to its end, or until its task `stop`
        fails at its fault_at-th S3 call (fault_at None: the run waits there, in flight)."""
        self.now += timedelta(hours=hours)
        self.run_on(self.new_run(kind), stop, fault_at)

    def run_on(self, run: PipelineRun, stop_at: str | None, fault_at: int | None) -> None:
        while run in self.runs and run.next_task != stop_at:
            if not self.step(run):
                return
        if run in self.runs and fault_at is not None:
            self.faults.arm(fault_at)
            try:
                self.step(run)
            finally:
                self.faults.arm(None)

    def step(self, run: PipelineRun) -> bool:
        """Run's next task; a failure leaves it to retry (or to nobody: a failed run never cleared)."""
        run.failed, self.committing = False, self.committing or run.next_task in ("find_new_images", "commit_outputs")
        try:
            task = run.step()
        except InjectedFault:
            STATS["tasks failed by an S3 fault"] += 1
            run.failed = True
            return False
        except pca_pointer.CommitConflict as conflict:
            assert "Clear this run from" in str(conflict), conflict  # the message says what to do
            STATS["commits refused (conflict)"] += 1
            run.failed = True
            return False
        STATS["tasks run"] += 1
        if run.selection:
            self.dates.add(run.selection.paths.run_date)
        if run.finished:
            self.runs.remove(run)
            STATS["runs with nothing to do" if run.skipped else "runs committed"] += 1
            if task == "commit_outputs" and run.plan.fit:
                STATS["fits committed"] += 1
        return True

    @precondition(lambda self: self.runs)
    @rule(pick=picks, stop_at=st.sampled_from([None, *TASKS[1:]]), fault_at=st.sampled_from([None, None, 1, 3]))
    def resume(self, pick, stop_at, fault_at):
        """A run in flight (waiting, or failed: Airflow's retry) goes on, up to stop_at or to its end."""
        self.run_on(self.runs[pick % len(self.runs)], stop_at, fault_at)

    @precondition(lambda self: any(run.failed for run in self.runs))
    @rule(pick=picks)
    def clear(self, pick):
        """Clear a failed run from find_new_images: same run id, a new attempt."""
        failed = [run for run in self.runs if run.failed]
        old = failed[pick % len(failed)]
        self.runs[self.runs.index(old)] = PipelineRun(self.s3, old.config, old.run_id, old.start, old.end, self.now)
        STATS["runs cleared"] += 1

    @precondition(lambda self: len(self.runs) < 3)
    @rule(first=kinds, second=kinds, hours_between=st.sampled_from([0, 24]))
    def two_runs_commit_at_once(self, first, second, hours_between):
        """Two runs (of one date, or of two: a day apart) reach commit_outputs; the second's whole commit
        lands between the first's read of the PCA pointer and its conditional write."""
        a = self.new_run(first)
        self.run_on(a, "commit_outputs", None)
        self.now += timedelta(hours=hours_between)
        b = self.new_run(second)
        self.run_on(b, "commit_outputs", None)
        if a not in self.runs or b not in self.runs or a.finished or b.finished:
            return  # one had nothing to do, or failed before its commit

        def second_commits_in_between(params, **_):
            if params.get("Key", "").endswith("_CURRENT.json") and not in_between:
                in_between.append(True)
                b.s3 = self.quiet
                try:
                    self.step(b)
                finally:
                    b.s3 = self.s3

        in_between: list[bool] = []
        self.s3.meta.events.register("before-parameter-build.s3.PutObject", second_commits_in_between)
        try:
            self.step(a)
        finally:
            self.s3.meta.events.unregister("before-parameter-build.s3.PutObject", second_commits_in_between)
        STATS["two commits at once" if in_between else "two commits at once, the first refused at once"] += 1

    # --- after every step -------------------------------------------------------------------------

    @invariant()
    def corpus_holds_each_image_once_and_date_pointers_follow(self):
        STATS["steps (each followed by this check)"] += 1  # hypothesis runs it after the setup and every rule
        if not self.committing:  # only find_new_images and commit_outputs write pointers
            return
        self.committing = False
        held = ledger.read_ledger(self.s3, self.config)
        assert not held.more, f"images held by two rows of the corpus: {held.more}"
        self.accepted |= set(held.attempts.items())
        for date in sorted(self.dates):
            record = commits.committed_output(self.s3, self.config, date)
            assert record is None or (date, record["output"]) in self.accepted, (
                f"run_date={date}/{COMMIT_FILE} names {record['output']}, which the PCA pointer never named")

    # --- at the end: one clean run, then the guarantee ----------------------------------------------

    def teardown(self):
        self.faults.arm(None)
        self.now += timedelta(days=2)
        config, bucket = self.config, self.bucket
        day = datetime(self.now.year, self.now.month, self.now.day, tzinfo=UTC) - timedelta(days=1)
        daily_run(self.s3, config, day, "settle").run()
        raw = raw_versions(self.s3, config)
        view = committed_view(self.s3, config)
        assert sorted((uri, etag) for uri, etag, _ in view) == sorted(raw.items())  # each exactly once
        assert sorted(uri for uri, _, kind in view if kind == "quarantine") == sorted(
            f"s3://{bucket}/{key}" for key, broken in self.keys.items() if broken)
        assert corpus_paths(self.s3, config) == sorted(
            f"s3://{bucket}/{key}" for key, broken in self.keys.items() if not broken)
        report = coverage.measure(self.s3, config)
        counts = report.counts
        assert (counts["pending"], counts["in_failed_attempt"], counts["new"], report.lagging) == (0, 0, 0, {})
        assert counts["committed"] + counts["quarantined"] == len(raw)
        STATS["images at the end"] += len(raw)


def test_every_image_exactly_once_whatever_the_schedule(record_property, monkeypatch):
    from moto import mock_aws

    STATS.clear()
    monkeypatch.setattr(pca_pointer, "BACKOFF_SECONDS", 0.0)  # the conflicts are the test's own, no waiting
    with mock_aws():
        Moto.start()
        run_state_machine_as_test(ExactlyOnce, settings=settings(
            max_examples=SCHEDULES, stateful_step_count=STEPS, deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    summary = dict(sorted(STATS.items()))
    record_property("machine", summary)
    print(f"\nreliability machine: {summary}")
    # the schedules exercised what the guarantee is about, not only quiet days
    for event in ("runs committed", "fits committed", "tasks failed by an S3 fault", "two commits at once",
                  "commits refused (conflict)", "runs cleared", "overwrites", "deletes"):
        assert STATS[event] > 0, f"no schedule had {event!r}: {summary}"


if __name__ == "__main__":  # python -m tests.fruits_emr.test_reliability_machine: more schedules, new seeds
    pytest.main([__file__, "-q", "-s"])
