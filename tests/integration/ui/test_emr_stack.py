"""The EMR compute mode with real Airflow processes (Postgres, api-server, scheduler, dag-processor,
triggerer; tests/integration/ui/stack.py), against a moto server behind the fault proxy, with
a thread of this test playing EMR (tests/support/emr_player.py: each step's spark-submit here, S3
through S3A). One scheduled run, and on its way:

- the step sensors deferred ([operators] default_deferrable): they wait in the triggerer, which is
  killed (SIGKILL) while watch_featurize waits and replaced by a new one;
- the responses of the run's RunJobFlow and AddJobFlowSteps lost (carried out, connection reset);
- S3 answering 503 SlowDown or resetting the connection for one request in seven, for the DAG's
  boto3 calls in the Airflow processes and for S3A in the steps.

The run commits every image under raw/ once (features or quarantine), on one cluster with one pair
of steps, and no cluster is left running.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, time, timedelta

import pytest

from tests.support import LABELS, REPO_ROOT, SAMPLE
from tests.support.coverage import committed_rows, raw_images
from tests.support.emr_player import S3aStepPlayer
from tests.support.fault_proxy import LOST_RESPONSE, RESET, SLOW_DOWN, Rule, running_fault_proxy
from tests.support.moto import running_moto_server

from .conftest import ACCOUNT, BUCKET, DAG_ID, FRUITS_ENV, REGION, _set_last_modified, aws_env
from .stack import running_airflow, wait_for_dag

pytestmark = [pytest.mark.ui, pytest.mark.airflow, pytest.mark.spark, pytest.mark.tensorflow]

RUN_TIMEOUT = 600  # seconds: a safety net so a stuck run fails the test instead of hanging CI
EMR = "elasticmapreduce"
EMR_ENV = {
    **{k: v for k, v in FRUITS_ENV.items() if not k.startswith("FRUITS_LOCAL_")},
    "FRUITS_COMPUTE_MODE": "emr",
    "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
    # a killed triggerer's triggers go to a live one once its heartbeat is this old (default 30 s)
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
}


def task_states(api, run_id: str) -> dict[str, str]:
    tasks = api.get(f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in tasks}


def triggerer_of(api, run_id: str, task_id: str) -> int | None:
    """The id of the triggerer job running the task's trigger (None: not deferred, or not picked up yet)."""
    job = api.get(f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}").get("triggerer_job") or {}
    return job.get("id")


def task_seconds(api, run_id: str) -> dict[str, float]:
    """How long each task took, start to end (with its deferral), for the record."""
    tasks = api.get(f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: round((datetime.fromisoformat(ti["end_date"]) - datetime.fromisoformat(ti["start_date"]))
                                 .total_seconds(), 1) for ti in tasks if ti.get("start_date") and ti.get("end_date")}


def featurize_waiting(api, run_id: str) -> dict[str, str] | None:
    """The run's task states once watch_featurize is deferred (or the run ended without that)."""
    states = task_states(api, run_id)
    ended = api.get(f"dags/{DAG_ID}/dagRuns/{run_id}")["state"] in ("success", "failed")
    return states if states.get("watch_featurize") == "deferred" or ended else None


