"""The least-privilege IAM documents (plugins/fruits_emr/iam.py, iam/*.json) against the DAG's real AWS calls.

moto enforces identity policies once INITIAL_NO_AUTH_ACTION_COUNT is reached (here: enabled per test
with moto.core.authorization.enable_iam_authentication): S3 per action and object/bucket ARN, EMR
per action only (resource "*"). It does not check iam:PassRole on RunJobFlow, nor conditions of
identity policies. Two moto quirks are bridged in the policy given to moto, not in the real one:
- moto names HEAD bucket `s3:HeadBucket`; AWS authorizes HeadBucket as `s3:ListBucket`;
- moto authorizes DeleteObjects against the bucket ARN; AWS checks `s3:DeleteObject` per key;
- moto names SQS batch calls `sqs:DeleteMessageBatch` / `sqs:SendMessageBatch`; AWS authorizes them as
  `sqs:DeleteMessage` / `sqs:SendMessage`;
- moto authorizes EMR calls against Resource "*" only; AWS checks the cluster ARN (and the tag
  conditions, which tests/fruits_emr/test_iam_conditions.py decides with a policy simulator).
"""

from __future__ import annotations

import ast
import copy
import inspect
import json
import re
import shutil
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import boto3  # noqa: E402
import botocore.exceptions as botocore_exceptions  # noqa: E402
import pytest
from moto.core.authorization import enable_iam_authentication  # noqa: E402

from fruits_emr import (
    artifacts,
    commits,
    coverage,
    emr_actions,
    emr_request,
    iam,
    layout,
    preflight,
    run_clusters,
    selection,
    settings,
    staging,
    validation,
)
from fruits_emr.s3_objects import RunOutputError
from tests.support import REPO_ROOT
from tests.support.moto import running_moto_server  # noqa: E402
from tests.support.pipeline import PipelineRun
from tests.support.wheels import probe_builder  # noqa: E402

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
BUCKET = "fruits-data"
RUN_DATE = "2024-06-01"


# --- the documents in iam/ --------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(iam.DOCUMENTS))
def test_iam_files_are_the_rendered_documents(name):
    path = REPO_ROOT / "iam" / name
    assert path.read_text() == iam.render(name), (
        f"iam/{name} is out of date: regenerate it with"
        f" python -c \"from fruits_emr import iam; print(iam.render('{name}'), end='')\" > iam/{name}"
    )


def statements(policy: dict) -> list[dict]:
    return policy["Statement"]


def test_airflow_policy_is_scoped_to_the_bucket_prefixes_and_two_roles():
    config = settings.RunConfig(bucket=BUCKET, service_role="FruitsEmrService", job_flow_role="FruitsEmrNodes")
    policy = iam.airflow_policy(BUCKET, ACCOUNT, config)
    for statement in statements(policy):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(action.endswith("*") for action in actions), statement  # no wildcard actions
        if any(action.startswith("s3:") for action in actions):
            assert all(res == f"arn:aws:s3:::{BUCKET}" or res.startswith(f"arn:aws:s3:::{BUCKET}/") for res in
                       statement["Resource"]), statement
            assert f"arn:aws:s3:::{BUCKET}/*" not in statement["Resource"]  # prefixes, never the whole bucket
    pass_role = [(s["Resource"], s["Condition"]) for s in statements(policy) if s["Action"] == ["iam:PassRole"]]
    assert pass_role == [
        ([f"arn:aws:iam::{ACCOUNT}:role/FruitsEmrService"], {"StringEquals": {"iam:PassedToService": iam.EMR_SERVICE}}),
        ([f"arn:aws:iam::{ACCOUNT}:role/FruitsEmrNodes"], {"StringEquals": {"iam:PassedToService": iam.EC2_SERVICE}})]
    writable = {res for s in statements(policy) if "s3:PutObject" in s["Action"] for res in s["Resource"]}
    objects = f"arn:aws:s3:::{BUCKET}/"
    assert writable == {objects + "artifacts/*", objects + "features/run_date=*/_attempts/*",
                        objects + "features/run_date=*/_COMMITTED.json", objects + "features/_pca_models/_CURRENT.json"}
    deletable = {res for s in statements(policy) if "s3:DeleteObject" in s["Action"] for res in s["Resource"]}
    assert deletable == {objects + "features/run_date=*/_attempts/*"}
    # every EMR statement but the two account-wide reads is scoped by the DAG's tags
    for statement in statements(policy):
        if statement["Action"][0].startswith("elasticmapreduce:") and statement["Sid"] != "NoResourceTypeInIam":
            assert "aws:RequestTag/dag_id" in json.dumps(statement["Condition"]) or (
                "aws:ResourceTag/dag_id" in json.dumps(statement["Condition"])), statement


