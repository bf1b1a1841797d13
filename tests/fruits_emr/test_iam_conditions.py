"""Every statement of the IAM documents (plugins/fruits_emr/iam.py, emr_actions.py) decided by a policy
simulator, with its conditions: tags on EMR clusters, iam:PassedToService, the attempt-only writes
of the cluster, the bucket policy's encryption and KMS key rules.

moto cannot prove these (it checks actions and resources, no conditions), so each request is
evaluated by @cloud-copilot/iam-simulate (tests/support/iam_policy_simulator.py), which is first
checked on examples AWS documents. Each request names the statement it exercises; a test fails if
a statement of a document has no request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from fruits_emr import emr_actions, iam, settings
from tests.support import ACCOUNT
from tests.support.iam_policy_simulator import ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY, Request, simulate

BUCKET = "fruits-data"
REGION = "us-east-1"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0000abcd-12ab-34cd-56ef-1234567890ab"
QUEUE = iam.queue_arn(ACCOUNT, REGION)
CLUSTER = f"arn:aws:elasticmapreduce:{REGION}:{ACCOUNT}:cluster/j-2AXXXXXXGAPLF"
NEW_CLUSTER = f"arn:aws:elasticmapreduce:{REGION}:{ACCOUNT}:cluster/*"  # what tag-on-create is authorized on
FOREIGN_ACCOUNT_CLUSTER = f"arn:aws:elasticmapreduce:{REGION}:210987654321:cluster/j-3BXXXXXXGAPLF"
NODE = f"arn:aws:sts::{ACCOUNT}:assumed-role/EMR_EC2_DefaultRole/i-0123456789abcdef0"
RUN_DATE = "2024-06-01"
ATTEMPT = f"features/run_date={RUN_DATE}/_attempts/20240602T020000000000Z"
TLS = {"aws:SecureTransport": "true"}
SSE_S3 = {**TLS, "s3:x-amz-server-side-encryption": "AES256"}
SSE_KMS = {**TLS, "s3:x-amz-server-side-encryption": "aws:kms", "s3:x-amz-server-side-encryption-aws-kms-key-id": KEY}
# the key's key policy: KMS decides on it first; the default one delegates to IAM policies
KEY_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Sid": "EnableIamUserPermissions", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
    "Action": "kms:*", "Resource": "*"}]}


def request_tags(**overrides: str | None) -> dict:
    """The context of the DAG's RunJobFlow request: its tags (emr_request.cluster_tags), overridable."""
    tags = {"project": "fruits", "dag_id": "fruits_features", "run_id": "manual__2024-06-02T00_00_00_00_00",
            "run_date": RUN_DATE, "for-use-with-amazon-emr-managed-policies": "true", **overrides}
    tags = {key: value for key, value in tags.items() if value is not None}
    return {**{f"aws:RequestTag/{key}": value for key, value in tags.items()}, "aws:TagKeys": sorted(tags)}


def resource_tags(project: str | None = "fruits", dag_id: str | None = "fruits_features") -> dict:
    return {f"aws:ResourceTag/{key}": value for key, value in (("project", project), ("dag_id", dag_id)) if value}


@dataclass(frozen=True)
class Case:
    """A request, the statement it exercises ("" for one no statement allows) and the expected decision."""

    request: Request
    statement: str
    expected: str


