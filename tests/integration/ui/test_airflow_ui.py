"""End to end with real Airflow processes on Postgres: the scheduler's own run for a past data
interval, then a run triggered from the web UI's form in headless Chromium.

The DAG runs in local compute mode against a moto S3 server; the assertions are on what a reader
of the bucket sees (the run date's commit pointer and the committed attempt), not on how the
steps reach S3.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import UTC, datetime, time
from pathlib import PurePosixPath

import pytest

from fruits_emr import coverage
from fruits_emr.settings import RunConfig
from tests.support.coverage import committed_rows

from .conftest import BUCKET, DAG_ID

pytestmark = pytest.mark.ui

RUN_TIMEOUT = 900  # seconds: a safety net so a stuck run fails the test instead of hanging CI
NEW_VARIANCE = 0.8


def committed(s3, run_date: str) -> dict:
    body = s3.get_object(Bucket=BUCKET, Key=f"features/run_date={run_date}/_COMMITTED.json")["Body"].read()
    return json.loads(body)


def committed_images(s3, pointer: dict) -> tuple[list[str], list[str]]:
    """The committed attempt's manifest (S3 URIs) and the file names of its feature rows."""
    import pyarrow.parquet as pq

    attempt = pointer["output"].removeprefix(f"s3://{BUCKET}/")
    manifest = s3.get_object(Bucket=BUCKET, Key=f"{attempt}/manifest.txt")["Body"].read().decode().split()
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{attempt}/features/")["Contents"]
    names = []
    with tempfile.TemporaryDirectory() as folder:
        for obj in listing:
            if obj["Key"].endswith(".parquet"):
                local = f"{folder}/{len(names)}-{PurePosixPath(obj['Key']).name}"
                s3.download_file(BUCKET, obj["Key"], local)
                rows = pq.read_table(local).to_pylist()
                column = next((c for c in ("path", "uri", "image", "origin") if rows and c in rows[0]), None)
                names += [PurePosixPath(str(row[column])).name for row in rows] if column else []
    return sorted(manifest), sorted(names)


def finished(ui_stack, run_id: str) -> dict:
    run = ui_stack.api.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT)
    assert run["state"] == "success", f"run {run_id} ended {run['state']}: {run['tasks']}\n{ui_stack.airflow.logs()}"
    return run


def test_paused_days_then_the_schedulers_run_takes_every_image_once(ui_stack):
    """Three days of uploads while the DAG is paused (issue 26 (a)); unpausing it lets the scheduler
    create one run, for the last full day (catchup off): the run takes the 8 images of that day and
    the 8 of the two days before, which no committed run processed, not the 4 of today (stamped after
    its interval: the next run's); coverage then reports nothing pending."""
    api = ui_stack.api
    assert api.get(f"dags/{DAG_ID}")["is_paused"] is True
    api.patch(f"dags/{DAG_ID}", {"is_paused": False})

    run_id = api.wait_for(lambda: [r["dag_run_id"] for r in api.get(f"dags/{DAG_ID}/dagRuns", run_type="scheduled")
                                   ["dag_runs"]], RUN_TIMEOUT)[0]
    run = finished(ui_stack, run_id)

    start = datetime.combine(ui_stack.yesterday, time(0, tzinfo=UTC))
    assert (run["run_type"], datetime.fromisoformat(run["data_interval_start"])) == ("scheduled", start)
    pointer = committed(ui_stack.s3, ui_stack.yesterday.isoformat())
    assert pointer["dag_run_id"] == run_id
    manifest, featurized = committed_images(ui_stack.s3, pointer)
    landed = ui_stack.landed
    expected = sorted(landed["yesterday"] + landed["before"] + landed["two days before"])
    assert manifest == [f"s3://{BUCKET}/{key}" for key in expected]
    assert featurized == sorted(PurePosixPath(key).name for key in expected)
    assert (pointer["images"], pointer["features_rows"], pointer["quarantined"]) == (16, 16, 0)
    assert pointer["from_earlier_intervals"] == 8  # the paused days'
    assert committed_rows(ui_stack.s3, BUCKET) == sorted(f"s3://{BUCKET}/{key}" for key in expected)  # each once
    counts = coverage.measure(ui_stack.s3, RunConfig(bucket=BUCKET)).counts
    assert counts == {"committed": 16, "quarantined": 0, "in_failed_attempt": 0, "pending": 0, "new": 4}


def test_trigger_from_the_ui_form(ui_stack, browser_context, screenshots):
    """Log in, open the DAG, open Trigger: every Param shows its label and description and the form
    is valid with the defaults; change variance, trigger, and the run succeeds with that value."""
    from playwright.sync_api import expect

    params = ui_stack.api.get(f"dags/{DAG_ID}/details")["params"]
    page = browser_context.new_page()
    page.goto(f"{ui_stack.airflow.url}/dags/{DAG_ID}")
    page.get_by_test_id("trigger-dag-button").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Run Parameters")).to_be_visible()

    for name, spec in params.items():
        label = page.locator("label").filter(has_text=re.compile(rf"^\s*{re.escape(spec['schema']['title'])}\s*\*?\s*$"))
        row = dialog.get_by_role("group").filter(has=label)
        expect(row, f"Param {name}").to_have_count(1)
        expect(row, f"Param {name}").to_contain_text(spec["description"])
    submit = dialog.get_by_test_id("trigger-dag-submit")
    expect(submit).to_be_enabled()  # no Param needs a value the user did not choose

    variance = dialog.locator("input[name=element_variance]")
    variance.fill(str(NEW_VARIANCE))
    variance.blur()
    expect(submit).to_be_enabled()
    page.set_viewport_size({"width": 1400, "height": 1500})  # the dialog's title down to variance
    page.screenshot(path=str(screenshots / "trigger-form.png"))
    submit.click()

    api = ui_stack.api
    run_id = api.wait_for(lambda: [r["dag_run_id"] for r in api.get(f"dags/{DAG_ID}/dagRuns", run_type="manual")
                                   ["dag_runs"]], 60)[0]
    run = finished(ui_stack, run_id)
    assert run["conf"]["variance"] == NEW_VARIANCE

    page.goto(f"{ui_stack.airflow.url}/dags/{DAG_ID}/runs/{run_id}")
    expect(page.get_by_text("success").first).to_be_visible()
    page.screenshot(path=str(screenshots / "run-succeeded.png"))

    run_date = datetime.fromisoformat(run["data_interval_start"]).date().isoformat()
    pointer = committed(ui_stack.s3, run_date)
    assert pointer["dag_run_id"] == run_id
    report = json.loads(ui_stack.s3.get_object(Bucket=BUCKET, Key=pointer["report"].removeprefix(f"s3://{BUCKET}/"))
                        ["Body"].read())
    if report["pca_fitted"]:  # the first run fits the PCA model with the variance from the form
        assert report["variance_target"] == NEW_VARIANCE
    else:  # a model exists (the scheduled run's): a daily run applies it, whose target it keeps (docs/pca.md)
        assert report["pca_model"] == pointer["pca_model"] and report["variance_target"] == 0.95
    assert pointer["features_rows"] + pointer["quarantined"] == pointer["images"] > 0
