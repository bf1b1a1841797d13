"""EMR calls that are safe to retry (issue 26, item 4 and 6e), against the moto server through the
fault-injecting proxy (tests/support/fault_proxy.py): a RunJobFlow or AddJobFlowSteps carried out
whose response is lost, a task retry after one, a create_cluster that fails after creating.
Each scenario also runs the provider's own operator where it shows the duplicate it makes."""

from __future__ import annotations

import json
from types import SimpleNamespace
from unittest import mock

import pytest

from fruits_emr import artifacts, emr_request, layout, settings
from fruits_emr.operators import EmrAddRunSteps, EmrCreateRunCluster, EmrTerminateRunClusters
from tests.support import REGION
from tests.support.fault_proxy import ACCESS_DENIED, LOST_RESPONSE, Rule, running_fault_proxy

RUN_ID = "manual__2024-06-02T00:00:00+00:00"
EMR = "elasticmapreduce"
FAULTY = "faulty_aws"  # the Airflow connection through the proxy


@pytest.fixture
def proxy(moto, monkeypatch):
    """The proxy in front of the test's moto server, and the Airflow connection `faulty_aws` to it."""
    with running_fault_proxy(moto) as running:
        monkeypatch.setenv(f"AIRFLOW_CONN_{FAULTY.upper()}", json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": running.endpoint, "region_name": REGION}}))
        yield running


def request(attempt: str = "20240602T000000000000Z") -> SimpleNamespace:
    """The run's RunJobFlow body and its two steps, as the emr_request task builds them."""
    config = settings.RunConfig(bucket="fruits-data")
    paths = layout.run_paths(config, "2024-06-01", attempt)
    staged = artifacts.code_layout("fruits-data", "artifacts/", "0" * 16, "imagenet", wheelhouse="s3://fruits-data/w/")
    return SimpleNamespace(overrides=emr_request.job_flow_overrides(config, paths, staged, settings.DAG_ID, RUN_ID),
                           steps=emr_request.spark_steps(config, paths, staged))


def context() -> dict:
    return {"run_id": RUN_ID, "dag": SimpleNamespace(dag_id=settings.DAG_ID), "ti": mock.MagicMock()}


def live_clusters(emr_client) -> list[str]:
    listed = emr_client.list_clusters(ClusterStates=list(emr_request.ACTIVE_CLUSTER_STATES))["Clusters"]
    return sorted(cluster["Id"] for cluster in listed)


def steps_of(emr_client, cluster_id: str) -> list[tuple[str, str]]:
    return [(step["Name"], step["Status"]["State"]) for step in emr_client.list_steps(ClusterId=cluster_id)["Steps"]]


def test_a_lost_run_job_flow_response_makes_one_cluster_and_a_retry_takes_it(proxy, emr_client):
    from airflow.providers.amazon.aws.operators.emr import EmrCreateJobFlowOperator

    body = request().overrides
    proxy.rules = [Rule(EMR, (LOST_RESPONSE,), operation="RunJobFlow", limit=1)]
    create = EmrCreateRunCluster(task_id="create_cluster", job_flow_overrides=body, aws_conn_id=FAULTY,
                                 emr_conn_id=None)

    cluster_id = create.execute(context())

    assert proxy.count(LOST_RESPONSE, operation="RunJobFlow") == 1  # moto made it; the answer never came
    assert live_clusters(emr_client) == [cluster_id]
    # the task's retry (a killed worker, a failure after it) takes the same cluster
    assert EmrCreateRunCluster(task_id="create_cluster", job_flow_overrides=body, aws_conn_id=FAULTY,
                               emr_conn_id=None).execute(context()) == cluster_id
    assert live_clusters(emr_client) == [cluster_id]

    # the provider's operator under the same fault: botocore sends RunJobFlow again, a second cluster
    emr_client.terminate_job_flows(JobFlowIds=[cluster_id])
    proxy.rules = [Rule(EMR, (LOST_RESPONSE,), operation="RunJobFlow", limit=1)]
    EmrCreateJobFlowOperator(task_id="plain", job_flow_overrides=body, aws_conn_id=FAULTY,
                             emr_conn_id=None).execute(context())
    assert len(live_clusters(emr_client)) == 2


def test_a_lost_add_job_flow_steps_response_queues_one_pair(proxy, emr_client):
    from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator

    run = request()
    cluster_id = emr_client.run_job_flow(**run.overrides)["JobFlowId"]
    proxy.rules = [Rule(EMR, (LOST_RESPONSE,), operation="AddJobFlowSteps", limit=1)]

    step_ids = EmrAddRunSteps(task_id="add_steps", job_flow_id=cluster_id, steps=run.steps,
                              aws_conn_id=FAULTY).execute(context())

    assert proxy.count(LOST_RESPONSE, operation="AddJobFlowSteps") == 1
    listed = emr_client.list_steps(ClusterId=cluster_id)["Steps"]
    assert [step["Id"] for step in reversed(listed)] == step_ids
    assert [name for name, _ in steps_of(emr_client, cluster_id)] == ["pca 2024-06-01", "featurize 2024-06-01"]

    # the provider's operator under the same fault queues the pair twice
    other = emr_client.run_job_flow(**run.overrides)["JobFlowId"]
    proxy.rules = [Rule(EMR, (LOST_RESPONSE,), operation="AddJobFlowSteps", limit=1)]
    EmrAddStepsOperator(task_id="plain", job_flow_id=other, steps=run.steps, aws_conn_id=FAULTY).execute(context())
    assert len(steps_of(emr_client, other)) == 4


def test_a_retry_of_add_steps_takes_the_pair_unless_it_failed(emr_client):
    """A retry (a worker killed after AddJobFlowSteps, a cleared task) finds the pair it queued;
    after the pair failed a cleared add_steps queues a new one; another attempt's steps never match."""
    from moto.emr.models import emr_backends

    from tests.support import ACCOUNT

    run = request()
    cluster_id = emr_client.run_job_flow(**run.overrides)["JobFlowId"]

    def add_steps(steps) -> list[str]:
        return EmrAddRunSteps(task_id="add_steps", job_flow_id=cluster_id, steps=steps).execute(context())

    first = add_steps(run.steps)
    assert add_steps(run.steps) == first
    for step in emr_backends[ACCOUNT][REGION].clusters[cluster_id].steps:
        step.state = "FAILED" if step.id == first[0] else "CANCELLED"
    second = add_steps(run.steps)
    assert set(second).isdisjoint(first) and add_steps(run.steps) == second
    # a new attempt of the run (find_new_images ran again: another attempt folder in the arguments)
    third = add_steps(request(attempt="20240602T010000000000Z").steps)
    assert set(third).isdisjoint(first + second)
    assert len(steps_of(emr_client, cluster_id)) == 6


def test_a_create_cluster_that_fails_after_creating_leaves_no_cluster_running(proxy, emr_client):
    """RunJobFlow succeeds, then the task fails (here: DescribeCluster denied to create_cluster, as a
    too narrow policy would); each try fails the same way. The teardown's sweep by the run's tags,
    which the DAG runs after a failed create_cluster too, ends the clusters the tries made."""
    body = request().overrides
    proxy.rules = [Rule(EMR, (ACCESS_DENIED,), operation="DescribeCluster", caller="Caller/EmrCreateRunCluster")]
    for _ in range(2):  # the first try and a retry
        with pytest.raises(Exception, match="AccessDenied"):
            EmrCreateRunCluster(task_id="create_cluster", job_flow_overrides=body, aws_conn_id=FAULTY,
                                emr_conn_id=None).execute(context())
    assert proxy.count(ACCESS_DENIED) >= 2
    # a cluster it may not describe is not taken as the run's (it may be another team's): one per try
    leaked = live_clusters(emr_client)
    assert len(leaked) == 2
    unrelated = emr_client.run_job_flow(**{**body, "Tags": emr_request.cluster_tags(settings.DAG_ID, "other", "x")})[
        "JobFlowId"]

    proxy.rules = []
    EmrTerminateRunClusters(task_id="terminate_cluster", job_flow_id=None, aws_conn_id=FAULTY).execute(context())

    assert live_clusters(emr_client) == [unrelated]