def test_instance_profile_policy_reads_inputs_and_writes_only_outputs_and_logs():
    policy = iam.instance_profile_policy(BUCKET, settings.RunConfig(bucket=BUCKET))
    by_action: dict[str, set[str]] = {}
    for statement in statements(policy):
        if statement["Effect"] == "Deny":
            continue
        for action in statement["Action"]:
            by_action.setdefault(action, set()).update(statement["Resource"])
    objects = f"arn:aws:s3:::{BUCKET}/"
    attempts = {objects + "features/run_date=*/_attempts/*", objects + "features/_pca_models/_attempts/*"}
    assert by_action["s3:GetObject"] == {objects + p for p in ("raw/*", "artifacts/*", "features/*")}
    assert by_action["s3:PutObject"] == attempts | {objects + "emr-logs/*"}
    assert by_action["s3:DeleteObject"] == attempts
    assert set(by_action) == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject",
                              "s3:DeleteObject", "s3:AbortMultipartUpload"}
    [deny] = [s for s in statements(policy) if s["Effect"] == "Deny"]
    assert (deny["Action"], set(deny["Resource"])) == (["s3:PutObject", "s3:DeleteObject"], {
        objects + "features/run_date=*/_COMMITTED.json", objects + "features/_pca_models/_CURRENT.json"})


def test_bucket_policy_denies_plain_http_and_unencrypted_uploads():
    policy = iam.bucket_policy(BUCKET)
    tls, encryption, unencrypted = statements(policy)
    assert (tls["Effect"], tls["Action"], tls["Condition"]) == ("Deny", "s3:*", {"Bool": {"aws:SecureTransport": "false"}})
    assert set(tls["Resource"]) == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"}
    assert encryption["Effect"] == "Deny" and encryption["Action"] == "s3:PutObject"
    assert "aws:kms" in encryption["Condition"]["StringNotEquals"]["s3:x-amz-server-side-encryption"]
    assert encryption["Condition"]["Null"] == {"s3:x-amz-server-side-encryption": "false"}  # only a header sent
    # what the pipeline writes must ask for encryption; every writer of it sends the header
    assert (unencrypted["Effect"], unencrypted["Action"]) == ("Deny", "s3:PutObject")
    assert unencrypted["Condition"] == {"Null": {"s3:x-amz-server-side-encryption": "true"}}
    assert set(unencrypted["Resource"]) == {f"arn:aws:s3:::{BUCKET}/artifacts/*", f"arn:aws:s3:::{BUCKET}/features/*"}


def test_kms_key_use_is_granted_on_that_key_only():
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    for policy in (iam.airflow_policy(BUCKET, ACCOUNT, kms_key_arn=key), iam.instance_profile_policy(BUCKET, kms_key_arn=key)):
        [kms] = [s for s in statements(policy) if any(a.startswith("kms:") for a in s["Action"])]
        assert (kms["Action"], kms["Resource"]) == (["kms:GenerateDataKey", "kms:Decrypt"], [key])
    for policy in (iam.airflow_policy(BUCKET, ACCOUNT), iam.instance_profile_policy(BUCKET)):  # SSE-S3: no KMS
        assert not [a for s in statements(policy) for a in s["Action"] if a.startswith("kms:")]


def test_cli_renders_a_document_for_an_account(capsys):
    assert iam.main(["airflow", "--bucket", "acme-fruits", "--account", "111122223333"]) == 0
    policy = json.loads(capsys.readouterr().out)
    assert "arn:aws:iam::111122223333:role/EMR_DefaultRole" in json.dumps(policy)
    assert "<bucket>" not in json.dumps(policy)


# --- every EMR API the DAG calls is in the policy ----------------------------------------------

def emr_calls_in(source: str, operations: set[str]) -> set[str]:
    """EMR client methods called in source: .describe_cluster(...), get_paginator("list_clusters"), get_waiter(...)."""
    tree = ast.parse(textwrap.dedent(source))
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name in ("get_paginator",) and node.args and isinstance(node.args[0], ast.Constant):
                name = node.args[0].value
            if name in operations:
                called.add(name)
    return called


