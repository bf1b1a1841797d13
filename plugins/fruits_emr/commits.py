"""The pointers readers start from, and the commit_outputs task that moves them.

- `_pca_models/_CURRENT.json` (pca_pointer.py) names the current PCA model, the corpus in its space
  and which attempt of each run date makes it up: the commit point of a run.
- `run_date=D/_COMMITTED.json` names the attempt whose outputs are date D's (features, quarantine,
  report, and the reduced rows as they were committed).

commit_outputs, in this order (docs/reliability.md):
1. writes the run's commit record and quarantined URIs into its own attempt (commit.json);
2. replaces the PCA pointer with a conditional write (pca_pointer.update, RunChange): from then on the
   corpus holds the run's rows, and no other run can have replaced it in between;
3. replaces D's _COMMITTED.json with a conditional write, only while the PCA pointer names this attempt
   for D: a date pointer never names an attempt (or model space) the PCA pointer did not accept;
4. deletes the attempts of D that are older than this one and finished: this run's own earlier
   attempts, and the one two commits back. Never another run's uncommitted attempt, never the one
   this commit replaced (a reader that resolved the old pointer a moment ago can finish).
A retry of the task after any step finds what is done and does the rest.

Readers call `committed_output` (one run date) or `reduced_corpus` (the whole corpus in one space).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fruits_emr import ledger, pca_pointer, validation
from fruits_emr.layout import ATTEMPT_FILE, COMMIT_RECORD_FILE, RunPaths, commit_key, pca_pointer_key
from fruits_emr.s3_objects import (
    RunOutputError,
    current_etag,
    delete_keys,
    json_body,
    list_folders,
    list_objects,
    put_json_if_unchanged,
    read_json_object,
    read_json_with_etag,
)
from fruits_emr.settings import RunConfig, sse_arguments
from fruits_emr.task_records import PcaPlan, RunCommit, RunSelection, RunSummary
from spark_jobs.contract.run_files import FEATURES, PCA
from spark_jobs.contract.s3_uri import split_s3_uri

log = logging.getLogger(__name__)


# --- reading -----------------------------------------------------------------------------------

def read_commit(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """A pointer's content, or None when nothing was committed there yet."""
    return read_json_object(s3, bucket, key)


def committed_output(s3: Any, config: RunConfig, run_date: str) -> dict[str, Any] | None:
    """For readers: the committed outputs of a run date ({'output': s3://..., 'features': ..., ...}), or None."""
    return read_commit(s3, config.bucket, commit_key(config, run_date))


def read_pca_pointer(s3: Any, config: RunConfig) -> dict[str, Any] | None:
    """The current PCA model pointer, or None before the first fit was committed."""
    return read_commit(s3, config.bucket, pca_pointer_key(config))


def committed_features(s3: Any, config: RunConfig) -> dict[str, str]:
    """{run date: features/ URI} of the attempts the corpus is made of (the dates a refit reads)."""
    attempts = pca_pointer.committed_attempts(s3, config, read_pca_pointer(s3, config))
    return {date: f"{output}/{FEATURES}" for date, output in sorted(attempts.items())}


def reduced_corpus(s3: Any, config: RunConfig) -> dict[str, Any] | None:
    """For readers: the current model version and, per run date, the URI of its reduced rows (Parquet:
    path, label, pca, pca_model), all in that one model's space, and per run date the rows (image URIs)
    to leave out (`retired`: deleted or replaced images); None before the first fit.

    Resolve it once and read those URIs: a later commit writes a new pointer and never changes them.
    """
    pointer = read_pca_pointer(s3, config)
    if pointer is None:
        return None
    return {"version": pointer["version"], "model": pointer["model"], "k": pointer.get("k"), "parts": pointer["corpus"],
            "retired": {date: sorted(rows) for date, rows in pca_pointer.retired_rows(pointer).items()}}


def ensure_uncommitted(s3: Any, config: RunConfig, paths: RunPaths) -> None:
    """RunOutputError when the attempt is already committed: readers read it, so no step may write it
    again (a task cleared without find_new_images would reuse its folder)."""
    pointer = read_pca_pointer(s3, config)
    record = committed_output(s3, config, paths.run_date)
    if pca_pointer.committed_attempts(s3, config, pointer).get(paths.run_date) == paths.output_uri or (
            record or {}).get("attempt") == paths.attempt:
        raise RunOutputError(f"{paths.output_uri} is committed (readers read it): its outputs are never written"
                             " again. Clear the run from find_new_images to process the date in a new attempt.")


