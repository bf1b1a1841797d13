"""Subclasses of the amazon provider's EMR operators whose retries are safe (docs/dag.md, "Retries").

- EmrCreateRunCluster: takes the live cluster tagged with this DAG run if there is one, else creates
  it; a RunJobFlow whose response is lost is looked up before it is sent again (run_clusters).
- EmrAddRunSteps: takes this run's steps if they are on the cluster already, else adds them; the
  same for a lost AddJobFlowSteps response: never a second featurize/pca pair. Also reports the
  run's datasets to the openlineage provider (fruits_emr.lineage).
- EmrStepSensorWithLogs: a failed step fails the task once (no retries) with the step's name,
  failure reason and the S3 location of its stderr/stdout; deferred, it waits in the triggerer with
  step_trigger.EmrStepThreadedTrigger (no aiobotocore).
- EmrTerminateRunClusters: the teardown ends every active cluster tagged with this DAG run: its own,
  those of earlier, cleared tries, and one a create_cluster made before it failed.
"""

from __future__ import annotations

import ast
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.hooks.emr import EmrHook
from airflow.providers.amazon.aws.links.emr import EmrClusterLink, EmrLogsLink, get_log_uri
from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
    EmrTerminateJobFlowOperator,
)
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from fruits_emr import lineage, run_clusters
from fruits_emr.emr_request import step_log_uris, tag_value
from fruits_emr.step_trigger import EmrStepThreadedTrigger


def step_failure_message(step: dict[str, Any], cluster_id: str, log_uri: str | None) -> str:
    """One message for a failed step: what failed, why, and where its logs are."""
    status = step.get("Status", {})
    details = status.get("FailureDetails") or {}
    reason = details.get("Reason") or (status.get("StateChangeReason") or {}).get("Message") or "no reason given"
    message = f"EMR step {step.get('Name', '?')!r} ({step.get('Id', '?')}) on cluster {cluster_id} ended {status.get('State')}: {reason}"
    if details.get("Message"):
        message += f" - {details['Message']}"
    if details.get("LogFile"):
        message += f"; EMR log file: {details['LogFile']}"
    if log_uri:
        logs = step_log_uris(log_uri, cluster_id, step.get("Id", "?"))
        # client deploy mode (emr_request.DEPLOY_MODE): the driver ran in the step, so its stderr is the step's
        message += (
            f"; Python traceback (driver stderr): {logs['stderr']}; stdout: {logs['stdout']};"
            f" executor logs: {logs['containers']}<application id>/ (EMR ships logs a few minutes after the step ends)"
        )
    else:
        message += "; the cluster has no LogUri, so step logs were not kept"
    return message