def airflow_cases() -> list[Case]:
    policy = iam.airflow_policy(BUCKET, ACCOUNT, kms_key_arn=KEY, queue_arn=QUEUE)
    run = emr_actions.EmrScope

    def case(id_, action, resource, statement, expected, context=None, resource_policy=None) -> Case:
        return Case(Request(f"airflow:{id_}", action, resource, [policy], context=context or {},
                            resourcePolicy=resource_policy), statement, expected)

    emr = "elasticmapreduce:"
    return [
        # S3: staging, manifests, commit pointers; never raw images, never a pointer deleted
        case("list", "s3:ListBucket", f"arn:aws:s3:::{BUCKET}", "ListAndHeadTheBucket", ALLOWED, TLS),
        case("read-report", "s3:GetObject", f"arn:aws:s3:::{BUCKET}/{ATTEMPT}/report.json",
             "ReadStagedArtifactsManifestAndReport", ALLOWED, TLS),
        case("read-raw", "s3:GetObject", f"arn:aws:s3:::{BUCKET}/raw/apple/1.jpg", "", IMPLICIT_DENY, TLS),
        case("stage", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/artifacts/code/0123/featurize.py",
             "StageArtifactsWriteManifestsAndCommit", ALLOWED, SSE_S3),
        case("manifest", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/{ATTEMPT}/manifest.txt",
             "StageArtifactsWriteManifestsAndCommit", ALLOWED, SSE_S3),
        case("commit", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/features/run_date={RUN_DATE}/_COMMITTED.json",
             "StageArtifactsWriteManifestsAndCommit", ALLOWED, SSE_S3),
        case("pca-pointer", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/features/_pca_models/_CURRENT.json",
             "StageArtifactsWriteManifestsAndCommit", ALLOWED, SSE_S3),
        case("overwrite-features-elsewhere", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/features/run_date={RUN_DATE}/x",
             "", IMPLICIT_DENY, SSE_S3),
        case("delete-old-attempt", "s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/{ATTEMPT}/features/part-0.parquet",
             "DeleteAttemptsNoLongerCommitted", ALLOWED, TLS),
        case("delete-commit", "s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/features/run_date={RUN_DATE}/_COMMITTED.json",
             "", IMPLICIT_DENY, TLS),
        # RunJobFlow: only with the DAG's tags, and no tag keys of its own
        case("run-job-flow", emr + "RunJobFlow", "*", run.CREATE.value, ALLOWED, request_tags()),
        case("run-job-flow-untagged", emr + "RunJobFlow", "*", "", IMPLICIT_DENY),
        case("run-job-flow-other-project", emr + "RunJobFlow", "*", "", IMPLICIT_DENY, request_tags(project="billing")),
        case("run-job-flow-other-dag", emr + "RunJobFlow", "*", "", IMPLICIT_DENY, request_tags(dag_id="other_dag")),
        case("run-job-flow-no-dag-tag", emr + "RunJobFlow", "*", "", IMPLICIT_DENY, request_tags(dag_id=None)),
        case("run-job-flow-extra-tag", emr + "RunJobFlow", "*", "", IMPLICIT_DENY, request_tags(owner="mallory")),
        # what RunJobFlow implies, on the cluster being created
        case("tag-on-create", emr + "AddTags", NEW_CLUSTER, run.TAG_ON_CREATE.value, ALLOWED, request_tags()),
        case("retag-other-project", emr + "AddTags", CLUSTER, "", IMPLICIT_DENY,
             {**request_tags(), **resource_tags(project="billing")}),
        case("retag-other-dag", emr + "AddTags", CLUSTER, "", IMPLICIT_DENY,
             {**request_tags(), **resource_tags(dag_id="other_dag")}),
        case("tag-with-other-tags", emr + "AddTags", NEW_CLUSTER, "", IMPLICIT_DENY, request_tags(project="billing")),
        case("auto-termination-on-create", emr + "PutAutoTerminationPolicy", NEW_CLUSTER,
             run.AUTO_TERMINATION_ON_CREATE.value, ALLOWED),
        case("auto-termination-on-dag-cluster", emr + "GetAutoTerminationPolicy", CLUSTER,
             run.AUTO_TERMINATION_ON_CREATE.value, ALLOWED, resource_tags()),
        case("auto-termination-other-project", emr + "RemoveAutoTerminationPolicy", CLUSTER, "", IMPLICIT_DENY,
             resource_tags(project="billing")),
        # every later call: the DAG's clusters only
        *(case(f"{name}-dag-cluster", emr + name, CLUSTER, run.DAG_CLUSTERS.value, ALLOWED, resource_tags())
          for name in ("DescribeCluster", "AddJobFlowSteps", "ListSteps", "DescribeStep", "TerminateJobFlows")),
        *(case(f"{name}-{label}", emr + name, CLUSTER, "", IMPLICIT_DENY, tags)
          for name in ("AddJobFlowSteps", "ListSteps", "TerminateJobFlows")
          for label, tags in (("untagged", {}), ("other-project", resource_tags(project="billing")),
                              ("other-dag", resource_tags(dag_id="other_dag")),
                              ("project-only", resource_tags(dag_id=None)))),
        case("terminate-other-account", emr + "TerminateJobFlows", FOREIGN_ACCOUNT_CLUSTER, "", IMPLICIT_DENY,
             resource_tags()),
        case("set-termination-protection", emr + "SetTerminationProtection", CLUSTER, "", IMPLICIT_DENY,
             resource_tags()),
        case("list-clusters", emr + "ListClusters", "*", run.ACCOUNT_WIDE.value, ALLOWED),
        case("security-configuration", emr + "DescribeSecurityConfiguration", "*", run.ACCOUNT_WIDE.value, ALLOWED),
        # PassRole: the two roles, each to its service only
        case("pass-service-role", "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/EMR_DefaultRole_V2",
             "PassTheServiceRoleToEmrOnly", ALLOWED, {"iam:PassedToService": iam.EMR_SERVICE}),
        case("pass-service-role-to-ec2", "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/EMR_DefaultRole_V2",
             "", IMPLICIT_DENY, {"iam:PassedToService": iam.EC2_SERVICE}),
        case("pass-node-role", "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/EMR_EC2_DefaultRole",
             "PassTheNodeRoleToEc2Only", ALLOWED, {"iam:PassedToService": iam.EC2_SERVICE}),
        case("pass-node-role-to-lambda", "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/EMR_EC2_DefaultRole",
             "", IMPLICIT_DENY, {"iam:PassedToService": "lambda.amazonaws.com"}),
        case("pass-admin-role", "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/Admin", "", IMPLICIT_DENY,
             {"iam:PassedToService": iam.EMR_SERVICE}),
        # the outputs' KMS key and the events queue, nothing else of either service
        case("kms-generate", "kms:GenerateDataKey", KEY, "UseTheOutputKmsKeyOnly", ALLOWED, None, KEY_POLICY),
        case("kms-other-key", "kms:Decrypt", OTHER_KEY, "", IMPLICIT_DENY, None, KEY_POLICY),
        case("sqs-receive", "sqs:ReceiveMessage", QUEUE, "ConsumeTheS3EventsQueue", ALLOWED),
        case("sqs-purge", "sqs:PurgeQueue", QUEUE, "", IMPLICIT_DENY),
    ]


