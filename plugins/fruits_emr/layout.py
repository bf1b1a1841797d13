"""The run's S3 layout: attempt folders, the commit pointer and the PCA model pointer (paths and
the records written there), the run's LastModified window, which keys are files and which are photos.

Pure functions only: no AWS calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from fruits_emr.settings import RunConfig
from spark_jobs.image_files import has_image_extension
from spark_jobs.run_files import FEATURES, MANIFEST_FILE, PCA, PCA_CORPUS_PART, REPORT
from spark_jobs.s3_uri import key_prefix

ATTEMPTS_FOLDER = "_attempts"  # leading underscore: Spark/Hive readers of the prefix skip it
COMMIT_FILE = "_COMMITTED.json"


@dataclass(frozen=True)
class RunPaths:
    """S3 locations of one attempt at one run date.

    The jobs write into the attempt's own folder, which no reader looks at; the run's outputs
    become visible at once when commit_outputs replaces the partition's commit pointer (one PUT,
    atomic in S3). A failed attempt therefore never shows, and the last committed one stays.
    """

    bucket: str
    run_date: str
    attempt: str
    partition_key: str
    attempts_key: str
    attempt_key: str
    manifest_key: str
    report_key: str
    commit_key: str
    log_uri: str

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @property
    def output_uri(self) -> str:
        """Where this attempt's jobs write (the committed output once commit_outputs ran)."""
        return self.uri(self.attempt_key).rstrip("/")

    @property
    def manifest_uri(self) -> str:
        return self.uri(self.manifest_key)

    @property
    def report_uri(self) -> str:
        return self.uri(self.report_key)

    @property
    def commit_uri(self) -> str:
        return self.uri(self.commit_key)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def new_attempt_id(now: datetime) -> str:
    """A sortable, unique-per-run attempt folder name: UTC time to the microsecond."""
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def partition_key(config: RunConfig, run_date: str) -> str:
    return f"{key_prefix(config.output_prefix)}run_date={run_date}/"


def commit_key(config: RunConfig, run_date: str) -> str:
    """Key of a run date's commit pointer, the one object readers start from."""
    return f"{partition_key(config, run_date)}{COMMIT_FILE}"


def run_paths(config: RunConfig, run_date: str, attempt: str) -> RunPaths:
    if not re.fullmatch(r"[0-9A-Za-z_-]+", attempt):
        raise ValueError(f"attempt id {attempt!r} is not a plain folder name")
    partition = partition_key(config, run_date)
    attempts = f"{partition}{ATTEMPTS_FOLDER}/"
    attempt_key = f"{attempts}{attempt}/"
    return RunPaths(
        bucket=config.bucket,
        run_date=run_date,
        attempt=attempt,
        partition_key=partition,
        attempts_key=attempts,
        attempt_key=attempt_key,
        manifest_key=f"{attempt_key}{MANIFEST_FILE}",
        report_key=f"{attempt_key}{REPORT}",
        commit_key=commit_key(config, run_date),
        log_uri=f"s3://{config.bucket}/{key_prefix(config.logs_prefix)}",
    )


def commit_record(paths: RunPaths, summary: Mapping[str, Any], dag_run_id: str, committed_at: datetime) -> dict[str, Any]:
    """The commit pointer's content: which attempt readers should read, and what it holds."""
    return {
        "run_date": paths.run_date,
        "attempt": paths.attempt,
        "output": paths.output_uri,
        "features": f"{paths.output_uri}/{FEATURES}",
        "pca": f"{paths.output_uri}/{PCA}",
        "report": paths.report_uri,
        "files": summary.get("files"),
        "images": summary.get("images"),
        "features_rows": summary.get("features_rows"),
        "quarantined": summary.get("quarantined"),
        "ignored": summary.get("ignored"),
        "k": summary.get("k"),
        "pca_model": summary.get("pca_model"),
        "dag_run_id": dag_run_id,
        "committed_at": committed_at.isoformat(),
    }


# --- PCA model versions ----------------------------------------------------------------------

PCA_MODELS_FOLDER = "_pca_models"  # inside the output prefix; the underscore hides it from partition discovery
PCA_POINTER_FILE = "_CURRENT.json"


def pca_models_key(config: RunConfig) -> str:
    return f"{key_prefix(config.output_prefix)}{PCA_MODELS_FOLDER}/"


def pca_pointer_key(config: RunConfig) -> str:
    """Key of the pointer to the current model version and the reduced corpus in its space."""
    return f"{pca_models_key(config)}{PCA_POINTER_FILE}"


def pca_version_uri(config: RunConfig, number: int) -> str:
    """The folder of model version `number` (v0001, v0002, ...): written once, by the run that fits it."""
    return f"s3://{config.bucket}/{pca_models_key(config)}v{number:04d}"


def pca_pointer_record(
    previous: Mapping[str, Any] | None, plan: Mapping[str, Any], paths: RunPaths, summary: Mapping[str, Any],
    dag_run_id: str, committed_at: datetime,
) -> dict[str, Any]:
    """The new pointer: the model version readers use and, per run date, its reduced rows in that space.

    A fit starts the corpus afresh from its re-projections; an apply adds or replaces its own date.
    """
    if plan["fit"]:
        # built from the plan, not from the paths the job reports
        corpus = {date: f"{plan['model']}/{PCA_CORPUS_PART.format(index=index)}"
                  for index, (date, _) in enumerate(plan["corpus"])}
        fitted = {"fitted_run_date": paths.run_date, "k": summary.get("k")}
    else:
        corpus = dict(previous["corpus"]) if previous else {}
        fitted = {"fitted_run_date": previous.get("fitted_run_date"), "k": previous.get("k")} if previous else {}
    corpus[paths.run_date] = f"{paths.output_uri}/{PCA}"
    return {"version": plan["version"], "number": plan["number"], "model": plan["model"], **fitted,
            "corpus": dict(sorted(corpus.items())), "updated_by": dag_run_id, "updated_at": committed_at.isoformat()}


# --- new images ------------------------------------------------------------------------------

def run_window(
    data_interval_start: datetime | None, data_interval_end: datetime | None, run_after: datetime
) -> tuple[datetime, datetime, str]:
    """The [start, end) window of image LastModified times and its run date (the start's day).

    Runs without a data interval (e.g. triggered with no logical date) take the last full UTC day.
    """
    if data_interval_start is None or data_interval_end is None or data_interval_end <= data_interval_start:
        end = datetime(run_after.year, run_after.month, run_after.day, tzinfo=run_after.tzinfo)
        data_interval_start, data_interval_end = end - timedelta(days=1), end
    return data_interval_start, data_interval_end, data_interval_start.date().isoformat()


def in_window(last_modified: datetime, start: datetime, end: datetime) -> bool:
    return start <= last_modified < end


def is_image_key(key: str) -> bool:
    """A photo by name (spark_jobs.image_files, the featurize job's own list): featurized or quarantined."""
    return has_image_extension(key)


def is_file_key(key: str) -> bool:
    """Any object but a folder marker ("raw/apple/"): a run's manifest lists every new file under the
    raw prefix, and featurize ignores (and lists) those that are not photos by name."""
    return not key.endswith("/")
