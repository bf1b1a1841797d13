"""The DAG's failure alert (fruits_emr.alerts) with dag.test() against moto's SNS, read through an SQS
subscription: a failed run posts exactly one message naming the DAG, the run, the failed task and its
log URL; without the Variable nothing is posted and the run ends the same. The reason the task
logged comes through the dag-processor, which dag.test() does not run: the stack test
tests/integration/ui/test_downstream_stack.py checks it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from fruits_emr import alerts
from tests.support import REGION, REPO_ROOT
from tests.support.moto import certificate_of


@pytest.fixture
def subscribed_queue(moto):
    """An SNS topic with an SQS queue subscribed to it: (topic ARN, a function draining the queue)."""
    import boto3

    sns, sqs = (boto3.client(name, endpoint_url=moto, region_name=REGION, verify=certificate_of(moto))
                for name in ("sns", "sqs"))
    topic = sns.create_topic(Name="fruits-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    def drain() -> list[dict]:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]

    return topic, drain


def failing_run():
    """A run that fails in its first task: the bucket of its Param does not exist (a user error, no retry)."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).dags["fruits_features"]
    run = dag.test(logical_date=datetime.now(UTC), run_conf={"bucket": "no-such-bucket"})
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_a_failed_run_posts_one_alert_naming_the_task_and_its_log(airflow_db, subscribed_queue, monkeypatch):
    topic, drain = subscribed_queue
    monkeypatch.setenv("AIRFLOW_VAR_FRUITS_FEATURES_ALERTS_TOPIC", topic)

    run, states = failing_run()

    assert run.state == "failed" and states["resolve_config"] == "failed", states
    [notification] = drain()
    assert drain() == []  # exactly one
    assert notification["TopicArn"] == topic
    assert notification["Subject"] == "Airflow: fruits_features run failed in resolve_config"
    lines = notification["Message"].splitlines()
    assert lines[:3] == ["DAG: fruits_features", f"run: {run.run_id}", "failed task: resolve_config (try 1)"]
    assert lines[3] == "reason: task_failure"  # the run's own reason: dag.test() serves no XCom to callbacks
    assert lines[4] == (f"log: http://localhost:8080/dags/fruits_features/runs/{quote(run.run_id)}/tasks/resolve_config"
                        "?try_number=1")  # [api] base_url's default


def test_without_the_variable_no_alert_and_the_run_ends_the_same(airflow_db, subscribed_queue, monkeypatch, caplog):
    _, drain = subscribed_queue
    monkeypatch.delenv("AIRFLOW_VAR_FRUITS_FEATURES_ALERTS_TOPIC", raising=False)

    run, states = failing_run()

    assert run.state == "failed" and states["resolve_config"] == "failed"
    assert drain() == []
    assert f"Variable {alerts.ALERTS_VARIABLE} is unset: no failure alert sent" in caplog.text