def node_cases() -> list[Case]:
    policy = iam.instance_profile_policy(BUCKET, kms_key_arn=KEY)

    def case(id_, action, key, statement, expected, context=None, resource=None) -> Case:
        return Case(Request(f"node:{id_}", action, resource or f"arn:aws:s3:::{BUCKET}/{key}", [policy],
                            principal=NODE, context=context if context is not None else SSE_S3,
                            resourcePolicy=KEY_POLICY if action.startswith("kms:") else None), statement, expected)

    pca_attempt = "features/_pca_models/_attempts/20240602T020000000000Z"
    return [
        case("list", "s3:ListBucket", "", "ListTheBucket", ALLOWED, TLS, f"arn:aws:s3:::{BUCKET}"),
        case("read-image", "s3:GetObject", "raw/apple/1.jpg", "ReadImagesCodeModelsAndFeatures", ALLOWED, TLS),
        case("read-code", "s3:GetObject", "artifacts/code/0123/spark_jobs.zip", "ReadImagesCodeModelsAndFeatures",
             ALLOWED, TLS),
        case("read-committed-features", "s3:GetObject", "features/run_date=2024-05-31/_attempts/a/features/p.parquet",
             "ReadImagesCodeModelsAndFeatures", ALLOWED, TLS),
        case("write-features", "s3:PutObject", f"{ATTEMPT}/features/part-0.parquet", "WriteOnlyIntoAttemptFolders",
             ALLOWED),
        case("spark-overwrite", "s3:DeleteObject", f"{ATTEMPT}/features/_temporary/0", "WriteOnlyIntoAttemptFolders",
             ALLOWED, TLS),
        case("write-pca-model", "s3:PutObject", f"{pca_attempt}/pca_model.json", "WriteOnlyIntoAttemptFolders",
             ALLOWED),
        case("rewrite-commit", "s3:PutObject", f"features/run_date={RUN_DATE}/_COMMITTED.json", "NeverTheCommitPointers",
             EXPLICIT_DENY),
        case("delete-commit", "s3:DeleteObject", f"features/run_date={RUN_DATE}/_COMMITTED.json",
             "NeverTheCommitPointers", EXPLICIT_DENY, TLS),
        case("rewrite-pca-pointer", "s3:PutObject", "features/_pca_models/_CURRENT.json", "NeverTheCommitPointers",
             EXPLICIT_DENY),
        case("write-beside-attempts", "s3:PutObject", f"features/run_date={RUN_DATE}/planted.parquet", "",
             IMPLICIT_DENY),
        case("write-old-pca-version", "s3:PutObject", "features/_pca_models/v0001/pca_model.json", "", IMPLICIT_DENY),
        case("plant-image", "s3:PutObject", "raw/apple/planted.jpg", "", IMPLICIT_DENY),
        case("replace-code", "s3:PutObject", "artifacts/code/0123/featurize.py", "", IMPLICIT_DENY),
        case("ship-logs", "s3:PutObject", "emr-logs/j-1/node/i-1/bootstrap.log.gz", "ShipEmrLogs", ALLOWED, TLS),
        case("kms-decrypt", "kms:Decrypt", "", "UseTheOutputKmsKeyOnly", ALLOWED, {}, KEY),
    ]