class EmrStepSensorWithLogs(EmrStepSensor):
    """EmrStepSensor whose failure names the step, its reason and its S3 logs, and is not retried."""

    def _fail(self, step: dict[str, Any]) -> None:
        cluster = self.hook.conn.describe_cluster(ClusterId=self.job_flow_id)["Cluster"]
        message = step_failure_message(step, self.job_flow_id, cluster.get("LogUri"))
        self.log.error(message)
        # A failed step fails again on retry; retrying would only keep the cluster up longer.
        raise AirflowFailException(message)

    def execute(self, context: Any) -> None:
        if not self.deferrable:
            return super().execute(context)
        if not self.poke(context):
            self.defer(
                # the scheduler fails the task at this timeout even if no triggerer runs the trigger
                timeout=timedelta(seconds=self.max_attempts * self.poke_interval),
                trigger=EmrStepThreadedTrigger(
                    job_flow_id=self.job_flow_id, step_id=self.step_id, waiter_delay=int(self.poke_interval),
                    waiter_max_attempts=self.max_attempts, aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name, verify=self.verify, botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
            )
        return None

    def poke(self, context: Any) -> bool:
        step = self.get_emr_response(context=context)["Step"]
        state = step["Status"]["State"]
        self.log.info("Step %s (%s) is %s", step.get("Name"), self.step_id, state)
        if state in self.target_states:
            return True
        if state in self.failed_states:
            self._fail(step)
        return False

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> None:
        if event and event.get("status") == "success":
            return super().execute_complete(context, event)
        step = self.hook.conn.describe_step(ClusterId=self.job_flow_id, StepId=self.step_id)["Step"]
        state = step["Status"]["State"]
        if state in self.failed_states:
            self._fail(step)
        if state in self.target_states:  # the wait failed (an API error), the step did not
            self.log.info("Step %s (%s) is %s", step.get("Name"), self.step_id, state)
            return None
        if "max attempts reached" in str((event or {}).get("message", "")):
            # the trigger's wait ran out: a timeout, not retried (as the sensor's own timeout in poke mode)
            raise AirflowSensorTimeout(f"EMR step {step.get('Name', '?')!r} ({self.step_id}) is still {state}"
                                       f" after {self.max_attempts * self.poke_interval:.0f} s")
        return super().execute_complete(context, event)


def _single_attempt_hook(operator: Any) -> EmrHook:
    """The operator's EMR hook, sending each request once (run_clusters.find_or_create retries)."""
    return EmrHook(aws_conn_id=operator.aws_conn_id, emr_conn_id=getattr(operator, "emr_conn_id", None),
                   region_name=operator.region_name, verify=operator.verify,
                   config=run_clusters.single_attempt(operator.botocore_config))


def _persist_links(operator: Any, context: Any, cluster_id: str) -> None:
    for link, extra in ((EmrClusterLink, {}),
                        (EmrLogsLink, {"log_uri": get_log_uri(emr_client=operator.hook.conn, job_flow_id=cluster_id)})):
        link.persist(context=context, operator=operator, region_name=operator.hook.conn_region_name,
                     aws_partition=operator.hook.conn_partition, job_flow_id=cluster_id, **extra)


class EmrCreateRunCluster(EmrCreateJobFlowOperator):
    """Create the run's cluster, or take the live one tagged with this dag_id and run_id (a retry
    after a lost response or a killed worker, a cleared task): one cluster per run. Two live ones
    (from before this operator) keep the oldest; the others are terminated at once."""

    def execute(self, context: Any) -> str:
        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        overrides = self.job_flow_overrides
        if isinstance(overrides, str):
            overrides = ast.literal_eval(overrides)
        tags = {tag["Key"]: tag["Value"] for tag in overrides.get("Tags", [])}
        if (tags.get("dag_id"), tags.get("run_id")) != (dag_id, tag_value(run_id)):
            # the lookup and the teardown find the run's clusters by these tags
            raise AirflowFailException(f"the RunJobFlow request is not tagged dag_id={dag_id}, run_id={run_id}")

        def live_cluster() -> str | None:
            live = run_clusters.run_cluster_ids(self.hook.conn, dag_id, run_id)
            if len(live) > 1:
                self.log.warning("Terminating %s: run %s needs one cluster, keeping %s", live[1:], run_id, live[0])
                self.hook.conn.terminate_job_flows(JobFlowIds=live[1:])
            if live:
                self.log.info("Cluster %s of run %s is live (an earlier try made it): not creating another",
                              live[0], run_id)
            return live[0] if live else None

        once = _single_attempt_hook(self)
        self._job_flow_id = run_clusters.find_or_create(
            live_cluster, lambda: once.create_job_flow(overrides)["JobFlowId"], "RunJobFlow")
        self.log.info("Cluster %s is run %s's", self._job_flow_id, run_id)
        _persist_links(self, context, self._job_flow_id)
        return self._job_flow_id


class EmrAddRunSteps(EmrAddStepsOperator):
    """Add the run's steps to its cluster, or take them if they are there already (same name and
    arguments, pending, running or completed): a retry never queues a second pair. Reports `datasets`
    ({"inputs": [...], "outputs": [...]} S3 URIs, from emr_request) as the task's OpenLineage inputs
    and outputs; with openlineage_inject_parent_job_info the steps name this task as their parent job
    (settings that change with each try, so the lookup leaves them out: run_clusters.same_step)."""

    template_fields = (*EmrAddStepsOperator.template_fields, "datasets")

    def __init__(self, *, datasets: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.datasets = datasets

    def execute(self, context: Any) -> list[str]:
        if not self.job_flow_id:
            raise AirflowFailException("add_steps needs the cluster id (create_cluster did not return one)")
        steps = ast.literal_eval(self.steps) if isinstance(self.steps, str) else self.steps
        if self.openlineage_inject_parent_job_info:
            steps = self._inject_openlineage_parent_job_information(steps, context)
        once = _single_attempt_hook(self)

        def queued() -> list[str] | None:
            found = run_clusters.find_run_steps(self.hook.conn, self.job_flow_id, steps)
            if found:
                self.log.info("Steps %s of this run are on %s already: not adding them again", found, self.job_flow_id)
            return found

        def add() -> list[str]:
            self.log.info("Adding steps to %s", self.job_flow_id)
            return once.conn.add_job_flow_steps(JobFlowId=self.job_flow_id, Steps=steps)["StepIds"]

        step_ids = run_clusters.find_or_create(queued, add, "AddJobFlowSteps")
        _persist_links(self, context, self.job_flow_id)
        if self.datasets:
            lineage.report_datasets(self.datasets, self.hook)
        return step_ids


class EmrTerminateRunClusters(EmrTerminateJobFlowOperator):
    """Terminate the run's cluster and every other active cluster tagged with this dag_id and run_id.

    Runs on every path but the one without images (the DAG gives it trigger rule none_skipped), also
    when create_cluster failed after RunJobFlow made a cluster, whose id never reached XCom
    (job_flow_id None)."""

    def execute(self, context: Any) -> None:
        run_id = context["run_id"]
        own = self.job_flow_id if self.job_flow_id not in (None, "", "None") else None
        others = [cid for cid in run_clusters.run_cluster_ids(self.hook.conn, context["dag"].dag_id, run_id)
                  if cid != own]
        if others:
            self.log.warning("Terminating %s, left by an earlier try of run %s or by a create_cluster that failed",
                             others, run_id)
            self.hook.conn.terminate_job_flows(JobFlowIds=others)
        if own:
            super().execute(context)
        elif not others:
            self.log.info("No cluster of run %s is active", run_id)
