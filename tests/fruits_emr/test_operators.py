"""The two provider-operator subclasses, against moto."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest

from fruits_emr import emr_request
from fruits_emr.operators import EmrStepSensorWithLogs, EmrTerminateRunClusters

RUN_ID = "manual__2024-06-02T00:00:00+00:00"


def start_cluster(emr_client, run_id: str, name: str = "fruits-features-2024-06-01", log_uri: str | None = None) -> str:
    request = {
        "Name": name,
        "ReleaseLabel": "emr-7.8.0",
        "Instances": {"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
        "JobFlowRole": "EMR_EC2_DefaultRole",
        "ServiceRole": "EMR_DefaultRole",
        "Tags": emr_request.cluster_tags("fruits_features", run_id, "2024-06-01"),
    }
    if log_uri:
        request["LogUri"] = log_uri
    return emr_client.run_job_flow(**request)["JobFlowId"]


def context(run_id: str = RUN_ID) -> dict:
    return {"run_id": run_id, "dag": SimpleNamespace(dag_id="fruits_features"), "ti": mock.MagicMock()}


def state(emr_client, cluster_id: str) -> str:
    return emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]


def test_teardown_also_ends_clusters_of_earlier_attempts(emr_client):
    current = start_cluster(emr_client, RUN_ID)
    earlier_attempt = start_cluster(emr_client, RUN_ID)
    other_run = start_cluster(emr_client, "scheduled__2024-06-01T00:00:00+00:00")
    unrelated = start_cluster(emr_client, RUN_ID, name="someone-elses-cluster")

    EmrTerminateRunClusters(task_id="terminate_cluster", job_flow_id=current).execute(context())

    assert {cid: state(emr_client, cid) for cid in (current, earlier_attempt, other_run, unrelated)} == {
        current: "TERMINATED", earlier_attempt: "TERMINATED", other_run: "WAITING", unrelated: "WAITING"}


def test_teardown_skips_clusters_the_policy_does_not_let_it_describe(emr_client):
    """The Airflow policy allows DescribeCluster on clusters carrying the DAG's tags only: a cluster
    named like the project's but not tagged as the DAG's answers AccessDenied (as AWS would; moto
    checks no tag conditions), and the teardown goes on with the run's own clusters."""
    from botocore.exceptions import ClientError

    current = start_cluster(emr_client, RUN_ID)
    earlier_attempt = start_cluster(emr_client, RUN_ID)
    foreign = start_cluster(emr_client, RUN_ID, name="fruits-of-another-team")
    teardown = EmrTerminateRunClusters(task_id="terminate_cluster", job_flow_id=current)
    conn = teardown.hook.conn
    describe = conn.describe_cluster

    def as_the_policy_allows(ClusterId):  # noqa: N803 - boto3's argument name
        if ClusterId == foreign:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}},
                              "DescribeCluster")
        return describe(ClusterId=ClusterId)

    with mock.patch.object(conn, "describe_cluster", side_effect=as_the_policy_allows):
        teardown.execute(context())
    assert [state(emr_client, cid) for cid in (current, earlier_attempt, foreign)] == [
        "TERMINATED", "TERMINATED", "WAITING"]

    def throttled(ClusterId):  # noqa: N803
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "DescribeCluster")

    again = start_cluster(emr_client, RUN_ID)
    with mock.patch.object(conn, "describe_cluster", side_effect=throttled), pytest.raises(ClientError):
        teardown.execute(context())  # any other error is not swallowed
    assert state(emr_client, again) == "WAITING"


def test_deferred_sensor_failure_names_step_and_logs(emr_client):
    from airflow.sdk.exceptions import AirflowFailException
    from moto.emr.models import emr_backends

    from tests.support import ACCOUNT, REGION

    cluster_id = start_cluster(emr_client, RUN_ID, log_uri="s3://fruits-data/emr-logs/")
    step_id = emr_client.add_job_flow_steps(
        JobFlowId=cluster_id,
        Steps=[{"Name": "pca 2024-06-01", "ActionOnFailure": "CANCEL_AND_WAIT",
                "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", "x.py"]}}],
    )["StepIds"][0]
    step = emr_backends[ACCOUNT][REGION].clusters[cluster_id].steps[0]
    step.state, step.last_state_change_reason = "FAILED", "pca: error: --k 99 exceeds the 40 features"
    sensor = EmrStepSensorWithLogs(task_id="watch_pca", job_flow_id=cluster_id, step_id=step_id, deferrable=True)

    with pytest.raises(AirflowFailException) as raised:
        sensor.execute_complete(context(), {"status": "failure", "message": "Steps failed"})

    assert str(raised.value) == (
        f"EMR step 'pca 2024-06-01' ({step_id}) on cluster {cluster_id} ended FAILED:"
        " pca: error: --k 99 exceeds the 40 features;"
        f" Python traceback (driver stderr): s3://fruits-data/emr-logs/{cluster_id}/steps/{step_id}/stderr.gz;"
        f" stdout: s3://fruits-data/emr-logs/{cluster_id}/steps/{step_id}/stdout.gz;"
        f" executor logs: s3://fruits-data/emr-logs/{cluster_id}/containers/<application id>/"
        " (EMR ships logs a few minutes after the step ends)"
    )