def bucket_cases() -> list[Case]:
    """The bucket policy with SSE-KMS, for a principal whose identity policy allows the upload."""
    policy = iam.bucket_policy(BUCKET, kms_key_arn=KEY)
    writer = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}

    def case(id_, key, statement, expected, context, action="s3:PutObject") -> Case:
        return Case(Request(f"bucket:{id_}", action, f"arn:aws:s3:::{BUCKET}/{key}", [writer], context=context,
                            resourcePolicy=policy), statement, expected)

    kms = "s3:x-amz-server-side-encryption"
    key_id = "s3:x-amz-server-side-encryption-aws-kms-key-id"
    return [
        case("the-key", f"{ATTEMPT}/manifest.txt", "", ALLOWED, SSE_KMS),
        case("plain-http", f"{ATTEMPT}/manifest.txt", "DenyInsecureTransport", EXPLICIT_DENY,
             {**SSE_KMS, "aws:SecureTransport": "false"}),
        case("plain-http-read", "raw/apple/1.jpg", "DenyInsecureTransport", EXPLICIT_DENY,
             {"aws:SecureTransport": "false"}, action="s3:GetObject"),
        case("unknown-encryption", "emr-logs/x", "DenyUnknownEncryption", EXPLICIT_DENY, {**TLS, kms: "ROT13"}),
        case("no-encryption", "artifacts/code/0123/featurize.py", "DenyUnencryptedPipelineUploads", EXPLICIT_DENY, TLS),
        case("another-key", f"{ATTEMPT}/manifest.txt", "DenyPipelineUploadsUnderAnotherKmsKey", EXPLICIT_DENY,
             {**SSE_KMS, key_id: OTHER_KEY}),
        case("an-alias-not-the-arn", f"{ATTEMPT}/manifest.txt", "DenyPipelineUploadsUnderAnotherKmsKey",
             EXPLICIT_DENY, {**SSE_KMS, key_id: "alias/fruits-outputs"}),
        case("sse-s3-under-kms", f"{ATTEMPT}/manifest.txt", "DenyPipelineUploadsNotUnderSseKms", EXPLICIT_DENY, SSE_S3),
        case("aws-managed-key", f"{ATTEMPT}/manifest.txt", "DenyPipelineUploadsUnderTheAwsManagedKey", EXPLICIT_DENY,
             {**TLS, kms: "aws:kms"}),
        case("logs-by-default-encryption", "emr-logs/j-1/steps/s-1/stderr.gz", "", ALLOWED, TLS),
        case("logs-asking-sse-s3", "emr-logs/j-1/steps/s-1/stdout.gz", "", ALLOWED, SSE_S3),
    ]