# --- the records -------------------------------------------------------------------------------

def commit_record(paths: RunPaths, summary: RunSummary, dag_run_id: str, committed_at: datetime,
                  from_earlier_intervals: int = 0) -> RunCommit:
    """The commit pointer's content: which attempt readers should read, and what it holds."""
    return RunCommit(
        run_date=paths.run_date,
        attempt=paths.attempt,
        output=paths.output_uri,
        features=f"{paths.output_uri}/{FEATURES}",
        pca=f"{paths.output_uri}/{PCA}",
        report=paths.report_uri,
        files=summary.files,
        images=summary.images,
        features_rows=summary.features_rows,
        quarantined=summary.quarantined,
        ignored=summary.ignored,
        k=summary.k,
        pca_model=summary.pca_model,
        dag_run_id=dag_run_id,
        committed_at=committed_at.isoformat(),
        from_earlier_intervals=from_earlier_intervals,
    )


def read_attempt_file(s3: Any, paths: RunPaths) -> dict[str, Any]:
    """What find_new_images recorded about the attempt (attempt.json; {} for an attempt made before it)."""
    return read_json_object(s3, paths.bucket, paths.attempt_file_key) or {}


# --- the date pointer --------------------------------------------------------------------------

def write_date_pointer(s3: Any, config: RunConfig, paths: RunPaths, record: Mapping[str, Any],
                       sse: dict[str, str]) -> tuple[bool, str | None, str | None]:
    """Point run_date=D/_COMMITTED.json at the attempt, with a conditional write, while the PCA pointer
    names this attempt for D (otherwise a later commit of D came first and writes its own).

    Returns (whether it names this attempt now, the attempt it replaced, the one that one had replaced)."""
    for _ in range(pca_pointer.WRITE_TRIES):
        current, etag = read_json_with_etag(s3, paths.bucket, paths.commit_key)
        if current and current.get("attempt") == paths.attempt:  # an earlier try of the task wrote it
            return True, current.get("previous_attempt"), None
        named = pca_pointer.committed_attempts(s3, config, read_pca_pointer(s3, config)).get(paths.run_date)
        if named != paths.output_uri:
            log.info("run_date %s: the PCA pointer names %s now, not this attempt: its commit writes the date's"
                     " _COMMITTED.json", paths.run_date, named)
            return False, None, None
        previous = current.get("attempt") if current else None
        body = {**record, "previous_attempt": previous}
        if put_json_if_unchanged(s3, paths.bucket, paths.commit_key, body, etag, sse):
            return True, previous, (current or {}).get("previous_attempt")
    raise pca_pointer.PointerBusy(f"{paths.commit_uri} changed under each of {pca_pointer.WRITE_TRIES} conditional"
                                  " writes; the task's retry will try again.")


def repair_date_pointers(s3: Any, config: RunConfig, attempts: Mapping[str, str],
                         lagging: Mapping[str, str | None]) -> list[str]:
    """Write _COMMITTED.json of the dates whose commit stopped after the PCA pointer named their attempt
    (coverage.lagging_dates), from that attempt's commit.json. Returns the dates written."""
    repaired = []
    for date in sorted(lagging):
        bucket, key = split_s3_uri(f"{attempts[date]}/{COMMIT_RECORD_FILE}")
        saved = read_json_object(s3, bucket, key)
        if saved is None or "record" not in saved:
            log.warning("run_date %s lags the PCA pointer and %s has no commit record: re-run the date", date, key)
            continue
        if write_date_pointer(s3, config, RunPaths(**saved["paths"]), saved["record"], sse_arguments(config))[0]:
            repaired.append(date)
    if repaired:
        log.info("wrote the _COMMITTED.json of run dates %s: a commit had stopped after the PCA pointer", repaired)
    return repaired


# --- cleaning up -------------------------------------------------------------------------------

