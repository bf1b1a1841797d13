"""Fixtures of the UI tests: one moto S3 server holding real images, and real Airflow processes on
Postgres with the DAG in local compute mode, shared by the module's tests."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from tests.support import LABELS, SAMPLE
from tests.support.moto import running_moto_server

from .stack import Airflow, AirflowApi, require_chromium, running_airflow, wait_for_dag

DAG_ID = "fruits_features"
BUCKET = "fruits-ui"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
WEIGHTS = "models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
# Parse-time defaults of the DAG (FRUITS_<PARAM>), so the form opens with values that run fast here.
FRUITS_ENV = {
    "FRUITS_COMPUTE_MODE": "local",
    "FRUITS_BUCKET": BUCKET,
    "FRUITS_WEIGHTS": WEIGHTS,
    "FRUITS_ALPHA": "0.35",
    "FRUITS_IMAGE_SIZE": "96",
    "FRUITS_LOCAL_MASTER": "local[2,4]",
    "FRUITS_LOCAL_DRIVER_MEMORY": "1g",
    "FRUITS_POKE_SECONDS": "1",
    "FRUITS_RETRY_DELAY_MINUTES": "0.05",
}


# Playwright's expect waits 5 s by default: under the whole suite's load (2 cores, 3 workers) the
# UI's page of a run took longer to render its labels (seen 2026-12-03, `nav.home` untranslated)
EXPECT_TIMEOUT_MS = 60_000


@dataclass
class UiStack:
    """The running stack, the S3 client of the test, and which raw images landed when."""

    airflow: Airflow
    api: AirflowApi
    s3: object
    yesterday: date
    landed: dict[str, list[str]] = field(default_factory=dict)  # "yesterday" / "before" / ... / "today" -> keys


def _set_last_modified(key: str, when: datetime) -> None:
    """Make an object look as if it landed at `when` (moto keeps LastModified as naive UTC)."""
    from moto.s3.models import s3_backends

    stored = s3_backends[ACCOUNT]["aws"].buckets[BUCKET].keys[key]
    stored.last_modified = when.astimezone(UTC).replace(tzinfo=None)


def _upload(s3, per_label: int, offset: int, landed_at: datetime | None) -> list[str]:
    keys = []
    for label in LABELS:
        for source in sorted((SAMPLE / label).iterdir())[offset: offset + per_label]:
            key = f"raw/{label}/{source.name}"
            s3.upload_file(str(source), BUCKET, key)
            if landed_at is not None:
                _set_last_modified(key, landed_at)
            keys.append(key)
    return sorted(keys)


def aws_env(endpoint: str) -> dict[str, str]:
    """The Airflow processes' AWS settings for a moto server: the aws_default connection and,
    for Spark's own S3 client (S3A, spark_jobs/s3a.py) in the local compute mode, its endpoint."""
    return {
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                                                 "extra": {"endpoint_url": endpoint, "region_name": REGION}}),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "FRUITS_S3_ENDPOINT": endpoint,
    }


@pytest.fixture(scope="module")
def ui_stack():
    """moto S3 with real images uploaded while the DAG is paused: 8 that landed yesterday (UTC), 4 the
    day before (its last second), 4 two days before, and 4 today; then Postgres and the Airflow
    processes. Everything stops when the module's tests end."""
    import boto3

    require_chromium()
    with running_moto_server() as endpoint:
        aws = aws_env(endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=BUCKET)
        today = datetime.now(UTC).date()
        yesterday = today - timedelta(days=1)
        noon = time(12, tzinfo=UTC)
        landed = {
            "yesterday": _upload(s3, 2, 0, datetime.combine(yesterday, noon)),
            "before": _upload(s3, 1, 2, datetime.combine(yesterday - timedelta(days=1), time(23, 59, 59, tzinfo=UTC))),
            "two days before": _upload(s3, 1, 4, datetime.combine(yesterday - timedelta(days=2), time(8, tzinfo=UTC))),
            "today": _upload(s3, 1, 3, None),
        }
        with running_airflow({**FRUITS_ENV, **aws}) as airflow:
            yield UiStack(airflow, wait_for_dag(airflow, DAG_ID), s3, yesterday, landed)


@pytest.fixture(scope="module")
def browser_context(ui_stack):
    """Debian's Chromium driven by Playwright (no browser download), headless, empty profile,
    logged in to the Airflow UI. `expect` waits up to EXPECT_TIMEOUT_MS for what it checks."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)

    profile = tempfile.mkdtemp(prefix="fruits-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=require_chromium(),
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
                viewport={"width": 1400, "height": 1000},
            )
            try:
                page = context.new_page()
                page.goto(ui_stack.airflow.url)
                page.locator("input[name=username]").fill(ui_stack.airflow.username)
                page.locator("input[name=password]").fill(ui_stack.airflow.password)
                page.locator("button[type=submit]").click()
                page.wait_for_url(lambda url: "/auth/login" not in url)
                page.close()
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where the screenshots go: a temp folder, or FRUITS_SCREENSHOTS=docs/img to refresh the
    ones docs/ui.md shows (a plain `make test` leaves the work tree clean)."""
    folder = Path(os.environ.get("FRUITS_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
