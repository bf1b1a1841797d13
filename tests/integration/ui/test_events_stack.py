"""Event-driven runs end to end: moto S3 sends ObjectCreated notifications to a moto SQS queue, the
real triggerer runs the DAG's asset watcher on it, the scheduler starts a run on the asset, and the
run (local compute mode, real Spark) commits the images the events named. Then the same messages
are delivered again, and the run they start commits nothing.

Real Airflow processes on Postgres (tests/integration/ui/stack.py); no browser.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from fruits_emr import iam
from tests.support import SAMPLE
from tests.support.moto import running_moto_server

from .conftest import ACCOUNT, BUCKET, DAG_ID, FRUITS_ENV, REGION, aws_env
from .stack import running_airflow, wait_for_dag
from .test_airflow_ui import committed_images

pytestmark = pytest.mark.ui

RUN_TIMEOUT = 900  # seconds: a safety net so a stuck run fails the test instead of hanging CI
DEBOUNCE_SECONDS = 10
EVENT_ENV = {"FRUITS_EVENTS_DEBOUNCE_SECONDS": str(DEBOUNCE_SECONDS), "FRUITS_EVENTS_POLL_SECONDS": "2"}


@pytest.fixture(scope="module")
def event_stack():
    """An empty bucket whose raw/ notifications go to a queue, and the Airflow processes with the DAG
    watching that queue; the DAG unpaused, its scheduled run for yesterday (no images) done."""
    import boto3

    with running_moto_server() as endpoint:
        clients = {name: boto3.client(name, endpoint_url=endpoint, region_name=REGION,
                                      aws_access_key_id="testing", aws_secret_access_key="testing")
                   for name in ("s3", "sqs")}
        clients["s3"].create_bucket(Bucket=BUCKET)
        queue_url = clients["sqs"].create_queue(QueueName=iam.QUEUE_NAME)["QueueUrl"]
        clients["s3"].put_bucket_notification_configuration(
            Bucket=BUCKET, NotificationConfiguration=iam.notification_configuration(iam.queue_arn(ACCOUNT, REGION)))
        aws = {**aws_env(endpoint), "FRUITS_EVENTS_QUEUE_URL": queue_url}
        with running_airflow({**FRUITS_ENV, **EVENT_ENV, **aws}) as airflow:
            api = wait_for_dag(airflow, DAG_ID)
            api.patch(f"dags/{DAG_ID}", {"is_paused": False})
            [scheduled] = api.wait_for(lambda: runs(api, "scheduled"), RUN_TIMEOUT)
            done = api.wait_for_run(DAG_ID, scheduled["dag_run_id"], RUN_TIMEOUT)
            assert done["state"] == "success", f"{done['tasks']}\n{airflow.logs()}"
            yield airflow, api, clients


def runs(api, run_type: str) -> list[dict]:
    found = api.get(f"dags/{DAG_ID}/dagRuns", run_type=[run_type])["dag_runs"]
    return sorted(found, key=lambda run: run["run_after"])


def event_partitions(s3) -> dict[str, dict]:
    """{run date: commit record} of the committed event-run partitions (run_date=YYYY-MM-DDTHHMMSSZ)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="features/run_date=")
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", []) if obj["Key"].endswith("/_COMMITTED.json")]
    return {key.split("run_date=")[1].split("/")[0]: json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            for key in keys if "T" in key.split("run_date=")[1].split("/")[0]}


def upload_burst(s3, per_label: int) -> list[str]:
    keys = []
    for label in ("apple", "lemon", "mango", "raspberry"):
        for source in sorted((SAMPLE / label).iterdir())[:per_label]:
            key = f"raw/{label}/{source.name}"
            s3.upload_file(str(source), BUCKET, key)
            keys.append(key)
    return sorted(keys)


def finished_run(airflow, api, count: int) -> dict:
    """The count-th asset-triggered run, once it ended."""
    found = api.wait_for(lambda: runs(api, "asset_triggered")[count - 1:count], RUN_TIMEOUT)[0]
    run = api.wait_for_run(DAG_ID, found["dag_run_id"], RUN_TIMEOUT)
    assert run["state"] == "success", f"{run['tasks']}\n{airflow.logs()}"
    return run


def test_a_burst_makes_one_run_that_commits_them_and_their_redelivery_commits_nothing(event_stack):
    """One test, so no test scheduler can run the redelivery on a stack that never saw the burst."""
    airflow, api, clients = event_stack
    s3, sqs = clients["s3"], clients["sqs"]
    uploaded_at = time.monotonic()
    keys = upload_burst(s3, 2)

    run = finished_run(airflow, api, 1)
    assert run["tasks"]["commit_outputs"] == "success", f"{run['tasks']}\n{airflow.logs()}"
    [(run_date, record)] = event_partitions(s3).items()
    manifest, featurized = committed_images(s3, record)
    assert manifest == [f"s3://{BUCKET}/{key}" for key in keys]
    assert featurized == sorted(key.rsplit("/", 1)[1] for key in keys)
    assert (record["images"], record["features_rows"], record["quarantined"]) == (8, 8, 0)
    assert record["dag_run_id"] == run["dag_run_id"]
    assert datetime.strptime(run_date, "%Y-%m-%dT%H%M%SZ").replace(tzinfo=UTC) <= datetime.now(UTC)
    # one run for the whole burst: the watcher waited out the debounce window
    time.sleep(DEBOUNCE_SECONDS + 5)
    assert len(runs(api, "asset_triggered")) == 1, f"one burst, several runs ({time.monotonic() - uploaded_at:.0f} s)"

    # At least once: the messages of that run arrive again (as SQS may redeliver). The run they
    # start finds every image processed by a committed run: no cluster, no new partition.
    before = event_partitions(s3)
    [first] = runs(api, "asset_triggered")
    consumed = api.get(f"dags/{DAG_ID}/dagRuns/{first['dag_run_id']}/upstreamAssetEvents")["asset_events"]
    bodies = [m["Body"] for event in consumed for m in event["extra"]["payload"]["message_batch"]]
    assert len(bodies) == 8
    queue_url = airflow.env["FRUITS_EVENTS_QUEUE_URL"]
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)

    run = finished_run(airflow, api, 2)
    assert run["tasks"]["find_new_images"] == "success"
    assert run["tasks"]["plan_pca"] == "skipped" and run["tasks"]["commit_outputs"] == "skipped"
    assert event_partitions(s3) == before