def aws_documented_cases() -> list[Case]:
    """The simulator against examples whose outcome AWS documents, before it judges our policies.

    - EMR Management Guide, "IAM policies for tag-based access to clusters and EMR notebooks":
      actions only on clusters tagged department=dev (StringEquals on elasticmapreduce:ResourceTag);
      RunJobFlow only with the tag department=dev in the request (elasticmapreduce:RequestTag);
      the Null operator: any cluster that has a department tag, whatever its value.
      https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-fine-grained-cluster-access.html
    - IAM User Guide, condition operators: "...IfExists" is true when the key is absent; a negated
      operator (StringNotEquals) is true when the key is absent, so a Deny with it applies.
      https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
    - IAM User Guide, policy evaluation logic: an explicit Deny overrides any Allow.
      https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
    """
    def policy(*statements: dict) -> dict:
        return {"Version": "2012-10-17", "Statement": list(statements)}

    dev_clusters = policy({"Effect": "Allow", "Action": ["elasticmapreduce:DescribeCluster",
                                                        "elasticmapreduce:TerminateJobFlows"],
                           "Resource": ["*"], "Condition": {"StringEquals": {
                               "elasticmapreduce:ResourceTag/department": "dev"}}})
    dev_create = policy({"Effect": "Allow", "Action": ["elasticmapreduce:RunJobFlow"], "Resource": ["*"],
                         "Condition": {"StringEquals": {"elasticmapreduce:RequestTag/department": "dev"}}})
    any_department = policy({"Effect": "Allow", "Action": ["elasticmapreduce:DescribeCluster"], "Resource": ["*"],
                             "Condition": {"Null": {"elasticmapreduce:ResourceTag/department": "false"}}})
    if_exists = policy({"Effect": "Allow", "Action": ["elasticmapreduce:DescribeCluster"], "Resource": ["*"],
                        "Condition": {"StringEqualsIfExists": {"aws:ResourceTag/department": "dev"}}})
    deny_other_key = policy(
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/*"},
        {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/*",
         "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": KEY}}})

    def case(id_, action, resource, policy_, context, expected) -> Case:
        return Case(Request(f"aws-doc:{id_}", action, resource, [policy_], context=context), "", expected)

    dept = "elasticmapreduce:ResourceTag/department"
    return [
        case("dev-cluster", "elasticmapreduce:DescribeCluster", CLUSTER, dev_clusters, {dept: "dev"}, ALLOWED),
        case("test-cluster", "elasticmapreduce:TerminateJobFlows", CLUSTER, dev_clusters, {dept: "test"}, IMPLICIT_DENY),
        case("untagged-cluster", "elasticmapreduce:DescribeCluster", CLUSTER, dev_clusters, {}, IMPLICIT_DENY),
        case("create-dev", "elasticmapreduce:RunJobFlow", "*", dev_create,
             {"elasticmapreduce:RequestTag/department": "dev"}, ALLOWED),
        case("create-untagged", "elasticmapreduce:RunJobFlow", "*", dev_create, {}, IMPLICIT_DENY),
        case("null-any-value", "elasticmapreduce:DescribeCluster", CLUSTER, any_department, {dept: "finance"}, ALLOWED),
        case("null-no-tag", "elasticmapreduce:DescribeCluster", CLUSTER, any_department, {}, IMPLICIT_DENY),
        case("if-exists-absent", "elasticmapreduce:DescribeCluster", CLUSTER, if_exists, {}, ALLOWED),
        case("if-exists-other", "elasticmapreduce:DescribeCluster", CLUSTER, if_exists,
             {"aws:ResourceTag/department": "test"}, IMPLICIT_DENY),
        case("negated-absent-denies", "s3:PutObject", "arn:aws:s3:::b/k", deny_other_key, {}, EXPLICIT_DENY),
        case("deny-overrides-allow", "s3:PutObject", "arn:aws:s3:::b/k", deny_other_key,
             {"s3:x-amz-server-side-encryption-aws-kms-key-id": OTHER_KEY}, EXPLICIT_DENY),
        case("matching-key-allowed", "s3:PutObject", "arn:aws:s3:::b/k", deny_other_key,
             {"s3:x-amz-server-side-encryption-aws-kms-key-id": KEY}, ALLOWED),
    ]


CASES = {"aws-documented": aws_documented_cases, "airflow": airflow_cases, "node": node_cases,
         "bucket": bucket_cases}


@pytest.fixture(scope="module")
def decisions() -> dict[str, str]:
    """All requests of this module in one simulator run (one Node process, well under a second)."""
    return simulate([case.request for make in CASES.values() for case in make()])


@pytest.mark.parametrize("group", list(CASES))
def test_each_request_gets_the_expected_decision(decisions, group):
    wrong = {case.request.id: (decisions[case.request.id], case.expected) for case in CASES[group]()
             if decisions[case.request.id] != case.expected}
    assert wrong == {}, f"(got, expected): {json.dumps(wrong, indent=1)}"


@pytest.mark.parametrize(("group", "document"), [
    ("airflow", iam.airflow_policy(BUCKET, ACCOUNT, kms_key_arn=KEY, queue_arn=QUEUE)),
    ("node", iam.instance_profile_policy(BUCKET, kms_key_arn=KEY)),
    ("bucket", iam.bucket_policy(BUCKET, kms_key_arn=KEY)),
])
def test_every_statement_is_exercised(group, document):
    """Each statement decides at least one request here: allows it (Allow statements) or denies it."""
    exercised = {case.statement for case in CASES[group]() if case.statement}
    assert exercised == {statement["Sid"] for statement in document["Statement"]}


def test_local_compute_mode_writes_what_the_cluster_writes_and_no_pointer_more(decisions):
    """FRUITS_COMPUTE_MODE=local: the worker runs the jobs with the Airflow identity."""
    policy = iam.airflow_policy(BUCKET, ACCOUNT, settings.RunConfig(bucket=BUCKET), local_compute=True)
    pca = "features/_pca_models/_attempts/a/pca_model.json"
    results = simulate([
        Request("local:read-raw", "s3:GetObject", f"arn:aws:s3:::{BUCKET}/raw/apple/1.jpg", [policy], context=TLS),
        Request("local:write-pca-model", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/{pca}", [policy], context=SSE_S3),
        Request("local:spark-delete", "s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/{pca}", [policy], context=TLS),
        Request("local:delete-pointer", "s3:DeleteObject",
                f"arn:aws:s3:::{BUCKET}/features/_pca_models/_CURRENT.json", [policy], context=TLS),
    ])
    assert results == {"local:read-raw": ALLOWED, "local:write-pca-model": ALLOWED, "local:spark-delete": ALLOWED,
                       "local:delete-pointer": IMPLICIT_DENY}


def test_account_wide_emr_actions_say_why():
    wide = {name: action for name, action in emr_actions.EMR_ACTIONS.items()
            if action.scope is emr_actions.EmrScope.ACCOUNT_WIDE}
    assert set(wide) == {"ListClusters", "DescribeSecurityConfiguration"}
    assert all(len(action.why_account_wide) > 40 for action in wide.values())
    assert not any(action.why_account_wide for action in emr_actions.EMR_ACTIONS.values()
                   if action.scope is not emr_actions.EmrScope.ACCOUNT_WIDE)


def test_bucket_policy_without_kms_takes_sse_s3_and_refuses_no_encryption():
    policy = iam.bucket_policy(BUCKET)
    assert not [s for s in policy["Statement"] if "Kms" in s["Sid"]]
    writer = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}

    def put(id_, key, context):
        return Request(f"sse-s3:{id_}", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/{key}", [writer], context=context,
                       resourcePolicy=policy)

    assert simulate([put("aes256", f"{ATTEMPT}/manifest.txt", SSE_S3), put("kms", f"{ATTEMPT}/m.txt", SSE_KMS),
                     put("none", f"{ATTEMPT}/manifest.txt", TLS), put("logs", "emr-logs/j-1/x.gz", TLS)]) == {
        "sse-s3:aes256": ALLOWED, "sse-s3:kms": ALLOWED, "sse-s3:none": EXPLICIT_DENY, "sse-s3:logs": ALLOWED}
