"""The EMR APIs the Airflow identity may call, each with its scoping: one line per action.

fruits_emr.iam renders them into the Airflow policy, one statement per scope:
- RunJobFlow only with the DAG's tags in the request (aws:RequestTag; EMR also knows
  elasticmapreduce:RequestTag, the older key);
- the actions RunJobFlow implies (tag-on-create, the auto-termination policy) only where no
  other project's or DAG's tags are;
- every later call only on clusters carrying the DAG's tags (aws:ResourceTag);
- the two actions IAM defines no resource for, with the reason that is acceptable.
Condition keys and resource types per action: the Service Authorization Reference,
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticmapreduce.html
(RunJobFlow: no resource type, aws:RequestTag/aws:TagKeys; the cluster resource: aws:ResourceTag;
ListClusters and DescribeSecurityConfiguration: no resource type).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from fruits_emr.emr_request import cluster_tags
from fruits_emr.settings import DAG_ID, PROJECT_TAG


class EmrScope(Enum):
    """Which clusters an EMR action of the Airflow identity may touch (one policy statement each)."""

    # RunJobFlow: only a request carrying the DAG's tags (and no tag keys but the DAG's)
    CREATE = "CreateClustersOnlyWithTheDagTags"
    # authorized as part of RunJobFlow with Tags (tag-on-create): the request's tags are the DAG's,
    # and a cluster that already carries another project or DAG id may not be re-tagged
    TAG_ON_CREATE = "TagOnlyNewClustersWithTheDagTags"
    # authorized as part of RunJobFlow with an AutoTerminationPolicy, on the cluster being created:
    # refused on any cluster that carries another project or DAG id
    AUTO_TERMINATION_ON_CREATE = "AutoTerminationOnlyOnClustersWithoutOtherTags"
    # every later call: only clusters carrying the DAG's tags
    DAG_CLUSTERS = "OnlyClustersCarryingTheDagTags"
    # no IAM resource type: Resource must be "*" (each entry says why that is acceptable)
    ACCOUNT_WIDE = "NoResourceTypeInIam"


@dataclass(frozen=True)
class EmrAction:
    """One EMR API the Airflow identity is allowed: its scope and who needs it."""

    scope: EmrScope
    caller: str
    implied: bool = False  # authorized as part of RunJobFlow, not called by the DAG itself
    why_account_wide: str = ""


# Every EMR API the DAG calls (tests/fruits_emr/test_iam_policies.py checks the table against the
# code, and each statement against a policy simulator). Adding one is one line here.
EMR_ACTIONS: dict[str, EmrAction] = {
    "RunJobFlow": EmrAction(EmrScope.CREATE, "EmrCreateJobFlowOperator (EmrHook.create_job_flow)"),
    "AddTags": EmrAction(EmrScope.TAG_ON_CREATE, "RunJobFlow with Tags (tag-on-create is authorized as AddTags)",
                         implied=True),
    "PutAutoTerminationPolicy": EmrAction(EmrScope.AUTO_TERMINATION_ON_CREATE, "RunJobFlow with AutoTerminationPolicy",
                                          implied=True),
    "GetAutoTerminationPolicy": EmrAction(EmrScope.AUTO_TERMINATION_ON_CREATE, "RunJobFlow with AutoTerminationPolicy",
                                          implied=True),
    "RemoveAutoTerminationPolicy": EmrAction(EmrScope.AUTO_TERMINATION_ON_CREATE,
                                             "RunJobFlow with AutoTerminationPolicy", implied=True),
    "DescribeCluster": EmrAction(EmrScope.DAG_CLUSTERS,
                                 "operator links (get_log_uri), EmrStepSensorWithLogs, validate_outputs,"
                                 " run_clusters.run_cluster_ids (the run's tags: create_cluster, teardown)"),
    "AddJobFlowSteps": EmrAction(EmrScope.DAG_CLUSTERS, "EmrAddRunSteps"),
    "ListSteps": EmrAction(EmrScope.DAG_CLUSTERS, "EmrAddRunSteps (run_clusters.find_run_steps: the run's steps"
                                                  " before adding them)"),
    "DescribeStep": EmrAction(EmrScope.DAG_CLUSTERS, "EmrStepSensorWithLogs / EmrStepThreadedTrigger"),
    "TerminateJobFlows": EmrAction(EmrScope.DAG_CLUSTERS, "EmrTerminateRunClusters, EmrCreateRunCluster (a second"
                                                          " live cluster of the run)"),
    "ListClusters": EmrAction(
        EmrScope.ACCOUNT_WIDE, "run_clusters.run_cluster_ids (create_cluster's lookup, the teardown's sweep)",
        why_account_wide="IAM defines no resource for ListClusters; it returns ids, names and states only, and"
                         " what the teardown does next (DescribeCluster, TerminateJobFlows) is tag-scoped"),
    "DescribeSecurityConfiguration": EmrAction(
        EmrScope.ACCOUNT_WIDE, "resolve_config checks Param security_configuration exists",
        why_account_wide="security configurations are no IAM resource type; the call reads a configuration's"
                         " encryption settings, which hold no keys or data"),
}
# Authorized as part of RunJobFlow, not called by the DAG itself (the static call check skips them).
IMPLIED_BY_RUN_JOB_FLOW = tuple(name for name, action in EMR_ACTIONS.items() if action.implied)


def dag_tags(dag_id: str = DAG_ID) -> dict[str, str]:
    """The tags that make a cluster the DAG's: every cluster it creates carries them (emr_request.cluster_tags)."""
    return {"project": PROJECT_TAG, "dag_id": dag_id}


def dag_tag_keys() -> list[str]:
    """Every tag key the DAG's RunJobFlow request sends."""
    return [tag["Key"] for tag in cluster_tags(DAG_ID, "run", "2024-01-01")]


def emr_statements(account: str, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
    """One statement per EmrScope that has actions, in the EmrScope order."""
    clusters = [f"arn:aws:elasticmapreduce:*:{account}:cluster/*"]
    tags = dag_tags(dag_id)
    request_tags = {f"aws:RequestTag/{key}": value for key, value in tags.items()}
    resource_tags = {f"aws:ResourceTag/{key}": value for key, value in tags.items()}
    only_dag_keys = {"ForAllValues:StringEquals": {"aws:TagKeys": dag_tag_keys()}}
    shapes: dict[EmrScope, tuple[Any, dict[str, Any]]] = {
        EmrScope.CREATE: ("*", {"StringEquals": request_tags, **only_dag_keys}),
        EmrScope.TAG_ON_CREATE: (clusters, {"StringEquals": request_tags, **only_dag_keys,
                                            "StringEqualsIfExists": resource_tags}),
        EmrScope.AUTO_TERMINATION_ON_CREATE: (clusters, {"StringEqualsIfExists": resource_tags}),
        EmrScope.DAG_CLUSTERS: (clusters, {"StringEquals": resource_tags}),
        EmrScope.ACCOUNT_WIDE: ("*", {}),
    }
    statements = []
    for scope, (resource, condition) in shapes.items():
        actions = [f"elasticmapreduce:{name}" for name, action in EMR_ACTIONS.items() if action.scope is scope]
        if actions:
            statements.append({"Sid": scope.value, "Effect": "Allow", "Action": actions, "Resource": resource,
                               **({"Condition": condition} if condition else {})})
    return statements
