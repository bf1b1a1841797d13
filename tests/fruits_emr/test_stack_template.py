"""The CloudFormation template (cloudformation/fruits-features.json, fruits_emr.stack_template):
generated from fruits_emr.iam, lint-clean with cfn-lint, and deployable on moto's CloudFormation,
after which the DAG's first tasks run with the stack's Airflow role and IAM enforced.

moto's CloudFormation leaves out two resource types, AWS::S3::BucketPolicy and AWS::SQS::QueuePolicy
(it warns and skips them), the bucket's notification and public-access-block properties and a role's
ManagedPolicyArns; cfn-lint
checks them against CloudFormation's schemas and the bucket-policy documents are iam.py's, tested in
test_iam_policies.py. Three moto quirks are bridged here, not in the template: moto authorizes
HeadBucket as `s3:HeadBucket` (AWS: `s3:ListBucket`), it stores a role's inline policy and an
AWS::EMR::SecurityConfiguration given as objects without serializing them to JSON (its
authorization and DescribeSecurityConfiguration then fail), so the test stores them again as JSON.
"""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime

import pytest

from fruits_emr import iam, stack_template
from fruits_emr.settings import RunConfig
from tests.support import ACCOUNT, REGION, REPO_ROOT, SAMPLE
from tests.support.moto import certificate_of

STACK = "fruits"
BUCKET = "acme-fruits-stack"
WEIGHTS = "models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


def test_committed_template_is_the_generated_one():
    committed = (REPO_ROOT / stack_template.TEMPLATE_FILE).read_text()
    assert committed == stack_template.render(), (
        f"{stack_template.TEMPLATE_FILE} is out of date: python -m fruits_emr.stack_template > {stack_template.TEMPLATE_FILE}")