def delete_finished_attempts(s3: Any, paths: RunPaths, run_id: str, keep: set[str], two_back: str | None) -> int:
    """Delete the attempts of the date older than this one that are finished: this run's own earlier
    attempts (attempt.json names its run) and `two_back`; keep `keep`. Returns objects deleted."""
    stale: list[str] = []
    for attempt in list_folders(s3, paths.bucket, paths.attempts_key):
        if attempt >= paths.attempt or attempt in keep:
            continue
        owner = read_json_object(s3, paths.bucket, f"{paths.attempts_key}{attempt}/{ATTEMPT_FILE}") or {}
        if attempt == two_back or (run_id and owner.get("dag_run_id") == run_id):
            stale += [obj["Key"] for obj in list_objects(s3, paths.bucket, f"{paths.attempts_key}{attempt}/")]
    delete_keys(s3, paths.bucket, stale, what=f"old attempts under s3://{paths.bucket}/{paths.attempts_key}")
    return len(stale)


# --- the task ----------------------------------------------------------------------------------

def commit_outputs(
    s3: Any, config: RunConfig, run: RunSelection, plan: PcaPlan, summary: RunSummary, run_id: str
) -> RunCommit:
    """Publish the validated attempt (the order of the module's doc): its commit record, the PCA pointer,
    the date pointer, then the finished older attempts of the date. Raises CommitConflict (a user error:
    the message says what to clear) when another run's commit cannot be merged with this one."""
    paths, sse, now = run.paths, sse_arguments(config), datetime.now(UTC)
    record = dataclasses.asdict(commit_record(paths, summary, run_id, now, run.from_earlier_intervals))
    quarantined = validation.quarantine_paths(s3, paths.output_uri)
    s3.put_object(Bucket=paths.bucket, Key=paths.commit_record_key, ContentType="application/json", **sse,
                  Body=json_body({"record": record, "paths": dataclasses.asdict(paths),
                                  "quarantined_images": sorted(quarantined)}))
    selected = read_attempt_file(s3, paths)
    change = pca_pointer.RunChange(
        run_date=paths.run_date, output=paths.output_uri, plan=plan,
        seen=dict(selected.get("seen") or ({paths.run_date: run.replaces} if run.replaces else {})),
        own=ledger.attempt_versions(s3, paths.output_uri), retire=dict(selected.get("retire") or {}),
        versions_of=lambda output: ledger.attempt_versions(s3, output),
        etag_now=lambda uri: current_etag(s3, *split_s3_uri(uri)), k=summary.k, run_id=run_id, now=now.isoformat())
    pca_pointer.update(s3, config, change, sse, what=f"commit of {paths.output_uri}")
    _, previous, two_back = write_date_pointer(s3, config, paths, record, sse)
    deleted = delete_finished_attempts(s3, paths, run_id, {paths.attempt, previous or ""}, two_back)
    log.info("committed %s as run %s (%s): %d images, %d from earlier intervals; PCA model %s (%s) is current;"
             " retired rows %s; replaced attempt %s, deleted %d objects of finished older attempts",
             paths.output_uri, paths.run_date, paths.commit_uri, summary.images, run.from_earlier_intervals,
             plan.version, "fitted" if plan.fit else "applied", change.resolved or "none", previous or "none", deleted)
    return dataclasses.replace(commit_record(paths, summary, run_id, now, run.from_earlier_intervals),
                               previous_attempt=previous)


def retire_rows(s3: Any, config: RunConfig, retire: Mapping[str, Mapping[str, str]], seen: Mapping[str, str],
                run_id: str) -> int:
    """Leave rows out of the corpus without a new attempt (a run whose only news is deleted images):
    the rows of each date whose attempt is still the one the selection saw. Returns rows retired."""
    counted = {"rows": 0}

    def change(current: dict[str, Any] | None, attempts: dict[str, str]) -> dict[str, Any] | None:
        retired, counted["rows"] = pca_pointer.retired_rows(current), 0
        for date, rows in retire.items():
            fresh = {uri: etag for uri, etag in rows.items() if uri not in retired.get(date, {})}
            if fresh and attempts.get(date) == seen.get(date):
                retired = pca_pointer.with_retired(retired, date, fresh)
                counted["rows"] += len(fresh)
        if not counted["rows"] or current is None:
            return None
        return {**current, "committed": dict(sorted(attempts.items())), "retired": retired, "updated_by": run_id,
                "updated_at": datetime.now(UTC).isoformat()}

    pca_pointer.update(s3, config, change, sse_arguments(config), what="retiring deleted images")
    if counted["rows"]:
        log.info("retired %d rows of deleted or replaced images from the corpus", counted["rows"])
    return counted["rows"]