def test_every_emr_call_of_the_dag_is_allowed():
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model("emr")
    operations = {xform_name(op): op for op in model.operation_names}
    from airflow.providers.amazon.aws.hooks.emr import EmrHook
    from airflow.providers.amazon.aws.links import emr as emr_links
    from airflow.providers.amazon.aws.operators.emr import EmrCreateJobFlowOperator, EmrTerminateJobFlowOperator
    from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor

    from fruits_emr import commits, operators, preflight, run_clusters, selection, staging, step_trigger

    sources = [
        (REPO_ROOT / "dags" / "fruits_features.py").read_text(),
        *(inspect.getsource(module) for module in (operators, run_clusters, step_trigger, preflight, staging,
                                                   selection, validation, commits)),
        # the provider code the operators still call (EmrCreateRunCluster and EmrAddRunSteps replace
        # the provider's execute with their look-then-create one)
        inspect.getsource(EmrCreateJobFlowOperator.on_kill),
        inspect.getsource(EmrTerminateJobFlowOperator.execute),
        inspect.getsource(EmrStepSensor.get_emr_response),
        inspect.getsource(EmrHook.create_job_flow),
        inspect.getsource(emr_links.get_log_uri),
    ]
    called = set().union(*(emr_calls_in(source, set(operations)) for source in sources))
    # the deferred sensors' trigger polls with the provider's waiter: its operation is a call too
    waiters = json.loads(Path(inspect.getfile(EmrHook)).parent.parent.joinpath("waiters", "emr.json").read_text())
    trigger = step_trigger.EmrStepThreadedTrigger(job_flow_id="j-1", step_id="s-1")
    called.add(xform_name(waiters["waiters"][trigger.waiter_name]["operation"]))
    # the scan really found the calls (it fails if the code or the provider changes shape)
    assert {"run_job_flow", "add_job_flow_steps", "list_steps", "describe_step", "describe_cluster", "list_clusters",
            "terminate_job_flows", "describe_security_configuration"} <= called
    needed = {operations[name] for name in called}
    allowed = {a.removeprefix("elasticmapreduce:") for s in statements(iam.airflow_policy(BUCKET, ACCOUNT))
               for a in s["Action"] if a.startswith("elasticmapreduce:")}
    assert needed <= allowed, f"EMR APIs the DAG calls but iam.EMR_ACTIONS lacks: {sorted(needed - allowed)}"
    # authorized as part of RunJobFlow (Tags, AutoTerminationPolicy); nothing else unused
    assert allowed - needed == set(emr_actions.IMPLIED_BY_RUN_JOB_FLOW)


def test_airflow_policy_allows_what_run_job_flow_implies():
    """RunJobFlow with Tags and an AutoTerminationPolicy is authorized as AddTags and the
    auto-termination actions too; the request the DAG sends has both."""
    config = settings.RunConfig(bucket=BUCKET)
    paths = layout.run_paths(config, "2024-06-01", "a1")
    staged = artifacts.code_layout(BUCKET, "artifacts/", "0" * 16, "imagenet", wheelhouse="s3://b/w/")
    request = emr_request.job_flow_overrides(config, paths, staged, "fruits_features", "manual__1")
    assert request["Tags"] and request["AutoTerminationPolicy"]["IdleTimeout"] > 0
    allowed = {a for s in statements(iam.airflow_policy(BUCKET, ACCOUNT)) for a in s["Action"]}
    for action in ("AddTags", "PutAutoTerminationPolicy", "GetAutoTerminationPolicy", "RemoveAutoTerminationPolicy"):
        assert f"elasticmapreduce:{action}" in allowed
    # the service role passed is AWS's current default, EMR_DefaultRole_V2
    pass_role = next(s for s in statements(iam.airflow_policy(BUCKET, ACCOUNT)) if s["Action"] == ["iam:PassRole"])
    assert f"arn:aws:iam::{ACCOUNT}:role/EMR_DefaultRole_V2" in pass_role["Resource"]


# --- the policy against moto, with IAM enforcement ---------------------------------------------

@pytest.fixture(scope="module")
def endpoint():
    with running_moto_server() as url:
        yield url


