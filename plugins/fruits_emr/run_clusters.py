"""This DAG run's EMR clusters and steps, found again by the run's tags and the steps' own
definitions, so that the calls that create them (RunJobFlow, AddJobFlowSteps: neither takes an
idempotency token) are safe to retry.

- `run_cluster_ids`: the active clusters tagged with the run's dag_id and run_id (ListClusters,
  then DescribeCluster for the tags: the only calls IAM lets the identity make on its clusters).
- `find_run_steps`: the run's steps on its cluster (ListSteps, by name and arguments: the arguments
  name the attempt folder, so an earlier attempt's steps never match).
- `find_or_create`: look, create with one request, and when its response is lost (connection
  reset, timeout, a 5xx, throttling) look again before sending it again. The SDK's own retries
  are off for the creating call (`single_attempt`): botocore would re-send a RunJobFlow whose
  response was lost and start a second cluster before any lookup could run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from fruits_emr.emr_request import ACTIVE_CLUSTER_STATES, tag_value
from fruits_emr.settings import PROJECT_TAG

log = logging.getLogger(__name__)

T = TypeVar("T")

# A step in one of these states is doing or has done the run's work; a FAILED, CANCELLED or
# INTERRUPTED one has not, and a cleared add_steps queues the pair again.
LIVE_STEP_STATES = ("PENDING", "RUNNING", "COMPLETED")
DENIED = ("AccessDenied", "AccessDeniedException")
# error responses that may follow a request the service did carry out, or did not get to
THROTTLED_OR_SERVER = ("ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
                       "InternalServerError", "InternalFailure", "ServiceUnavailable")
CREATE_ATTEMPTS = 3
BACKOFF_SECONDS = 2.0  # doubled after each lost response: the lookup then sees what the call did


def single_attempt(config: Config | Mapping[str, Any] | None = None) -> Config:
    """A botocore config that sends each request once: the caller looks before it sends again."""
    base = config if isinstance(config, Config) else Config(**(config or {}))
    return base.merge(Config(retries={"total_max_attempts": 1}))


def response_lost(error: BaseException) -> bool:
    """True when the call may or may not have been carried out: no response came (connection
    reset, timeout), or a throttling or server error came instead of one."""
    if isinstance(error, (BotocoreConnectionError, HTTPClientError)):
        return True
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or error.response.get("Error", {}).get("Code") in THROTTLED_OR_SERVER
    return False


def find_or_create(find: Callable[[], T | None], create: Callable[[], T], what: str,
                   attempts: int = CREATE_ATTEMPTS, backoff_seconds: float = BACKOFF_SECONDS) -> T:
    """What find() finds, else what create() makes. A create whose response is lost is followed by
    find() again before it is sent again, so a lost success is found and never made twice; after
    `attempts` lost responses the last error is raised (the task's retry starts with find() too).
    create() must send a single request (`single_attempt`)."""
    lost: Exception | None = None
    for attempt in range(attempts + 1):
        found = find()
        if found is not None:
            if lost is not None:
                log.warning("%s: the request whose response was lost had been carried out: %s", what, found)
            return found
        if lost is not None and attempt == attempts:
            raise lost
        try:
            return create()
        except Exception as error:
            if not response_lost(error):
                raise
            lost = error
            delay = backoff_seconds * 2 ** attempt
            log.warning("%s: no response (%s); looking for what it made in %.0f s before sending it again"
                        " (attempt %d of %d)", what, error, delay, attempt + 1, attempts)
            time.sleep(delay)
    raise AssertionError("find_or_create: attempts must be at least 1")


def run_cluster_ids(conn: Any, dag_id: str, run_id: str) -> list[str]:
    """Active clusters tagged with this dag_id and run_id, oldest first."""
    run_tag = tag_value(run_id)
    found = []
    for page in conn.get_paginator("list_clusters").paginate(ClusterStates=list(ACTIVE_CLUSTER_STATES)):
        for summary in page.get("Clusters", []):
            if not summary.get("Name", "").startswith(PROJECT_TAG):
                continue
            try:
                described = conn.describe_cluster(ClusterId=summary["Id"])["Cluster"]
            except ClientError as exc:
                # the Airflow policy allows DescribeCluster on the DAG's clusters only: one it may not
                # describe is not this run's
                if exc.response.get("Error", {}).get("Code") not in DENIED:
                    raise
                continue
            tags = {tag["Key"]: tag["Value"] for tag in described.get("Tags", [])}
            if tags.get("dag_id") == dag_id and tags.get("run_id") == run_tag:
                created = described.get("Status", {}).get("Timeline", {}).get("CreationDateTime")
                found.append((created.timestamp() if created else 0.0, summary["Id"]))
    return [cluster_id for _, cluster_id in sorted(found)]


def _step_arguments(args: Iterable[str]) -> list[str]:
    """A step's arguments without the OpenLineage settings the provider may add on each try."""
    args = list(args)
    kept, index = [], 0
    while index < len(args):
        if args[index] == "--conf" and index + 1 < len(args) and args[index + 1].startswith("spark.openlineage."):
            index += 2
            continue
        kept.append(args[index])
        index += 1
    return kept


def same_step(listed: Mapping[str, Any], step: Mapping[str, Any]) -> bool:
    """A ListSteps entry is the step definition: same name, jar and arguments."""
    config, jar_step = listed.get("Config", {}), step.get("HadoopJarStep", {})
    return (listed.get("Name") == step.get("Name") and config.get("Jar") == jar_step.get("Jar")
            and _step_arguments(config.get("Args", [])) == _step_arguments(jar_step.get("Args", [])))


def find_run_steps(conn: Any, cluster_id: str, steps: list[Mapping[str, Any]]) -> list[str] | None:
    """Ids of these steps on the cluster (each the first queued of its kind that is pending, running or
    completed), in the order given; None unless every one of them is there."""
    listed = [step for page in conn.get_paginator("list_steps").paginate(ClusterId=cluster_id,
                                                                         StepStates=list(LIVE_STEP_STATES))
              for step in page.get("Steps", [])]
    listed.reverse()  # ListSteps answers newest first
    found = []
    for step in steps:
        match = next((entry for entry in listed if same_step(entry, step)), None)
        if match is None:
            return None
        found.append(match["Id"])
    return found
