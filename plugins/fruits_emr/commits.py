"""The pointers readers start from, and the commit_outputs task that moves them.

- `run_date=D/_COMMITTED.json` names the attempt folder whose outputs are the run date's: a run's
  outputs become visible at once when it is replaced (one PUT), and a failed attempt never shows.
- `_pca_models/_CURRENT.json` names the current PCA model version and, per run date, its reduced
  rows in that model's space (docs/pca.md).

Readers call `committed_output` (one run date) or `reduced_corpus` (the whole corpus in one space).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fruits_emr.layout import RunPaths, commit_key, pca_pointer_key
from fruits_emr.s3_objects import (
    RunOutputError,
    delete_keys,
    json_body,
    list_folders,
    list_objects,
    read_json_object,
)
from fruits_emr.settings import RunConfig, sse_arguments
from fruits_emr.task_records import PcaPlan, RunCommit, RunSummary
from spark_jobs.contract.run_files import FEATURES, PCA, PCA_CORPUS_PART
from spark_jobs.contract.s3_uri import key_prefix

log = logging.getLogger(__name__)


# --- reading -----------------------------------------------------------------------------------

def read_commit(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """A pointer's content, or None when nothing was committed there yet."""
    return read_json_object(s3, bucket, key)


def committed_output(s3: Any, config: RunConfig, run_date: str) -> dict[str, Any] | None:
    """For readers: the committed outputs of a run date ({'output': s3://..., 'features': ..., ...}), or None."""
    return read_commit(s3, config.bucket, commit_key(config, run_date))


def committed_features(s3: Any, config: RunConfig) -> dict[str, str]:
    """{run date: its committed features/ URI} for every committed run date (the corpus a refit reads)."""
    root = f"{key_prefix(config.output_prefix)}run_date="
    dates = {}
    for run_date in list_folders(s3, config.bucket, root):
        record = read_commit(s3, config.bucket, commit_key(config, run_date))
        if record is not None:
            dates[run_date] = record["features"]
    return dates


def read_pca_pointer(s3: Any, config: RunConfig) -> dict[str, Any] | None:
    """The current PCA model pointer, or None before the first fit was committed."""
    return read_commit(s3, config.bucket, pca_pointer_key(config))


def reduced_corpus(s3: Any, config: RunConfig) -> dict[str, Any] | None:
    """For readers: the current model version and, per run date, the URI of its reduced rows (Parquet:
    path, label, pca, pca_model), all in that one model's space; None before the first fit.

    Resolve it once and read those URIs: a later commit writes a new pointer and never changes them.
    """
    pointer = read_pca_pointer(s3, config)
    if pointer is None:
        return None
    return {"version": pointer["version"], "model": pointer["model"], "k": pointer.get("k"), "parts": pointer["corpus"]}


# --- the records -------------------------------------------------------------------------------

def commit_record(paths: RunPaths, summary: RunSummary, dag_run_id: str, committed_at: datetime) -> RunCommit:
    """The commit pointer's content: which attempt readers should read, and what it holds."""
    return RunCommit(
        run_date=paths.run_date,
        attempt=paths.attempt,
        output=paths.output_uri,
        features=f"{paths.output_uri}/{FEATURES}",
        pca=f"{paths.output_uri}/{PCA}",
        report=paths.report_uri,
        images=summary.images,
        features_rows=summary.features_rows,
        quarantined=summary.quarantined,
        k=summary.k,
        pca_model=summary.pca_model,
        dag_run_id=dag_run_id,
        committed_at=committed_at.isoformat(),
    )


def pca_pointer_record(
    previous: Mapping[str, Any] | None, plan: PcaPlan, paths: RunPaths, summary: RunSummary,
    dag_run_id: str, committed_at: datetime,
) -> dict[str, Any]:
    """The new pointer: the model version readers use and, per run date, its reduced rows in that space.

    A fit starts the corpus afresh from its re-projections; an apply adds or replaces its own date.
    """
    if plan.fit:
        # built from the plan, not from the paths the job reports
        corpus = {entry.run_date: f"{plan.model}/{PCA_CORPUS_PART.format(index=index)}"
                  for index, entry in enumerate(plan.corpus)}
        fitted = {"fitted_run_date": paths.run_date, "k": summary.k}
    else:
        corpus = dict(previous["corpus"]) if previous else {}
        fitted = {"fitted_run_date": previous.get("fitted_run_date"), "k": previous.get("k")} if previous else {}
    corpus[paths.run_date] = f"{paths.output_uri}/{PCA}"
    return {"version": plan.version, "number": plan.number, "model": plan.model, **fitted,
            "corpus": dict(sorted(corpus.items())), "updated_by": dag_run_id, "updated_at": committed_at.isoformat()}


# --- writing -----------------------------------------------------------------------------------

def commit_run(s3: Any, paths: RunPaths, record: RunCommit, sse: dict[str, str]) -> tuple[str | None, int]:
    """Make the attempt the run date's visible output: one PUT of the commit pointer (atomic), then
    delete the attempts nobody can see any more (failed ones, older commits). The previously
    committed attempt is kept, so a reader that resolved the old pointer a moment ago can finish.

    Returns (previously committed attempt or None, number of objects deleted).
    """
    previous = read_commit(s3, paths.bucket, paths.commit_key)
    previous_attempt = previous.get("attempt") if previous else None
    s3.put_object(Bucket=paths.bucket, Key=paths.commit_key, Body=json_body(dataclasses.asdict(record)),
                  ContentType="application/json", **sse)
    keep = {paths.attempt, previous_attempt}
    stale = [
        obj["Key"] for obj in list_objects(s3, paths.bucket, paths.attempts_key)
        if obj["Key"][len(paths.attempts_key):].split("/", 1)[0] not in keep
    ]
    delete_keys(s3, paths.bucket, stale, what=f"old attempts under s3://{paths.bucket}/{paths.attempts_key}")
    return previous_attempt, len(stale)


def commit_pca(s3: Any, config: RunConfig, record: dict[str, Any], expected_number: int | None, sse: dict[str, str]) -> None:
    """Replace the PCA pointer (one PUT), unless another run moved it since this run planned."""
    current = read_pca_pointer(s3, config)
    found = int(current["number"]) if current else None
    if found != expected_number:
        raise RunOutputError(
            f"The PCA model pointer s3://{config.bucket}/{pca_pointer_key(config)} is at version {found}, this run"
            f" planned on {expected_number}: another run changed it. Re-run this date to apply or refit again."
        )
    s3.put_object(Bucket=config.bucket, Key=pca_pointer_key(config), Body=json_body(record),
                  ContentType="application/json", **sse)


# --- the task ----------------------------------------------------------------------------------

def commit_outputs(
    s3: Any, config: RunConfig, paths: RunPaths, plan: PcaPlan, summary: RunSummary, run_id: str
) -> RunCommit:
    """Publish the validated attempt: replace the run date's commit pointer, drop attempts nobody reads,
    then point the PCA pointer at this run's reduced rows (and, after a fit, at the new version)."""
    now = datetime.now(UTC)
    record = commit_record(paths, summary, run_id, now)
    sse = sse_arguments(config)
    previous, deleted = commit_run(s3, paths, record, sse)
    pointer = read_pca_pointer(s3, config)
    commit_pca(s3, config, pca_pointer_record(pointer, plan, paths, summary, run_id, now), plan.pointer_number, sse)
    log.info("committed %s as run %s (%s); previous attempt %s, deleted %d objects of older attempts;"
             " PCA model %s is current", paths.output_uri, paths.run_date, paths.commit_uri, previous or "none",
             deleted, plan.version)
    return record