def moto_policy(policy: dict) -> dict:
    """The policy as moto needs it to authorize what AWS authorizes (see the module docstring)."""
    policy = copy.deepcopy(policy)
    for statement in statements(policy):
        if "s3:ListBucket" in statement["Action"]:
            statement["Action"].append("s3:HeadBucket")
        if "s3:DeleteObject" in statement["Action"]:
            statement["Resource"].append(f"arn:aws:s3:::{BUCKET}")
        if statement["Action"][0].startswith("elasticmapreduce:"):
            statement["Resource"] = "*"
        for single in ("sqs:DeleteMessage", "sqs:SendMessage"):
            if single in statement["Action"]:
                statement["Action"].append(f"{single}Batch")
    return policy


def client(service: str, endpoint: str, key: dict | None = None):
    credentials = (
        {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
        if key else {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    )
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, **credentials)


def make_repo(root: Path) -> Path:
    """A minimal deployable checkout for stage_artifacts."""
    (root / "spark_jobs").mkdir(parents=True)
    for name in ("__init__.py", "featurize.py", "pca.py"):
        (root / "spark_jobs" / name).write_text(f"# {name}\n")
    (root / "emr").mkdir()
    for name in ("bootstrap.sh", "hashed-requirements-emr.txt", "hashed-requirements-emr-tensorflow.txt"):
        shutil.copy(REPO_ROOT / "emr" / name, root / "emr" / name)
    (root / "models").mkdir()
    (root / "models" / "w.h5").write_bytes(b"weights")
    return root


@pytest.fixture
def airflow_key(endpoint):
    """A fresh moto with the bucket, a few raw images and an IAM user holding only the Airflow policy."""
    import requests

    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    admin = client("s3", endpoint)
    for bucket in (BUCKET, "someone-elses-bucket"):
        admin.create_bucket(Bucket=bucket)
    for name in ("apple/1.jpg", "lemon/2.jpg"):
        admin.put_object(Bucket=BUCKET, Key=f"raw/{name}", Body=b"jpeg")
    user = client("iam", endpoint)
    user.create_user(UserName="fruits-airflow")
    user.put_user_policy(UserName="fruits-airflow", PolicyName="fruits-airflow",
                         PolicyDocument=json.dumps(moto_policy(iam.airflow_policy(BUCKET, ACCOUNT))))
    return user.create_access_key(UserName="fruits-airflow")["AccessKey"]


def denied(call, *args, **kwargs) -> str:
    """'AccessDenied' when the call is refused for lack of permission (moto's EMR answers a bare 403)."""
    with pytest.raises(botocore_exceptions.ClientError) as raised:
        call(*args, **kwargs)
    response = raised.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403, response
    code = response["Error"]["Code"]
    return "AccessDenied" if code in ("AccessDenied", "AccessDeniedException", "403") else code


def test_dag_s3_and_emr_calls_pass_with_only_the_airflow_policy(endpoint, airflow_key, tmp_path):
    config = settings.RunConfig(bucket=BUCKET, weights="models/w.h5", engine="tensorflow", full_refresh=True,
                           security_configuration="fruits-at-rest")
    paths = layout.run_paths(config, RUN_DATE, "20240602T02Z")
    failed = layout.run_paths(config, RUN_DATE, "20240602T01Z")
    repo = make_repo(tmp_path)
    admin = client("s3", endpoint)
    admin.put_object(Bucket=BUCKET, Key=failed.attempt_key + "features/part-0.parquet", Body=b"partial")
    client("emr", endpoint).create_security_configuration(Name="fruits-at-rest", SecurityConfiguration=json.dumps(
        {"EncryptionConfiguration": {"EnableInTransitEncryption": False, "EnableAtRestEncryption": True,
                                     "AtRestEncryptionConfiguration": {
                                         "S3EncryptionConfiguration": {"EncryptionMode": "SSE-S3"}}}}))
    iam_admin = client("iam", endpoint)
    iam_admin.create_user(UserName="fruits-cluster")
    iam_admin.put_user_policy(UserName="fruits-cluster", PolicyName="fruits-cluster", PolicyDocument=json.dumps(
        moto_policy(iam.instance_profile_policy(BUCKET, config))))
    cluster_key = iam_admin.create_access_key(UserName="fruits-cluster")["AccessKey"]
    with enable_iam_authentication():
        s3 = client("s3", endpoint, airflow_key)
        preflight.check_bucket(s3, BUCKET)
        build, _ = probe_builder(tmp_path / "wheels")
        staged, uploaded = staging.stage_artifacts(s3, config, repo, build)
        assert len(uploaded) == 7  # weights, 4 bundle files, 1 wheel and the wheelhouse's hash file
        assert staging.stage_artifacts(s3, config, repo, build)[1] == []  # second run: head_object finds the markers
        # a whole run's S3 calls with the Airflow key: selection (listing raw/, the ledger), the plan,
        # validation, the commit's conditional writes and its clean-up; the stand-in jobs play the cluster
        # with the instance profile's policy (it writes only attempt folders)
        run = PipelineRun(s3, config, "manual__1", None, None, datetime.now(UTC),
                          cluster_s3=client("s3", endpoint, cluster_key)).run()
        assert run.commit is not None and (run.selection.files, run.selection.images) == (2, 2)
        assert selection.read_manifest(s3, BUCKET, run.selection.paths.manifest_key) == [
            f"s3://{BUCKET}/raw/apple/1.jpg", f"s3://{BUCKET}/raw/lemon/2.jpg"]
        assert commits.committed_output(s3, config, run.selection.paths.run_date)["attempt"] == run.selection.paths.attempt
        assert coverage.measure(s3, config).counts["committed"] == 2
        # an attempt of no known run is never deleted by a commit (it may be another run's, still writing)
        assert s3.list_objects_v2(Bucket=BUCKET, Prefix=failed.attempt_key)["KeyCount"] == 1

        emr_client = client("emr", endpoint, airflow_key)
        preflight.check_security_configuration(emr_client, config.security_configuration)
        overrides = emr_request.job_flow_overrides(config, paths, staged, settings.DAG_ID, "manual__1")
        cluster_id = emr_client.run_job_flow(**overrides)["JobFlowId"]
        steps = emr_request.spark_steps(config, paths, staged)
        step_ids = emr_client.add_job_flow_steps(JobFlowId=cluster_id, Steps=steps)["StepIds"]
        # the lookups that make create_cluster and add_steps safe to retry
        assert run_clusters.run_cluster_ids(emr_client, settings.DAG_ID, "manual__1") == [cluster_id]
        assert run_clusters.find_run_steps(emr_client, cluster_id, steps) == step_ids
        assert emr_client.describe_step(ClusterId=cluster_id, StepId=step_ids[0])["Step"]["Name"] == f"featurize {RUN_DATE}"
        assert emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"]["LogUri"] == paths.log_uri
        listed = emr_client.get_paginator("list_clusters").paginate(ClusterStates=list(emr_request.ACTIVE_CLUSTER_STATES))
        assert cluster_id in {c["Id"] for page in listed for c in page["Clusters"]}
        emr_client.terminate_job_flows(JobFlowIds=[cluster_id])


def test_calls_outside_the_airflow_policy_are_denied(endpoint, airflow_key):
    with enable_iam_authentication():
        s3 = client("s3", endpoint, airflow_key)
        assert denied(s3.put_object, Bucket="someone-elses-bucket", Key="features/x", Body=b"x") == "AccessDenied"
        assert denied(s3.put_object, Bucket=BUCKET, Key="raw/apple/planted.jpg", Body=b"x") == "AccessDenied"
        assert denied(s3.put_object, Bucket=BUCKET, Key="outside/x", Body=b"x") == "AccessDenied"
        assert denied(s3.get_object, Bucket=BUCKET, Key="raw/apple/1.jpg") == "AccessDenied"  # Airflow only lists raw/
        assert denied(s3.list_objects_v2, Bucket="someone-elses-bucket") == "AccessDenied"
        assert denied(s3.delete_bucket, Bucket=BUCKET) == "AccessDenied"
        assert denied(s3.delete_object, Bucket=BUCKET, Key="raw/apple/1.jpg") == "AccessDenied"
        assert denied(s3.put_bucket_policy, Bucket=BUCKET, Policy="{}") == "AccessDenied"
        emr_client = client("emr", endpoint, airflow_key)
        assert denied(emr_client.set_termination_protection, JobFlowIds=["j-1"], TerminationProtected=True) == (
            "AccessDenied")
        assert denied(emr_client.cancel_steps, ClusterId="j-1", StepIds=["s-1"]) == "AccessDenied"
        assert denied(client("iam", endpoint, airflow_key).create_user, UserName="x") == "AccessDenied"
    # the denials came from the policy, not from broken credentials: the same calls pass for an admin
    client("s3", endpoint).put_object(Bucket=BUCKET, Key="outside/x", Body=b"x")


def test_commit_reports_attempts_it_could_not_delete(endpoint, airflow_key):
    """DeleteObjects answers 200 with per-key errors; the commit must say so, not leave stale attempts silently."""
    import requests

    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    admin = client("s3", endpoint)
    admin.create_bucket(Bucket=BUCKET)
    config = settings.RunConfig(bucket=BUCKET)
    paths, earlier = (layout.run_paths(config, RUN_DATE, a) for a in ("20240602T02Z", "20240602T01Z"))
    admin.put_object(Bucket=BUCKET, Key=earlier.manifest_key, Body=b"old")
    admin.put_object(Bucket=BUCKET, Key=earlier.attempt_file_key, Body=json.dumps({"dag_run_id": "manual__1"}).encode())
    iam_client = client("iam", endpoint)
    iam_client.create_user(UserName="writer")
    iam_client.put_user_policy(UserName="writer", PolicyName="no-delete", PolicyDocument=json.dumps(
        {"Version": iam.VERSION, "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{BUCKET}"]},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": [f"arn:aws:s3:::{BUCKET}/features/*"]},
        ]}))
    key = iam_client.create_access_key(UserName="writer")["AccessKey"]
    with enable_iam_authentication():
        with pytest.raises(RunOutputError, match=re.escape(
                f"Could not delete old attempts under s3://{BUCKET}/{paths.attempts_key}: 2 objects not deleted")):
            # the run's own earlier attempt is finished (this one is committing): the commit deletes it
            commits.delete_finished_attempts(client("s3", endpoint, key), paths, "manual__1", {paths.attempt}, None)


def test_event_driven_calls_pass_with_only_the_airflow_policy(endpoint, monkeypatch):
    """The watcher (receive, delete), an event run (list raw/, read committed partitions, send back
    what it leaves) and nothing more on the queue, with the policy's SQS statement for that queue."""
    import asyncio

    import requests

    from fruits_emr import events

    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    queue_arn = iam.queue_arn(ACCOUNT, REGION)
    admin_s3, admin_sqs = client("s3", endpoint), client("sqs", endpoint)
    admin_s3.create_bucket(Bucket=BUCKET)
    queue_url = admin_sqs.create_queue(QueueName=iam.QUEUE_NAME)["QueueUrl"]
    other_url = admin_sqs.create_queue(QueueName="someone-elses-queue")["QueueUrl"]
    admin_s3.put_bucket_notification_configuration(Bucket=BUCKET,
                                                   NotificationConfiguration=iam.notification_configuration(queue_arn))
    for name in ("apple/1.jpg", "lemon/2.jpg", "mango/3.jpg"):
        admin_s3.put_object(Bucket=BUCKET, Key=f"raw/{name}", Body=name.encode())
    users = client("iam", endpoint)
    users.create_user(UserName="fruits-airflow")
    users.put_user_policy(UserName="fruits-airflow", PolicyName="fruits-airflow", PolicyDocument=json.dumps(
        moto_policy(iam.airflow_policy(BUCKET, ACCOUNT, queue_arn=queue_arn))))
    key = users.create_access_key(UserName="fruits-airflow")["AccessKey"]
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": key["AccessKeyId"], "password": key["SecretAccessKey"],
        "extra": {"endpoint_url": endpoint, "region_name": REGION}}))

    with enable_iam_authentication():
        trigger = events.watcher_trigger(events.EventSettings(queue_url=queue_url, debounce_seconds=0, poll_seconds=1))

        async def first_event():
            runner = trigger.run()
            event = await asyncio.wait_for(runner.__anext__(), timeout=60)
            await runner.aclose()
            return event

        bodies = [m["Body"] for m in asyncio.run(first_event()).payload["message_batch"]]
        s3, sqs = client("s3", endpoint, key), client("sqs", endpoint, key)
        config = settings.RunConfig(bucket=BUCKET)
        found = selection.event_images(s3, config, bodies, 2, datetime.now(UTC))
        assert len(found.images) == 2 and len(found.requeue) == 1
        events.requeue(sqs, queue_url, found.requeue)
        paths = layout.run_paths(config, found.run_date, "20240602T02Z")
        selection.write_images(s3, paths, found.images, settings.sse_arguments(config))
        assert denied(sqs.send_message, QueueUrl=other_url, MessageBody="x") == "AccessDenied"
        assert denied(sqs.receive_message, QueueUrl=other_url) == "AccessDenied"
        assert denied(sqs.purge_queue, QueueUrl=queue_url) == "AccessDenied"
    assert len(admin_sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]) == 1
