"""The run's S3 layout: a run date's partition, its attempt folders and commit pointer, and the
PCA model versions with their pointer.

Pure functions only: no AWS calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from fruits_emr.settings import RunConfig
from spark_jobs.contract.run_files import MANIFEST_FILE, REPORT
from spark_jobs.contract.s3_uri import key_prefix

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