def test_deferred_sensors_survive_a_killed_triggerer_and_faults_commit_every_image_once(tmp_path):
    import boto3
    from moto.emr.models import emr_backends

    from tests.support.wheels import prebuilt_cache

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    # S3: one request in seven of each client fails, 503 SlowDown and reset in turn
    faults = [Rule("s3", (SLOW_DOWN, RESET), caller="Boto3/", every=7),
              Rule("s3", (SLOW_DOWN, RESET), caller="aws-sdk-java/", every=7),
              Rule(EMR, (LOST_RESPONSE,), operation="RunJobFlow", limit=1),
              Rule(EMR, (LOST_RESPONSE,), operation="AddJobFlowSteps", limit=1)]
    with running_moto_server() as endpoint, running_fault_proxy(endpoint, faults) as proxy:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,  # the test's own: no faults
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=BUCKET)
        for label in LABELS:
            for source in sorted((SAMPLE / label).iterdir())[:1]:
                s3.upload_file(str(source), BUCKET, f"raw/{label}/{source.name}")
        s3.put_object(Bucket=BUCKET, Key="raw/lemon/corrupt.jpg", Body=b"\xff\xd8\xff\xe0 truncated")
        s3.put_object(Bucket=BUCKET, Key="raw/README.txt", Body=b"not an image")
        for key in raw_images(s3, BUCKET):  # landed yesterday: the scheduler's run takes them
            _set_last_modified(key.removeprefix(f"s3://{BUCKET}/"), datetime.combine(yesterday, time(12, tzinfo=UTC)))
        hold = threading.Event()
        player = S3aStepPlayer(proxy.endpoint, hold)
        player.start()
        env = {**EMR_ENV, **aws_env(proxy.endpoint),
               "FRUITS_WHEELHOUSE_CACHE": str(prebuilt_cache(tmp_path / "wheelhouse-cache", REPO_ROOT))}
        try:
            with running_airflow(env) as airflow:
                api = wait_for_dag(airflow, DAG_ID)
                api.patch(f"dags/{DAG_ID}", {"is_paused": False})
                run_id = api.wait_for(lambda: [r["dag_run_id"] for r in api.get(
                    f"dags/{DAG_ID}/dagRuns", run_type=["scheduled"])["dag_runs"]], RUN_TIMEOUT)[0]
                states = api.wait_for(lambda: featurize_waiting(api, run_id), RUN_TIMEOUT)
                assert states["watch_featurize"] == "deferred", f"{states}\n{airflow.logs()}"
                first = api.wait_for(lambda: triggerer_of(api, run_id, "watch_featurize"), RUN_TIMEOUT)
                airflow.kill_and_restart("triggerer")
                # the trigger goes to the new triggerer once the killed one's heartbeat is too old
                second = api.wait_for(lambda: (job := triggerer_of(api, run_id, "watch_featurize")) not in (None, first)
                                      and job, RUN_TIMEOUT)
                hold.set()  # EMR runs the steps now
                run = api.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT)
                assert run["state"] == "success", f"{run['tasks']}\n{player.errors}\n{airflow.logs()}"
                trigger_logs = {task: "".join(path.read_text(errors="replace") for path in (
                    airflow.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task}").glob(
                    "attempt=1.log.trigger.*.log")) for task in ("watch_featurize", "watch_pca")}
                print("task seconds:", task_seconds(api, run_id))
        finally:
            player.stop()

        assert set(run["tasks"].values()) == {"success"}, run["tasks"]
        # both sensors waited in the triggerer (the provider's waiter logs each poll there), watch_featurize's
        # first in the triggerer that was killed, then in its replacement
        assert second != first
        for task, log in trigger_logs.items():
            assert "Step is still in non-terminal state: RUNNING" in log, (task, log[-2000:])
        # one cluster, one pair of steps, though both creating calls lost their response
        assert proxy.count(LOST_RESPONSE, operation="RunJobFlow") == 1
        assert proxy.count(LOST_RESPONSE, operation="AddJobFlowSteps") == 1
        [cluster] = emr_backends[ACCOUNT][REGION].clusters.values()
        assert cluster.state == "TERMINATED"
        assert [(step.name.split()[0], step.state) for step in cluster.steps] == [
            ("featurize", "COMPLETED"), ("pca", "COMPLETED")]
        assert player.executed == ["featurize", "pca"] and player.errors == []
        # S3 faults reached both the DAG's boto3 calls and Spark's S3A, of both kinds
        for client in ("Boto3", "S3A"):
            assert proxy.count(SLOW_DOWN, service="s3", client=client) > 0, proxy.faults
            assert proxy.count(RESET, service="s3", client=client) > 0, proxy.faults
        # the invariant: committed features ∪ quarantine = every image under raw/, each once
        assert committed_rows(s3, BUCKET) == raw_images(s3, BUCKET)
