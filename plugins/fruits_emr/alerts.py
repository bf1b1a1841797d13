"""Failure alerts of the DAGs: one SNS message per failed run, through the amazon provider's SnsNotifier.

Two callbacks work together. Every task's `on_failure_callback` (`record_failure_reason`, run on the
worker when a task fails for good) keeps the exception's message in an XCom of that task; the DAG's
`on_failure_callback` (`RunFailureAlert`, run once per failed run by the dag-processor) reads it back
from the failed task and publishes the message. The topic comes from the Variable
fruits_features_alerts_topic (or AIRFLOW_VAR_FRUITS_FEATURES_ALERTS_TOPIC); unset, nothing is sent.
Both callbacks run after the task or run already failed: they never hold up or change a run, and
Airflow logs and swallows what they raise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

ALERTS_VARIABLE = "fruits_features_alerts_topic"
REASON_KEY = "failure_reason"
MAX_REASON_CHARS = 4000  # SNS takes 256 KB; the alert names the log for the rest
MAX_SUBJECT_CHARS = 100  # SNS's limit for e-mail subjects

log = logging.getLogger(__name__)


def record_failure_reason(context: Mapping[str, Any]) -> None:
    """Task on_failure_callback: the failed task's exception message, kept as its XCom `failure_reason`."""
    error = context.get("exception")
    reason = f"{type(error).__name__}: {error}" if error is not None else "no exception recorded"
    context["ti"].xcom_push(key=REASON_KEY, value=reason[-MAX_REASON_CHARS:])


def failure_message(context: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, message) naming the DAG, the run, the failed task, the reason it logged and its log URL.

    context: the DAG failure callback's context, whose `ti` is the task instance that failed last
    (absent when the run failed without a failed task, e.g. on a dagrun timeout)."""
    dag_id = context["dag"].dag_id
    run_id = context["run_id"]
    ti = context.get("ti")
    lines = [f"DAG: {dag_id}", f"run: {run_id}"]
    if ti is not None:
        reason = recorded_reason(ti)
        lines += [f"failed task: {ti.task_id} (try {ti.try_number})", f"reason: {reason or context.get('reason')}",
                  f"log: {ti.log_url}"]
    else:
        lines.append(f"reason: {context.get('reason')}")
    subject = f"Airflow: {dag_id} run failed" + (f" in {ti.task_id}" if ti is not None else "")
    return subject[:MAX_SUBJECT_CHARS], "\n".join(lines) + "\n"


def recorded_reason(ti: Any) -> str | None:
    """What record_failure_reason kept for the failed task, or None where it cannot be read: the
    dag-processor serves XComs to callbacks, an in-process `dag.test()` does not."""
    try:
        return ti.xcom_pull(task_ids=ti.task_id, key=REASON_KEY, map_indexes=ti.map_index)
    except Exception as exc:  # the alert still goes out, with the run's reason instead
        log.warning("could not read the reason task %s recorded (%s: %s)", ti.task_id, type(exc).__name__, exc)
        return None


class RunFailureAlert:
    """DAG on_failure_callback: publish failure_message to the topic of the Variable
    fruits_features_alerts_topic with the connection aws_conn_id; nothing when the Variable is unset."""

    def __init__(self, aws_conn_id: str):
        self.aws_conn_id = aws_conn_id

    def __call__(self, context: Mapping[str, Any]) -> None:
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier
        from airflow.sdk import Variable

        topic = (Variable.get(ALERTS_VARIABLE, default=None) or "").strip()
        if not topic:
            log.info("Variable %s is unset: no failure alert sent", ALERTS_VARIABLE)
            return
        subject, message = failure_message(context)
        # notify(), not the notifier's __call__: that would render the message as a Jinja template,
        # and an exception message may hold braces
        SnsNotifier(aws_conn_id=self.aws_conn_id, target_arn=topic, subject=subject, message=message).notify(context)
        log.info("failure alert sent to %s", topic)