def test_template_lints_clean():
    from cfnlint.api import ManualArgs, lint

    text = (REPO_ROOT / stack_template.TEMPLATE_FILE).read_text()
    matches = lint(text, config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
    assert [str(match) for match in matches] == []


def test_roles_carry_the_iam_documents_with_no_second_copy():
    """Every policy document in the template is one of iam.py's, rendered with the stack's substitutions."""
    resources = stack_template.template()["Resources"]
    policy = {resource: {p["PolicyName"]: p["PolicyDocument"] for p in resources[resource]["Properties"]["Policies"]}
              for resource in ("AirflowRole", "EmrServiceRole", "EmrInstanceRole")}
    roles = stack_template.STACK_ROLES
    airflow = iam.airflow_policy(stack_template.BUCKET, stack_template.ACCOUNT, roles, queue_arn=stack_template.QUEUE_ARN)
    airflow["Statement"] += iam.alerts_statement(stack_template.TOPIC_ARN)
    assert policy["AirflowRole"] == {"fruits-airflow": stack_template.substituted(airflow)}
    assert policy["EmrInstanceRole"] == {
        "fruits-emr-nodes": stack_template.substituted(iam.instance_profile_policy(stack_template.BUCKET))}
    assert policy["EmrServiceRole"] == {"pass-the-instance-profile-role": stack_template.substituted(
        iam.emr_service_pass_role_policy(stack_template.ACCOUNT, roles))}
    assert resources["EmrServiceRole"]["Properties"]["ManagedPolicyArns"] == [{"Fn::Sub": stack_template.EMR_SERVICE_POLICY}]
    assert stack_template.EMR_SERVICE_POLICY.endswith(":policy/service-role/AmazonEMRServicePolicy_v2")
    bucket_policy = resources["DataBucketPolicy"]["Properties"]["PolicyDocument"]
    assert bucket_policy == stack_template.substituted(iam.bucket_policy(stack_template.BUCKET))
    [rule] = resources["DataBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert rule["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": RunConfig().raw_prefix}]


def _admin(service: str, endpoint: str):
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, verify=certificate_of(endpoint),
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def deploy(endpoint: str, **parameters: str) -> dict[str, str]:
    """`aws cloudformation deploy` on moto: the stack's outputs once it is CREATE_COMPLETE."""
    cfn = _admin("cloudformation", endpoint)
    cfn.create_stack(
        StackName=STACK, TemplateBody=(REPO_ROOT / stack_template.TEMPLATE_FILE).read_text(),
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    [stack] = cfn.describe_stacks(StackName=STACK)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}


def inline_policies(endpoint: str, role: str) -> dict[str, dict]:
    """A role's inline policies as moto stored them from the stack (as Python's repr of the document)."""
    client = _admin("iam", endpoint)
    return {name: ast.literal_eval(client.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
            for name in client.list_role_policies(RoleName=role)["PolicyNames"]}


def bridge_moto_quirks(endpoint: str, outputs: dict[str, str]) -> None:
    from moto.emr.models import emr_backends

    role = outputs["AirflowRoleArn"].rsplit("/", 1)[1]
    for name, document in inline_policies(endpoint, role).items():  # as JSON, which moto's authorization reads
        _admin("iam", endpoint).put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document))
    for stored in emr_backends[ACCOUNT][REGION].security_configurations.values():
        if isinstance(stored.security_configuration, dict):
            stored.security_configuration = json.dumps(stored.security_configuration)
    _admin("iam", endpoint).put_role_policy(RoleName=role, PolicyName="moto-head-bucket", PolicyDocument=json.dumps(
        {"Version": iam.VERSION, "Statement": [{"Effect": "Allow", "Action": ["s3:HeadBucket"],
                                                "Resource": [f"arn:aws:s3:::{BUCKET}"]}]}))


def worker_identity(endpoint: str, role_arn: str) -> tuple[str, dict[str, str]]:
    """An IAM user standing for the Airflow workers' own identity (its ARN and access key): it may only
    assume the role."""
    users = _admin("iam", endpoint)
    users.create_user(UserName="airflow-worker")
    users.put_user_policy(UserName="airflow-worker", PolicyName="assume-the-fruits-role", PolicyDocument=json.dumps(
        {"Version": iam.VERSION, "Statement": [{"Effect": "Allow", "Action": ["sts:AssumeRole"], "Resource": [role_arn]}]}))
    return (users.get_user(UserName="airflow-worker")["User"]["Arn"],
            users.create_access_key(UserName="airflow-worker")["AccessKey"])


@pytest.mark.tensorflow  # stage_artifacts exports the model (once per machine: the model cache)
def test_stack_deploys_on_moto_and_the_first_tasks_run_with_its_role(
        airflow_db, moto, tmp_path, monkeypatch, capfd):
    from airflow.dag_processing.dagbag import DagBag
    from moto.core.authorization import enable_iam_authentication

    from tests.support.wheels import prebuilt_cache

    # the workers' own identity, the one principal the stack lets assume the Airflow role
    worker, key = worker_identity(moto, f"arn:aws:iam::{ACCOUNT}:role/fruits-airflow")
    outputs = deploy(moto, BucketName=BUCKET, CreateEmrSecurityConfiguration="true", AirflowPrincipalArn=worker)
    defaults = json.loads(outputs["DefaultsVariable"])
    assert defaults == {"bucket": BUCKET, "service_role": "fruits-emr-service-v2", "job_flow_role": "fruits-emr-nodes",
                        "security_configuration": f"{STACK}-encryption"}
    s3 = _admin("s3", moto)
    rule = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    queue_name = outputs["EventsQueueUrl"].rsplit("/", 1)[1]  # moto's URLs name its own endpoint
    assert queue_name == f"{STACK}-{iam.QUEUE_NAME}"
    [queue_url] = _admin("sqs", moto).list_queues(QueueNamePrefix=queue_name)["QueueUrls"]
    assert outputs["AlertsTopicArn"] in {t["TopicArn"] for t in _admin("sns", moto).list_topics()["Topics"]}
    iam_admin = _admin("iam", moto)
    profile = iam_admin.get_instance_profile(InstanceProfileName=defaults["job_flow_role"])["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [defaults["job_flow_role"]]
    assert iam_admin.get_role(RoleName=defaults["service_role"])["Role"]["AssumeRolePolicyDocument"]
    queue_arn = _admin("sqs", moto).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    config = RunConfig(bucket=BUCKET, service_role=defaults["service_role"], job_flow_role=defaults["job_flow_role"])
    expected = iam.airflow_policy(BUCKET, ACCOUNT, config, queue_arn=queue_arn)
    expected["Statement"] += iam.alerts_statement(outputs["AlertsTopicArn"])
    assert inline_policies(moto, "fruits-airflow") == {"fruits-airflow": expected}
    for source in sorted(SAMPLE.glob("*/*.jpg"))[:2]:
        s3.upload_file(str(source), BUCKET, f"raw/{source.parent.name}/{source.name}")
    bridge_moto_quirks(moto, outputs)

    # the connection and the Variable exactly as docs/deploy-aws.md sets them from the outputs
    # moto's endpoint for every service; the provider's assume-role STS client takes only its own setting
    extra = {**json.loads(outputs["AirflowConnectionExtra"]), "endpoint_url": moto, "verify": certificate_of(moto),
             "service_config": {"sts": {"endpoint_url": moto}}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(
        {"conn_type": "aws", "login": key["AccessKeyId"], "password": key["SecretAccessKey"], "extra": extra}))
    monkeypatch.setenv("AWS_CA_BUNDLE", certificate_of(moto))  # the STS client takes no verify setting
    monkeypatch.setenv("AIRFLOW_VAR_FRUITS_FEATURES_DEFAULTS", outputs["DefaultsVariable"])
    monkeypatch.setenv("FRUITS_WHEELHOUSE_CACHE", str(prebuilt_cache(tmp_path / "wheelhouse", REPO_ROOT)))
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).dags["fruits_features"]
    first = dag.partial_subset(task_ids=["find_new_images"], include_upstream=True, include_downstream=False)
    assert set(first.task_dict) == {"resolve_config", "stage_artifacts", "find_new_images"}
    with enable_iam_authentication():
        run = first.test(logical_date=datetime.now(UTC),
                         run_conf={"weights": WEIGHTS, "engine": "tensorflow", "full_refresh": True})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == dict.fromkeys(first.task_dict, "success"), f"{states}\n{capfd.readouterr().out[-4000:]}"
    found = run.get_task_instance("find_new_images").xcom_pull(task_ids="find_new_images")
    assert found["images"] == 2
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert any(k.startswith("artifacts/code/") and k.endswith("/_STAGED") for k in keys)
    assert any(k.startswith("features/run_date=") and k.endswith("/manifest.txt") for k in keys)
