"""The deferred step sensor's trigger, run as the triggerer runs it (asyncio, from its serialized
form) against in-process moto EMR, to a success and to a failure event; then the sensor's resumption
with that event. The real-processes run (a triggerer, killed mid-wait) is
tests/integration/ui/test_emr_stack.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from unittest import mock

import pytest
from moto import mock_aws

from fruits_emr import emr_request
from fruits_emr.operators import EmrStepSensorWithLogs
from fruits_emr.step_trigger import EmrStepThreadedTrigger
from tests.support import ACCOUNT, REGION

RUN_ID = "manual__2024-06-02T00:00:00+00:00"


@pytest.fixture
def emr():
    """In-process moto (no server) with one cluster of the DAG's and one pending pca step on it."""
    import boto3

    with mock_aws():
        client = boto3.client("emr", region_name=REGION)
        cluster_id = client.run_job_flow(
            Name="fruits-features-2024-06-01", ReleaseLabel="emr-7.8.0", LogUri="s3://fruits-data/emr-logs/",
            Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
            JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole",
            Tags=emr_request.cluster_tags("fruits_features", RUN_ID, "2024-06-01"),
        )["JobFlowId"]
        [step_id] = client.add_job_flow_steps(JobFlowId=cluster_id, Steps=[{
            "Name": "pca 2024-06-01", "ActionOnFailure": "CANCEL_AND_WAIT",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", "pca.py"]}}])["StepIds"]
        yield SimpleNamespace(client=client, cluster_id=cluster_id, step_id=step_id)


def moto_step(emr):
    from moto.emr.models import emr_backends

    return next(s for s in emr_backends[ACCOUNT][REGION].clusters[emr.cluster_id].steps if s.id == emr.step_id)


def sensor(emr, **kwargs) -> EmrStepSensorWithLogs:
    # aws_conn_id None: boto3's own credentials (moto's), no Airflow connection to look up
    return EmrStepSensorWithLogs(task_id="watch_pca", job_flow_id=emr.cluster_id, step_id=emr.step_id,
                                 aws_conn_id=None, region_name=REGION, deferrable=True, **kwargs)


def context() -> dict:
    return {"run_id": RUN_ID, "dag": SimpleNamespace(dag_id="fruits_features"), "ti": mock.MagicMock()}


def deferred_trigger(emr, **kwargs) -> EmrStepThreadedTrigger:
    """The trigger the sensor defers with, rebuilt from its serialized form as the triggerer does."""
    from airflow.sdk.exceptions import TaskDeferred
    from airflow.sdk.module_loading import import_string

    with pytest.raises(TaskDeferred) as deferred:
        sensor(emr, **kwargs).execute(context())
    classpath, arguments = deferred.value.trigger.serialize()
    assert classpath == "fruits_emr.step_trigger.EmrStepThreadedTrigger"
    return import_string(classpath)(**arguments)


async def first_event(trigger, change_step=None) -> dict:
    """Run the trigger on this event loop until its first event; `change_step` runs meanwhile, on
    the same loop (the trigger's boto3 calls are in threads, so the loop stays free for it)."""
    events = trigger.run()
    waiting = asyncio.ensure_future(events.__anext__())
    if change_step is not None:
        await change_step(waiting)
    event = await asyncio.wait_for(waiting, timeout=60)
    await events.aclose()
    return event.payload


def test_deferred_sensor_waits_in_the_trigger_until_the_step_completes(emr):
    step = moto_step(emr)
    step.state = "RUNNING"
    trigger = deferred_trigger(emr, poke_interval=1, max_attempts=30)

    async def complete_after_polls(waiting):
        await asyncio.sleep(1.5)  # the step runs on while the trigger polls it (every second)
        assert not waiting.done()
        step.state = "COMPLETED"

    event = asyncio.run(first_event(trigger, complete_after_polls))

    assert event == {"status": "success", "value": None}
    assert sensor(emr).execute_complete(context(), event) is None


def test_a_failed_step_ends_the_wait_with_an_error_event_and_fails_the_sensor_once(emr):
    from airflow.sdk.exceptions import AirflowFailException

    step = moto_step(emr)
    step.state, step.last_state_change_reason = "RUNNING", ""
    trigger = deferred_trigger(emr, poke_interval=1, max_attempts=30)

    async def fail(waiting):
        step.state, step.last_state_change_reason = "FAILED", "pca: error: --k 99 exceeds the 40 features"

    event = asyncio.run(first_event(trigger, fail))

    assert event["status"] == "error"
    assert f"Error while waiting for step {emr.step_id} to complete" in event["message"]
    assert "FAILED" in event["message"]
    with pytest.raises(AirflowFailException) as raised:  # not retried: the step would fail again
        sensor(emr).execute_complete(context(), event)
    assert str(raised.value).startswith(
        f"EMR step 'pca 2024-06-01' ({emr.step_id}) on cluster {emr.cluster_id} ended FAILED:"
        " pca: error: --k 99 exceeds the 40 features; Python traceback (driver stderr):"
        f" s3://fruits-data/emr-logs/{emr.cluster_id}/steps/{emr.step_id}/stderr.gz")


def test_a_wait_that_runs_out_is_a_sensor_timeout(emr):
    from airflow.sdk.exceptions import AirflowSensorTimeout

    moto_step(emr).state = "RUNNING"
    trigger = deferred_trigger(emr, poke_interval=0, max_attempts=2)

    event = asyncio.run(first_event(trigger))

    assert event["status"] == "error" and "max attempts reached" in event["message"]
    with pytest.raises(AirflowSensorTimeout, match=f"{emr.step_id}.* is still RUNNING"):
        sensor(emr, poke_interval=0, max_attempts=2).execute_complete(context(), event)


def test_a_step_done_before_deferring_needs_no_trigger(emr):
    moto_step(emr).state = "COMPLETED"
    assert sensor(emr).execute(context()) is None  # the first poke sees it: no TaskDeferred


def test_the_providers_own_trigger_cannot_run_here(emr):
    """Why EmrStepThreadedTrigger exists: the provider's trigger needs aiobotocore, which no release
    lets install next to the pinned botocore. If this starts to pass, the subclass can go."""
    from airflow.providers.amazon.aws.triggers.emr import EmrStepSensorTrigger

    trigger = EmrStepSensorTrigger(job_flow_id=emr.cluster_id, step_id=emr.step_id, aws_conn_id=None,
                                   region_name=REGION, waiter_delay=0, waiter_max_attempts=1)
    with pytest.raises(ModuleNotFoundError, match="aiobotocore"):
        asyncio.run(first_event(trigger))
