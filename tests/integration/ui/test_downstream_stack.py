"""Downstream of the features, with real Airflow processes (stack.py: Postgres, api-server, scheduler,
dag-processor, triggerer) and the DAG in local compute mode against a moto server:

- the scheduled run commits yesterday's images; its commit is an event of the asset
  fruits_reduced_corpus, which starts exactly one run of fruits_corpus_check, and that run reads
  the new rows through commits.reduced_corpus;
- lineage through the openlineage provider with a file transport: run_steps_locally's events name the
  raw images as input and the features, pca and model folders as outputs, and the Spark listener's
  events (openlineage-spark, staged by stage_artifacts) name run_steps_locally as their parent;
- a run that fails posts exactly one alert to the SNS topic of the Variable fruits_features_alerts_topic
  (read here through an SQS subscription) naming the DAG, the run, the failed task, the reason it
  logged and the log URL; a failed run emits no asset event.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
import requests

from fruits_emr import corpus
from tests.support.moto import running_moto_server

from .conftest import BUCKET, DAG_ID, FRUITS_ENV, REGION, _upload, aws_env
from .stack import running_airflow, wait_for_dag

pytestmark = pytest.mark.ui

CONSUMER = "fruits_corpus_check"
RUN_TIMEOUT = 900  # seconds: a safety net so a stuck run fails the test instead of hanging CI


def lineage_events(folder: Path) -> tuple[list[dict], list[dict]]:
    """(Airflow events, one file each; Spark events, one JSON line each in <log_file_path>.spark)."""
    airflow = [json.loads(path.read_text()) for path in sorted(folder.glob("events-*.json"))]
    spark_file = folder / "events.spark"
    spark = [json.loads(line) for line in spark_file.read_text().splitlines() if line.strip()] if spark_file.exists() else []
    return airflow, spark


def names(datasets: list[dict]) -> set[tuple[str, str]]:
    return {(d["namespace"], d["name"]) for d in datasets}


def dag_runs(api, dag_id: str, run_type: str) -> list[dict]:
    return api.get(f"dags/{dag_id}/dagRuns", run_type=[run_type])["dag_runs"]


def test_commit_starts_one_consumer_run_with_lineage_and_a_failure_alerts_once():
    import boto3

    lineage_dir = Path(tempfile.mkdtemp(prefix="fruits-lineage-"))
    with running_moto_server() as endpoint:
        clients = {name: boto3.client(name, endpoint_url=endpoint, region_name=REGION,
                                      aws_access_key_id="testing", aws_secret_access_key="testing")
                   for name in ("s3", "sns", "sqs")}
        s3, sqs = clients["s3"], clients["sqs"]
        s3.create_bucket(Bucket=BUCKET)
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        _upload(s3, 2, 0, datetime.combine(yesterday, time(12, tzinfo=UTC)))
        topic = clients["sns"].create_topic(Name="fruits-alerts")["TopicArn"]
        inbox = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
        inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        clients["sns"].subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
        env = {**FRUITS_ENV, **aws_env(endpoint), "AIRFLOW_VAR_FRUITS_FEATURES_ALERTS_TOPIC": topic,
               "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                   {"type": "file", "log_file_path": str(lineage_dir / "events"), "append": False}),
               "AIRFLOW__OPENLINEAGE__NAMESPACE": "fruits-test"}

        def alerts(wait: int) -> list[dict]:
            found = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=wait).get("Messages", [])
            for message in found:
                sqs.delete_message(QueueUrl=inbox, ReceiptHandle=message["ReceiptHandle"])
            return [json.loads(m["Body"]) for m in found]

        with running_airflow(env) as airflow:
            api = wait_for_dag(airflow, DAG_ID)
            wait_for_dag(airflow, CONSUMER)
            api.patch(f"dags/{CONSUMER}", {"is_paused": False})
            api.patch(f"dags/{DAG_ID}", {"is_paused": False})

            # (1) the scheduled run commits yesterday's 8 images; the commit starts the consumer once
            [scheduled] = api.wait_for(lambda: dag_runs(api, DAG_ID, "scheduled"), RUN_TIMEOUT)
            produced = api.wait_for_run(DAG_ID, scheduled["dag_run_id"], RUN_TIMEOUT)
            assert produced["state"] == "success", f"{produced['tasks']}\n{airflow.logs()}"
            run_date = yesterday.isoformat()
            [consumer] = api.wait_for(lambda: dag_runs(api, CONSUMER, "asset_triggered"), RUN_TIMEOUT)
            checked = api.wait_for_run(CONSUMER, consumer["dag_run_id"], RUN_TIMEOUT)
            assert checked["state"] == "success", f"{checked['tasks']}\n{airflow.logs()}"
            [event] = api.get(f"dags/{CONSUMER}/dagRuns/{consumer['dag_run_id']}/upstreamAssetEvents")["asset_events"]
            assert event["source_run_id"] == scheduled["dag_run_id"]
            assert {k: event["extra"][k] for k in ("run_date", "images", "features_rows", "quarantined",
                                                   "pca_model_version", "pointer")} == {
                "run_date": run_date, "images": 8, "features_rows": 8, "quarantined": 0, "pca_model_version": "v0001",
                "pointer": f"s3://{BUCKET}/features/_pca_models/_CURRENT.json"}
            report = api.get(f"dags/{CONSUMER}/dagRuns/{consumer['dag_run_id']}/taskInstances/check_corpus/"
                             "xcomEntries/return_value")["value"]
            assert report["rows_per_run_date"] == {run_date: 8}  # the new rows, read through the pointer
            assert report["rows_per_label"] == {"apple": 2, "lemon": 2, "mango": 2, "raspberry": 2}
            assert report["pca_model_version"] == "v0001" and report["events"] == [
                {"run_date": run_date, "features_rows": 8, "pca_model_version": "v0001"}]
            accuracy = report["nearest_centroid"]
            assert (accuracy["train_rows"], accuracy["test_rows"]) == (4, 4) and 0 <= accuracy["accuracy"] <= 1
            assert alerts(wait=1) == []  # a successful run sends nothing

            # (2) lineage of the run that worked: the Airflow task and its Spark applications
            airflow_events, spark_events = lineage_events(lineage_dir)
            steps_done = [e for e in airflow_events if e["job"]["name"] == f"{DAG_ID}.run_steps_locally"
                          and e["eventType"] == "COMPLETE"]
            assert len(steps_done) == 1, sorted({e["job"]["name"] for e in airflow_events})
            attempt = s3.get_object(Bucket=BUCKET, Key=f"features/run_date={run_date}/_COMMITTED.json")["Body"]
            commit = json.loads(attempt.read())
            output = commit["output"].removeprefix(f"s3://{BUCKET}/")
            namespace = f"s3://{BUCKET}"
            assert names(steps_done[0]["inputs"]) == {(namespace, "raw")}
            assert names(steps_done[0]["outputs"]) == {(namespace, f"{output}/features"), (namespace, f"{output}/pca"),
                                                       (namespace, f"features/_pca_models/_attempts/{commit['attempt']}")}
            # the Spark applications (featurize, pca) name the task as their parent; their jobs name them
            parent = {e["run"]["runId"]: e["run"]["facets"].get("parent", {}).get("run", {}).get("runId")
                      for e in spark_events}
            applications = {run for run, of in parent.items() if of == steps_done[0]["run"]["runId"]}
            assert len(applications) == 2, f"{len(spark_events)} Spark events, parents {set(parent.values())}"
            written = {(d["namespace"], d["name"]) for e in spark_events if parent[e["run"]["runId"]] in applications
                       for d in e.get("outputs", [])}
            assert {(namespace, f"{output}/features"), (namespace, f"{output}/pca")} <= written, written

            # (3) a failing run: one alert naming the task, its reason and its log; no asset event
            triggered = api.session.post(f"{airflow.url}/api/v2/dags/{DAG_ID}/dagRuns", timeout=30, json={
                "logical_date": None, "conf": {"bucket": "no-such-bucket"}})
            triggered.raise_for_status()
            run_id = triggered.json()["dag_run_id"]
            failed = api.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT)
            assert failed["state"] == "failed" and failed["tasks"]["resolve_config"] == "failed", failed["tasks"]
            [alert] = api.wait_for(lambda: alerts(wait=5), 120)
            assert alerts(wait=5) == []  # exactly one
            lines = alert["Message"].splitlines()
            assert lines[:3] == [f"DAG: {DAG_ID}", f"run: {run_id}", "failed task: resolve_config (try 1)"]
            assert lines[3].startswith("reason: AirflowFailException: Param 'bucket': s3://no-such-bucket does not exist")
            assert lines[4].startswith(f"log: {airflow.url}/dags/{DAG_ID}/runs/")
            assert requests.get(lines[4].removeprefix("log: "), timeout=30).ok
            assert len(dag_runs(api, CONSUMER, "asset_triggered")) == 1
            assert [a["name"] for a in api.get("assets", name_pattern=corpus.REDUCED_CORPUS.name)["assets"]] == [
                corpus.REDUCED_CORPUS.name]
