"""Three small subclasses of the amazon provider's EMR operators.

- EmrAddStepsWithLineage: also reports the run's datasets to the openlineage provider (fruits_emr.lineage).
- EmrStepSensorWithLogs: a failed step fails the task once (no retries) with the step's name,
  failure reason and the S3 location of its stderr/stdout.
- EmrTerminateRunClusters: the teardown also ends clusters an earlier, cleared attempt of the
  same DAG run created, so clearing a task never leaves a cluster running until its idle timeout.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator, EmrTerminateJobFlowOperator
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.sdk.exceptions import AirflowFailException
from botocore.exceptions import ClientError

from fruits_emr import lineage
from fruits_emr.emr_request import ACTIVE_CLUSTER_STATES, step_log_uris, tag_value
from fruits_emr.settings import PROJECT_TAG


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
        if step["Status"]["State"] in self.failed_states:
            self._fail(step)
        return super().execute_complete(context, event)


class EmrAddStepsWithLineage(EmrAddStepsOperator):
    """EmrAddStepsOperator that reports `datasets` ({"inputs": [...], "outputs": [...]} S3 URIs, from
    emr_request) as the task's OpenLineage inputs and outputs."""

    template_fields = (*EmrAddStepsOperator.template_fields, "datasets")

    def __init__(self, *, datasets: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.datasets = datasets

    def execute(self, context: Any) -> list[str]:
        step_ids = super().execute(context)
        lineage.report_datasets(self.datasets, self.hook)
        return step_ids


class EmrTerminateRunClusters(EmrTerminateJobFlowOperator):
    """Terminate the run's cluster and any other active cluster tagged with this dag_id and run_id."""

    def execute(self, context: Any) -> None:
        run_id = tag_value(context["run_id"])
        dag_id = context["dag"].dag_id
        paginator = self.hook.conn.get_paginator("list_clusters")
        for page in paginator.paginate(ClusterStates=list(ACTIVE_CLUSTER_STATES)):
            for summary in page.get("Clusters", []):
                if summary["Id"] == self.job_flow_id or not summary.get("Name", "").startswith(PROJECT_TAG):
                    continue
                try:
                    described = self.hook.conn.describe_cluster(ClusterId=summary["Id"])["Cluster"]
                except ClientError as exc:
                    # the Airflow policy allows DescribeCluster on the DAG's clusters only: one it may not
                    # describe is not this run's
                    if exc.response.get("Error", {}).get("Code") not in ("AccessDenied", "AccessDeniedException"):
                        raise
                    continue
                tags = {tag["Key"]: tag["Value"] for tag in described.get("Tags", [])}
                if tags.get("dag_id") == dag_id and tags.get("run_id") == run_id:
                    self.log.warning("Terminating %s, left by an earlier attempt of run %s", summary["Id"], run_id)
                    self.hook.conn.terminate_job_flows(JobFlowIds=[summary["Id"]])
        super().execute(context)
