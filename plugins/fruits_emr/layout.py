"""The run's S3 layout: a run date's partition, its attempt folders and commit pointer, and the
PCA model versions with their pointer.

Pure functions only: no AWS calls.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from fruits_emr.settings import RunConfig
from spark_jobs.contract.run_files import MANIFEST_FILE, REPORT
from spark_jobs.contract.s3_uri import key_prefix

ATTEMPTS_FOLDER = "_attempts"  # leading underscore: Spark/Hive readers of the prefix skip it
COMMIT_FILE = "_COMMITTED.json"
# in each attempt folder, beside the manifest (written by find_new_images):
IMAGES_FILE = "images.json"  # {image URI: ETag}: the image versions the attempt processes
ATTEMPT_FILE = "attempt.json"  # who made the attempt (dag_run_id), what it saw committed, what it retires
# written by commit_outputs before it moves any pointer: the date's commit record (what _COMMITTED.json
# says) and the URIs the attempt quarantined, so any later run can repair a date pointer left behind
COMMIT_RECORD_FILE = "commit.json"


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
    def images_key(self) -> str:
        return f"{self.attempt_key}{IMAGES_FILE}"

    @property
    def attempt_file_key(self) -> str:
        return f"{self.attempt_key}{ATTEMPT_FILE}"

    @property
    def commit_record_key(self) -> str:
        return f"{self.attempt_key}{COMMIT_RECORD_FILE}"

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
    """A sortable, unique attempt folder name: UTC time to the microsecond, then random hex, so two
    attempts started in the same microsecond (two runs at once) never share a folder."""
    return f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(3)}"


def attempt_of(output_uri: str) -> str:
    """The attempt id at the end of an attempt folder's URI."""
    return output_uri.rstrip("/").rsplit("/", 1)[-1]


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


def pca_fit_uri(config: RunConfig, attempt: str) -> str:
    """The folder a fit of this attempt writes its model into, whatever version it is planned to be: no
    two attempts share one, so two fits at once never mix their files; the pointer names the winner's."""
    return f"s3://{config.bucket}/{pca_models_key(config)}{ATTEMPTS_FOLDER}/{attempt}"
