"""The run settings, S3 layout, EMR request bodies, PCA plan and run checks of plugins/fruits_emr (pure functions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import botocore.session
import pytest
from botocore.validate import ParamValidator

from fruits_emr import (
    artifacts,
    commits,
    cost,
    emr_request,
    layout,
    local_steps,
    pca_plan,
    pca_pointer,
    selection,
    settings,
    validation,
)
from fruits_emr.params import param_specs
from fruits_emr.settings import ConfigError, RunConfig
from fruits_emr.task_records import CorpusDate
from local_spark import s3a
from local_spark.jvm_options import local_jvm_options
from model_export import export_model, model_identity
from spark_jobs import featurize, pca
from tests.support import REPO_ROOT, run_summary

ENV = {}  # no FRUITS_* variables: code defaults
DEFAULTS = settings.parse_time_defaults(ENV)
EMR_MODEL = botocore.session.get_session().get_service_model("emr")

NON_DEFAULT = {
    "bucket": "fruits-prod-data",
    "raw_prefix": "landing/images",
    "output_prefix": "derived/features",
    "k": 12,
    "model": "resnet50",
    "alpha": 0.5,
    "image_size": 160,
    "weights": "s3://fruits-prod-data/artifacts/weights/resnet50.h5",
    "engine": "tensorflow",
    "arrow_batch_size": 64,
    "release_label": "emr-7.8.0",
    "master_instance_type": "m6i.2xlarge",
    "core_instance_types": ["r5.xlarge"],
    "core_instance_count": 7,
    "use_spot": False,
    "idle_timeout_minutes": 15,
    "full_refresh": True,
    "subnet_id": "subnet-0abc1234",
    "service_role": "FruitsEmrServiceRole",
    "job_flow_role": "FruitsEmrInstanceProfile",
    "kms_key_id": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "security_configuration": "fruits-at-rest",
}
ATTEMPT = "20240602T010203000004Z"
WHEELHOUSE = "s3://fruits-data/artifacts/wheelhouse/00aa11bb22cc33dd/"


def resolve(params: dict, variable: dict | None = None) -> RunConfig:
    return settings.resolve_run_config({**DEFAULTS, **params}, DEFAULTS, variable)[0]


def build(config: RunConfig, run_date: str = "2024-06-01"):
    """The requests as the DAG builds them after stage_artifacts (which exports a model for onnxruntime)."""
    paths = layout.run_paths(config, run_date, ATTEMPT)
    model = f"s3://{config.bucket}/artifacts/models/fedcba9876543210/model.onnx" if config.engine == "onnxruntime" else ""
    staged = artifacts.code_layout(config.bucket, config.artifacts_prefix, "0123456789abcdef", config.weights, model, WHEELHOUSE)
    overrides = emr_request.job_flow_overrides(config, paths, staged, "fruits_features", "scheduled__2024-06-01T00:00:00+00:00")
    return paths, staged, overrides, emr_request.spark_steps(config, paths, staged)


def enum_violations(value, shape, where="") -> list[str]:
    """botocore's client-side validation does not check enums; the EMR API does."""
    problems = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            problems += enum_violations(item, shape.members[key], f"{where}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            problems += enum_violations(item, shape.member, f"{where}[{index}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for item in value.values():
            problems += enum_violations(item, shape.value, where)
    elif getattr(shape, "enum", None) and value not in shape.enum:
        problems.append(f"{where}={value!r} not in {shape.enum}")
    return problems


def assert_valid(operation: str, request: dict) -> None:
    shape = EMR_MODEL.operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()
    assert enum_violations(request, shape) == []


@pytest.mark.parametrize("params", [{"bucket": "fruits-data"}, NON_DEFAULT], ids=["defaults", "non-default"])
def test_requests_pass_botocore_validation(params):
    config = resolve(params)
    _, _, overrides, steps = build(config)
    assert_valid("RunJobFlow", overrides)
    assert_valid("AddJobFlowSteps", {"JobFlowId": "j-1", "Steps": steps})


@pytest.mark.parametrize("params", [{"bucket": "fruits-data"}, NON_DEFAULT], ids=["defaults", "non-default"])
def test_requests_are_accepted_by_emr_api(params, emr_client):
    """run_job_flow / add_job_flow_steps against moto: botocore's full request path and moto's parser."""
    config = resolve(params)
    _, _, overrides, steps = build(config)
    cluster_id = emr_client.run_job_flow(**overrides)["JobFlowId"]
    step_ids = emr_client.add_job_flow_steps(JobFlowId=cluster_id, Steps=steps)["StepIds"]
    assert len(step_ids) == 2
    cluster = emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["ReleaseLabel"] == config.release_label
    assert cluster["LogUri"] == f"s3://{config.bucket}/emr-logs/"
    assert {t["Key"]: t["Value"] for t in cluster["Tags"]}["project"] == "fruits"
    listed = emr_client.list_steps(ClusterId=cluster_id)["Steps"]
    assert sorted(s["Name"] for s in listed) == ["featurize 2024-06-01", "pca 2024-06-01"]


def test_default_cluster_shape():
    config = resolve({"bucket": "fruits-data"})
    paths, staged, overrides, _ = build(config)
    fleets = {f["InstanceFleetType"]: f for f in overrides["Instances"]["InstanceFleets"]}
    assert fleets["MASTER"]["TargetOnDemandCapacity"] == 1
    assert fleets["CORE"]["TargetSpotCapacity"] == 2 and fleets["CORE"]["TargetOnDemandCapacity"] == 0
    assert fleets["CORE"]["LaunchSpecifications"]["SpotSpecification"]["TimeoutAction"] == "SWITCH_TO_ON_DEMAND"
    assert [c["InstanceType"] for c in fleets["CORE"]["InstanceTypeConfigs"]] == ["m5.xlarge", "m5a.xlarge", "m6i.xlarge"]
    assert overrides["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert overrides["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert overrides["ReleaseLabel"] == "emr-7.12.0"
    # AWS's current default service role; its managed policy acts only on tagged resources
    assert (overrides["ServiceRole"], overrides["JobFlowRole"]) == ("EMR_DefaultRole_V2", "EMR_EC2_DefaultRole")
    code = "s3://fruits-data/artifacts/code/0123456789abcdef/"
    assert overrides["BootstrapActions"][0]["ScriptBootstrapAction"] == {
        "Path": f"{code}bootstrap.sh",
        "Args": [WHEELHOUSE],
    }
    by_class = {c["Classification"]: c for c in overrides["Configurations"]}
    assert by_class["spark-env"]["Configurations"][0]["Properties"]["PYSPARK_PYTHON"] == "/usr/bin/python3.11"
    assert by_class["spark-defaults"]["Properties"]["spark.executorEnv.PYSPARK_PYTHON"] == "/usr/bin/python3.11"
    assert by_class["spark-defaults"]["Properties"]["spark.sql.execution.arrow.maxRecordsPerBatch"] == "128"
    assert overrides["Tags"] == [
        {"Key": "project", "Value": "fruits"},
        {"Key": "dag_id", "Value": "fruits_features"},
        {"Key": "run_id", "Value": "scheduled__2024-06-01T00:00:00+00:00"},
        {"Key": "run_date", "Value": "2024-06-01"},
        {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"},
    ]
    assert "Ec2SubnetIds" not in overrides["Instances"]
    # Spark's S3 writes are encrypted (SSE-S3 by default) by EMRFS and by S3A alike; no security configuration
    assert by_class["emrfs-site"]["Properties"] == {"fs.s3.enableServerSideEncryption": "true"}
    assert by_class["core-site"]["Properties"] == {"fs.s3a.encryption.algorithm": "AES256"}
    assert "SecurityConfiguration" not in overrides


def test_kms_key_and_security_configuration_reach_the_cluster_and_the_puts():
    key = NON_DEFAULT["kms_key_id"]
    _, _, overrides, _ = build(resolve({**NON_DEFAULT, "security_configuration": ""}))
    by_class = {c["Classification"]: c["Properties"] for c in overrides["Configurations"] if "Properties" in c}
    assert by_class["emrfs-site"] == {"fs.s3.enableServerSideEncryption": "true",
                                      "fs.s3.serverSideEncryption.kms.keyId": key}
    assert by_class["core-site"] == {"fs.s3a.encryption.algorithm": "SSE-KMS", "fs.s3a.encryption.key": key}
    assert "SecurityConfiguration" not in overrides
    # with a security configuration its S3 encryption rules: no emrfs-site / core-site keys that could
    # override it (EMR 7.10+ maps EMRFS settings to S3A only where the S3A keys are unset)
    config = resolve(NON_DEFAULT)
    _, _, overrides, _ = build(config)
    assert overrides["SecurityConfiguration"] == "fruits-at-rest"
    classes = {c["Classification"] for c in overrides["Configurations"]}
    assert classes == {"spark-env", "spark-defaults"}
    sent = json.dumps(overrides["Configurations"])
    assert "fs.s3" not in sent and key not in sent
    assert settings.sse_arguments(config) == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key}
    assert settings.sse_arguments(resolve({"bucket": "b1x"})) == {"ServerSideEncryption": "AES256"}


def test_attempts_are_separate_folders_and_the_commit_pointer_names_one():
    config = resolve({"bucket": "fruits-data", "output_prefix": "derived/features"})
    stamp = datetime(2024, 6, 2, 1, 2, 3, 4, UTC)
    first = layout.run_paths(config, "2024-06-01", layout.new_attempt_id(stamp))
    second = layout.run_paths(config, "2024-06-01", "20240602T090000000000Z")
    assert first.attempt.startswith(f"{ATTEMPT}-") and layout.new_attempt_id(stamp) != first.attempt  # unique
    assert first.output_uri == f"s3://fruits-data/derived/features/run_date=2024-06-01/_attempts/{first.attempt}"
    assert first.output_uri != second.output_uri and first.commit_uri == second.commit_uri == (
        "s3://fruits-data/derived/features/run_date=2024-06-01/_COMMITTED.json")
    assert first.report_key.startswith(first.attempt_key) and first.manifest_key.startswith(first.attempt_key)
    record = commits.commit_record(first, run_summary(files=43, images=41, features_rows=40, quarantined=1, ignored=2, k=7),
                                   "manual__1", datetime(2024, 6, 2, 2, tzinfo=UTC))
    assert (record.attempt, record.output, record.features) == (first.attempt, first.output_uri,
                                                                first.output_uri + "/features")
    assert (record.files, record.images, record.features_rows, record.quarantined, record.ignored, record.k) == (
        43, 41, 40, 1, 2, 7)
    with pytest.raises(ValueError, match="not a plain folder name"):
        layout.run_paths(config, "2024-06-01", "../escape")


def test_non_default_cluster_shape():
    config = resolve(NON_DEFAULT)
    _, _, overrides, _ = build(config)
    core = overrides["Instances"]["InstanceFleets"][1]
    assert (core["TargetOnDemandCapacity"], core["TargetSpotCapacity"]) == (7, 0)
    # use_spot=false: still an allocation strategy (a fleet without one takes at most 5 types)
    assert core["LaunchSpecifications"] == {"OnDemandSpecification": {"AllocationStrategy": "lowest-price"}}
    assert overrides["Instances"]["Ec2SubnetIds"] == ["subnet-0abc1234"]
    assert overrides["AutoTerminationPolicy"] == {"IdleTimeout": 900}
    assert overrides["LogUri"] == "s3://fruits-prod-data/emr-logs/"
    assert overrides["JobFlowRole"] == "FruitsEmrInstanceProfile"


def test_steps_submit_staged_code_to_run_date_partition():
    config = resolve({"bucket": "fruits-data"})
    paths, staged, _, steps = build(config, "2024-06-01")
    featurize_args, pca_args = (step["HadoopJarStep"]["Args"] for step in steps)
    for args, script in ((featurize_args, staged.featurize_py), (pca_args, staged.pca_py)):
        # client mode: the driver runs in the step on the on-demand primary, its stderr is the step's
        assert args[:5] == ["spark-submit", "--deploy-mode", "client", "--py-files", staged.py_files]
        assert args[5] == script
        # into the attempt's own folder, which readers never see before commit_outputs
        assert args[args.index("--output") + 1] == f"s3://fruits-data/features/run_date=2024-06-01/_attempts/{ATTEMPT}"
    assert featurize_args[featurize_args.index("--manifest") + 1] == (
        f"s3://fruits-data/features/run_date=2024-06-01/_attempts/{ATTEMPT}/manifest.txt")
    assert featurize_args[featurize_args.index("--allowed-prefix") + 1] == "s3://fruits-data/raw/"
    assert {step["ActionOnFailure"] for step in steps} == {"CANCEL_AND_WAIT"}
    assert {step["HadoopJarStep"]["Jar"] for step in steps} == {"command-runner.jar"}


@pytest.mark.parametrize("params", [{"bucket": "fruits-data"}, NON_DEFAULT], ids=["defaults", "non-default"])
def test_step_arguments_accepted_by_job_parsers(params):
    """Each step's arguments after the script parse with the job's own argument parser."""
    config = resolve(params)
    paths, staged, _, steps = build(config)
    parsers = {staged.featurize_py: featurize.build_parser(), staged.pca_py: pca.build_parser()}
    parsed = {}
    for step in steps:
        args = step["HadoopJarStep"]["Args"]
        script_at = next(i for i, arg in enumerate(args) if arg in parsers)
        parsed[args[script_at]] = parsers[args[script_at]].parse_args(args[script_at + 1:])
    job, reduction = parsed[staged.featurize_py], parsed[staged.pca_py]
    assert job.manifest == paths.manifest_uri and job.images is None
    assert job.output == reduction.output == paths.output_uri
    assert (job.engine, job.arrow_batch_size) == (config.engine, config.arrow_batch_size)
    if config.engine == "onnxruntime":
        assert job.model_artifact == staged.model_artifact != ""
    else:
        assert job.model_artifact is None
        assert (job.model, job.alpha, job.image_size, job.weights) == (
            config.model, config.alpha, config.image_size, config.weights)
    assert (reduction.k, reduction.variance if config.k is None else None) == (
        config.k, config.variance if config.k is None else None)


MODEL = "s3://fruits-data/artifacts/models/0123456789abcdef/model.onnx"


def build_onnx(config: RunConfig, run_date: str = "2024-06-01"):
    """As stage_artifacts leaves it for engine onnxruntime: an exported model staged."""
    paths = layout.run_paths(config, run_date, ATTEMPT)
    staged = artifacts.code_layout(config.bucket, config.artifacts_prefix, "0123456789abcdef", config.weights, MODEL, WHEELHOUSE)
    overrides = emr_request.job_flow_overrides(config, paths, staged, "fruits_features", "manual__1")
    return paths, staged, overrides, emr_request.spark_steps(config, paths, staged)


def test_onnx_steps_pass_the_exported_model_and_parse_with_featurize():
    config = resolve({"bucket": "fruits-data", "arrow_batch_size": 64})
    paths, staged, overrides, steps = build_onnx(config)
    assert_valid("AddJobFlowSteps", {"JobFlowId": "j-1", "Steps": steps})
    args = steps[0]["HadoopJarStep"]["Args"]
    parsed = featurize.build_parser().parse_args(args[args.index(staged.featurize_py) + 1:])
    assert (parsed.model_artifact, parsed.engine, parsed.arrow_batch_size) == (MODEL, "onnxruntime", 64)
    assert parsed.manifest == paths.manifest_uri and parsed.output == paths.output_uri
    # the settings live in the model's sidecar only; the cluster gets the light requirements only
    assert "--weights" not in args and "--model" not in args
    assert overrides["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"] == [
        WHEELHOUSE]


def test_tensorflow_engine_adds_the_tensorflow_requirements():
    config = resolve(NON_DEFAULT)
    _, staged, overrides, steps = build(config)
    assert overrides["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"] == [
        WHEELHOUSE, "tensorflow"]
    assert "--model-artifact" not in steps[0]["HadoopJarStep"]["Args"]


def test_export_command_parses_with_the_exporter():
    config = resolve({"bucket": "fruits-data", "alpha": 0.35, "image_size": 96, "weights": "random"})
    command = artifacts.export_settings(config, "random").command("/usr/bin/python3", "/tmp/m/model.onnx")
    assert command[:3] == ["/usr/bin/python3", "-m", "model_export.export_model"]
    parsed = export_model.build_parser().parse_args(command[3:])
    assert (parsed.output, parsed.model, parsed.alpha, parsed.image_size, parsed.weights, parsed.engine) == (
        "/tmp/m/model.onnx", "mobilenet_v2", 0.35, 96, "random", "onnxruntime")
    int8 = artifacts.export_settings(resolve({"bucket": "fruits-data", "engine": "onnxruntime-int8"}), "imagenet")
    parsed = export_model.build_parser().parse_args(int8.command("python", "m.onnx")[3:])
    assert (parsed.engine, parsed.calibration_images) == ("onnxruntime-int8", model_identity.CALIBRATION_ROOT)


def test_local_step_command_runs_the_emr_step_itself_against_s3():
    config = resolve({"bucket": "fruits-local", "k": 5})
    paths, staged, _, steps = build_onnx(config)
    featurize_args, pca_args = (step["HadoopJarStep"]["Args"] for step in steps)
    s3_conf = {"spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem"}
    command = local_steps.local_step_command(featurize_args, "/venv/bin/spark-submit", s3_conf, "local[2]", "3g")
    assert command[:5] == ["/venv/bin/spark-submit", "--master", "local[2]", "--driver-memory", "3g"]
    assert "--deploy-mode" not in command and "client" not in command
    assert "spark.hadoop.fs.s3.impl=org.apache.hadoop.fs.s3a.S3AFileSystem" in command
    assert f"spark.driver.extraJavaOptions={local_jvm_options()}" in command  # local Spark's JVM, as run_local's
    script_at = command.index(staged.featurize_py)
    assert staged.featurize_py.startswith("s3://fruits-local/artifacts/code/")
    assert command[script_at - 2:script_at] == ["--py-files", staged.py_files]
    # everything after the script is the step's own job arguments, S3 URIs unchanged
    assert command[script_at + 1:] == featurize_args[featurize_args.index(staged.featurize_py) + 1:]
    parsed = featurize.build_parser().parse_args(command[script_at + 1:])
    assert (parsed.manifest, parsed.output) == (paths.manifest_uri, paths.output_uri)
    assert parsed.allowed_prefix == ["s3://fruits-local/raw/"]
    pca_command = local_steps.local_step_command(pca_args, "spark-submit", {})
    assert pca_command[:3] == ["spark-submit", "--master", "local[*,4]"]  # task retries, as on EMR
    pca_args_parsed = pca.build_parser().parse_args(pca_command[pca_command.index(staged.pca_py) + 1:])
    assert (pca_args_parsed.output, pca_args_parsed.k) == (paths.output_uri, 5)
    with pytest.raises(ValueError, match="not a spark-submit step"):
        local_steps.local_step_command(["hadoop-streaming"], "spark-submit", {})


def test_local_steps_encrypt_what_spark_writes_as_the_run_asks():
    assert s3a.s3a_jars(), "S3A jars not fetched: run make setup"
    kms = local_steps.step_s3_conf(settings.sse_arguments(resolve({"bucket": "fruits-data", "kms_key_id": "alias/k"})))
    assert (kms["spark.hadoop.fs.s3a.encryption.algorithm"], kms["spark.hadoop.fs.s3a.encryption.key"]) == (
        "SSE-KMS", "alias/k")
    s3 = local_steps.step_s3_conf(settings.sse_arguments(resolve({"bucket": "fruits-data"})))
    assert s3["spark.hadoop.fs.s3a.encryption.algorithm"] == "AES256" and "spark.hadoop.fs.s3a.encryption.key" not in s3
    assert {s3[f"spark.hadoop.fs.{scheme}.impl"] for scheme in ("s3", "s3a")} == {s3a.S3A}


# --- run configuration -------------------------------------------------------------------------

def test_precedence_param_over_variable_over_environment():
    env_defaults = settings.parse_time_defaults({"FRUITS_BUCKET": "env-bucket", "FRUITS_CORE_INSTANCE_COUNT": "3",
                                            "FRUITS_USE_SPOT": "false"})
    assert (env_defaults["bucket"], env_defaults["core_instance_count"], env_defaults["use_spot"]) == (
        "env-bucket", 3, False)
    variable = {"bucket": "variable-bucket", "core_instance_count": 5, "idle_timeout_minutes": 30}
    # the run changed core_instance_count in the form; bucket and idle timeout were left at their defaults
    config, sources = settings.resolve_run_config({**env_defaults, "core_instance_count": 9}, env_defaults, variable)
    assert (config.bucket, config.core_instance_count, config.idle_timeout_minutes, config.use_spot) == (
        "variable-bucket", 9, 30, False)
    assert (sources["bucket"], sources["core_instance_count"], sources["use_spot"]) == ("variable", "param", "default")


def test_scheduled_run_without_conf_uses_defaults():
    config, sources = settings.resolve_run_config({}, {**DEFAULTS, "bucket": "b-env"}, None)
    assert config.bucket == "b-env" and set(sources.values()) == {"default"}


@pytest.mark.parametrize(
    ("params", "variable", "message"),
    [
        ({}, None, "Param 'bucket' is empty"),
        ({"bucket": "s3://fruits-data"}, None, "is not an S3 bucket name"),
        ({"bucket": "b1x", "alpha": 0.3}, None, "Param 'alpha' = 0.3 has no pretrained MobileNetV2"),
        ({"bucket": "b1x", "image_size": 100}, None, "Param 'image_size' = 100"),
        ({"bucket": "b1x", "release_label": "emr-6.15.0"}, None, "is not a release the pipeline was checked on"),
        ({"bucket": "b1x", "release_label": "emr-7.0.0"}, None, "use one of ['emr-7.8.0',"),
        ({"bucket": "b1x", "core_instance_types": ["m5.xlarge"] * 31}, None, "takes at most 30"),
        ({"bucket": "b1x", "core_instance_types": ["m5 xlarge"]}, None, "not an EC2 instance type"),
        ({"bucket": "b1x", "core_instance_types": []}, None, "'core_instance_types' is empty"),
        ({"bucket": "b1x", "raw_prefix": "data/", "output_prefix": "data/features/"}, None, "overlap"),
        ({"bucket": "b1x", "variance": 1.5}, None, "Param 'variance' = 1.5"),
        ({"bucket": "b1x", "k": "many"}, None, "Param 'k' = 'many' is not a valid k"),
        ({"bucket": "b1x", "subnet_id": "vpc-1"}, None, "Param 'subnet_id'"),
        ({"bucket": "b1x"}, {"buckets": "x"}, "Variable fruits_features_defaults has unknown keys ['buckets']"),
        ({}, {"bucket": "Bad_Bucket"}, "is not an S3 bucket name"),
    ],
)
def test_bad_settings_end_with_one_clear_message(params, variable, message):
    with pytest.raises(ConfigError) as raised:
        resolve(params, variable)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("params", "variable", "message"),
    [
        ({"core_instance_count": 21}, None,
         "Param 'core_instance_count' = 21 is above the cap of 20 core nodes; use at most 20, or raise the cap"
         " with the environment variable FRUITS_MAX_CORE_INSTANCES."),
        ({}, {"core_instance_count": 500}, "Param 'core_instance_count' = 500 is above the cap of 20"),
        ({"core_instance_types": ["m5.xlarge", "m5.24xlarge"]}, None,
         "Param 'core_instance_types' has 'm5.24xlarge', which is not an allowed instance type"),
        ({"master_instance_type": "p4d.24xlarge"}, None, "Param 'master_instance_type' has 'p4d.24xlarge'"),
        ({"core_instance_types": ["m5.metal"]}, None, "'m5.metal', which is not an allowed instance type"),
        ({"core_instance_types": ["x2iedn.xlarge"]}, None, "'x2iedn.xlarge', which is not an allowed instance type"),
        ({"raw_prefix": "../other/"}, None, "Param 'raw_prefix' = '../other/' must be a key prefix inside the bucket"),
        ({"output_prefix": "features/../../x"}, None, "Param 'output_prefix' = 'features/../../x' must be a key prefix"),
        ({"artifacts_prefix": "/artifacts/"}, None, "no leading '/'"),
        ({"logs_prefix": "s3://other-bucket/logs/"}, None, "Param 'logs_prefix' = 's3://other-bucket/logs/'"),
        ({"raw_prefix": "./raw/"}, None, "Param 'raw_prefix' = './raw/'"),
        ({"weights": "s3://someone-elses-bucket/w.h5"}, None,
         "Param 'weights' = 's3://someone-elses-bucket/w.h5' must be an object under s3://b1x/artifacts/"),
        ({"weights": "s3://b1x/raw/w.h5"}, None, "Param 'weights' = 's3://b1x/raw/w.h5' must be an object under"),
        ({"weights": "s3://b1x/artifacts/"}, None, "Copy the file to s3://b1x/artifacts/weights/"),
        ({"weights": "s3://b1x/artifacts/../raw/w.h5"}, None, "must be an object under s3://b1x/artifacts/"),
        ({}, {"model": "vgg19"}, "Param 'model' = 'vgg19' is not a known backbone; use one of"),
        ({}, {"engine": "torch"}, "Param 'engine' = 'torch' is not a known engine; use one of"),
        ({"kms_key_id": "my key"}, None, "Param 'kms_key_id' = 'my key' is not a KMS key"),
        ({"kms_key_id": "arn:aws:s3:::b1x"}, None, "is not a KMS key: use a key ARN"),
        ({"security_configuration": "bad name!"}, None, "Param 'security_configuration' = 'bad name!'"),
    ],
)
def test_safety_rails_reject_runaway_or_escaping_settings(params, variable, message):
    with pytest.raises(ConfigError) as raised:
        resolve({"bucket": "b1x", **params}, variable)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "params",
    [
        {"core_instance_count": 20},
        {"core_instance_types": ["m5.large", "c6i.8xlarge", "r5.4xlarge"], "master_instance_type": "m7i.2xlarge"},
        {"weights": "s3://b1x/artifacts/weights/w.h5", "engine": "tensorflow", "model": "vgg16"},
        {"raw_prefix": "landing/images", "output_prefix": "derived/features/", "logs_prefix": ""},
        {"kms_key_id": "alias/fruits-outputs", "security_configuration": "fruits-at-rest"},
        {"kms_key_id": "1234abcd-12ab-34cd-56ef-1234567890ab"},
        {"kms_key_id": "arn:aws:kms:us-east-1:123456789012:alias/fruits"},
    ],
)
def test_safety_rails_accept_ordinary_settings(params):
    assert resolve({"bucket": "b1x", **params}).bucket == "b1x"


def test_core_instance_cap_follows_the_environment(monkeypatch):
    monkeypatch.setenv("FRUITS_MAX_CORE_INSTANCES", "40")
    assert resolve({"bucket": "b1x", "core_instance_count": 40}).core_instance_count == 40
    assert param_specs(DEFAULTS)["core_instance_count"]["maximum"] == 40
    with pytest.raises(ConfigError, match="above the cap of 40"):
        resolve({"bucket": "b1x", "core_instance_count": 41})
    monkeypatch.setenv("FRUITS_MAX_CORE_INSTANCES", "lots")
    with pytest.raises(ConfigError, match="FRUITS_MAX_CORE_INSTANCES = 'lots' must be a positive integer"):
        resolve({"bucket": "b1x"})
    monkeypatch.delenv("FRUITS_MAX_CORE_INSTANCES")
    assert param_specs(DEFAULTS)["core_instance_count"]["maximum"] == settings.MAX_CORE_INSTANCES == 20


def test_price_table_types_are_allowed_instance_types():
    assert all(settings.ALLOWED_INSTANCE_TYPE.fullmatch(name) for name in cost.PRICE_TABLE)


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="environment variable FRUITS_CORE_INSTANCE_COUNT = 'two'"):
        settings.parse_time_defaults({"FRUITS_CORE_INSTANCE_COUNT": "two"})


def test_params_cover_every_setting_with_a_description():
    specs = param_specs(DEFAULTS)
    assert set(specs) == set(RunConfig().to_dict())
    assert all(spec["description"] for spec in specs.values())
    assert specs["k"]["default"] is None and specs["core_instance_types"]["default"] == [
        "m5.xlarge", "m5a.xlarge", "m6i.xlarge"]


# --- run window, validation, cost ---------------------------------------------------------------

def test_run_window_is_the_data_interval_or_the_last_full_day():
    start = datetime(2024, 6, 1, tzinfo=UTC)
    assert selection.run_window(start, start + timedelta(days=1), start) == (start, start + timedelta(days=1), "2024-06-01")
    after = datetime(2024, 6, 3, 15, 30, tzinfo=UTC)
    assert selection.run_window(None, None, after) == (
        datetime(2024, 6, 2, tzinfo=UTC), datetime(2024, 6, 3, tzinfo=UTC), "2024-06-02")


def test_reconcile_flags_counts_and_missing_outputs():
    """files of the manifest = featurized + quarantined + ignored; its photos = featurized + quarantined."""
    present = {"features/", "quarantine/", "pca/", "report.json", "manifest.txt"}
    good = {"files_seen": 43, "images_seen": 41, "features_rows": 40, "quarantined": 1, "ignored": 2}
    assert validation.reconcile(good, 43, 41, present) == []
    problems = validation.reconcile({**good, "features_rows": 38}, 43, 41, present - {"pca/"})
    assert problems == [
        "output pca/ is missing",
        "features (38) + quarantined (1) + ignored (2) = 41, not the 43 files of the manifest",
        "features (38) + quarantined (1) = 39, not the 41 photos of the manifest",
    ]
    assert validation.reconcile({**good, "images_seen": 40, "features_rows": 39}, 43, 41, present)[:2] == [
        "report says 40 images seen, the manifest lists 41 photos by name",
        "features (39) + quarantined (1) + ignored (2) = 42, not the 43 files of the manifest",
    ]
    # a file the job left out of every count (neither ignored nor seen) is caught
    assert validation.reconcile({**good, "files_seen": 42, "ignored": 1}, 43, 41, present) == [
        "report says 42 files seen, the manifest lists 43",
        "features (40) + quarantined (1) + ignored (1) = 42, not the 43 files of the manifest",
    ]
    assert "lacks a count" in validation.reconcile({"images_seen": 41}, 43, 41, present)[0]


def test_cost_estimate_from_instance_hours():
    config = resolve({"bucket": "b1x"})  # m5.xlarge primary on-demand, 2 x m5.xlarge spot core
    start = datetime(2024, 6, 1, tzinfo=UTC)
    estimate = cost.estimate_cost(config, start, start + timedelta(hours=2), cost.PRICE_TABLE)
    # 2 h x (1 x (0.048 + 0.192) + 2 x (0.048 + 0.075))
    assert estimate.usd == pytest.approx(0.972)
    assert estimate.unpriced == []
    on_demand = resolve({"bucket": "b1x", "use_spot": False, "core_instance_types": ["r6a.8xlarge"]})
    partial = cost.estimate_cost(on_demand, start, start + timedelta(hours=1), cost.PRICE_TABLE)
    assert partial.usd == pytest.approx(0.24) and partial.unpriced == ["r6a.8xlarge"]


def test_price_variable_overrides_table():
    prices = cost.merge_prices({"m5.xlarge": {"spot": 0.05}, "x9.huge": {"emr": 1, "on_demand": 2, "spot": 1}})
    assert prices["m5.xlarge"] == {"vcpu": 4, "emr": 0.048, "on_demand": 0.192, "spot": 0.05}
    assert prices["x9.huge"]["on_demand"] == 2.0
    with pytest.raises(ConfigError, match="fruits_emr_prices"):
        cost.merge_prices({"m5.xlarge": 0.2})


def test_step_failure_message_names_reason_and_logs():
    from fruits_emr.operators import step_failure_message

    step = {"Id": "s-ABC", "Name": "featurize 2024-06-01",
            "Status": {"State": "FAILED", "FailureDetails": {"Reason": "Unknown error.",
                                                              "Message": "ModuleNotFoundError: onnxruntime"}}}
    message = step_failure_message(step, "j-XYZ", "s3://fruits-data/emr-logs/")
    assert message.startswith("EMR step 'featurize 2024-06-01' (s-ABC) on cluster j-XYZ ended FAILED: Unknown error.")
    assert "ModuleNotFoundError: onnxruntime" in message
    # client deploy mode: the driver's Python traceback is in the step's own stderr
    assert "Python traceback (driver stderr): s3://fruits-data/emr-logs/j-XYZ/steps/s-ABC/stderr.gz" in message
    assert "stdout: s3://fruits-data/emr-logs/j-XYZ/steps/s-ABC/stdout.gz" in message
    assert "executor logs: s3://fruits-data/emr-logs/j-XYZ/containers/<application id>/" in message
    assert emr_request.DEPLOY_MODE == "client"  # what makes the step's stderr the driver's


def test_param_choices_match_the_jobs():
    """The DAG's Params offer exactly what the jobs' own argument parsers and model code accept."""
    from model_export.export_model import build_parser as exporter_parser
    from spark_jobs.cnn.backbones import KERAS_APPLICATIONS
    from spark_jobs.featurize import build_parser as featurize_parser

    specs = param_specs(DEFAULTS)
    choices = {action.dest: list(action.choices) for action in featurize_parser()._actions if action.choices}
    assert specs["model"]["enum"] == choices["model"] == sorted(KERAS_APPLICATIONS)
    assert specs["engine"]["enum"] == choices["engine"]
    exporter = {action.dest: list(action.choices) for action in exporter_parser()._actions if action.choices}
    assert exporter["model"] == choices["model"] and set(exporter["engine"]) < set(choices["engine"])


def test_executor_memory_overhead_covers_the_measured_python_workers():
    """YARN counts the Python workers (ONNX Runtime, Pillow, Arrow batches) against memoryOverhead;
    the budget per worker must hold the per-worker peak the soak measured (bench/soak.json)."""
    import re as regex

    soak = json.loads((REPO_ROOT / "bench" / "soak.json").read_text())
    concurrent = int(regex.fullmatch(r"local\[(\d+)(,\d+)?\]", soak["master"]).group(1))  # tasks at once
    peak = max(run["peak_rss_by_kind_bytes"]["python_workers"] for run in soak["runs"].values())
    per_worker_mb = peak / concurrent / 2**20
    assert emr_request.PYTHON_WORKER_MEMORY_MB >= per_worker_mb, (emr_request.PYTHON_WORKER_MEMORY_MB, per_worker_mb)
    _, _, overrides, _ = build(resolve({"bucket": "fruits-data"}))
    spark = next(c for c in overrides["Configurations"] if c["Classification"] == "spark-defaults")["Properties"]
    cores = int(spark["spark.executor.cores"])
    overhead_mb = int(spark["spark.executor.memoryOverhead"].removesuffix("m"))
    assert overhead_mb >= cores * per_worker_mb + 384  # a worker per core, plus the JVM's own minimum
    assert "spark.executor.pyspark.memory" not in spark  # an address-space rlimit ONNX Runtime's arena trips


def test_on_demand_fleet_with_30_types_is_a_valid_request(emr_client):
    """use_spot=false with the most types the Param allows: the allocation strategy is what lets
    a fleet take more than 5 types."""
    types = [f"{family}.{size}" for family in settings.INSTANCE_FAMILIES for size in ("xlarge", "2xlarge")][:30]
    config = resolve({"bucket": "fruits-data", "use_spot": False, "core_instance_types": types})
    _, _, overrides, _ = build(config)
    core = overrides["Instances"]["InstanceFleets"][1]
    assert len(core["InstanceTypeConfigs"]) == 30
    assert core["LaunchSpecifications"]["OnDemandSpecification"]["AllocationStrategy"] == "lowest-price"
    assert "SpotSpecification" not in core["LaunchSpecifications"]
    assert_valid("RunJobFlow", overrides)
    cluster_id = emr_client.run_job_flow(**overrides)["JobFlowId"]  # moto's parser takes it
    assert emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] in emr_request.ACTIVE_CLUSTER_STATES


def test_bootstrap_needs_a_wheelhouse():
    config = resolve({"bucket": "fruits-data"})
    staged = artifacts.code_layout(config.bucket, config.artifacts_prefix, "0123456789abcdef", config.weights, MODEL)
    with pytest.raises(ValueError, match="no wheelhouse staged"):
        emr_request.bootstrap_args(config, staged)


# --- PCA model lifecycle -------------------------------------------------------------------------

def test_pca_plan_fits_when_asked_or_when_no_model_and_applies_otherwise():
    config = resolve({"bucket": "fruits-data"})
    committed = {"2024-06-01": "s3://fruits-data/features/run_date=2024-06-01/_attempts/a",
                 "2024-06-02": "s3://fruits-data/features/run_date=2024-06-02/_attempts/b"}
    first = pca_plan.plan_pca(config, None, committed, layout.run_paths(config, "2024-06-02", ATTEMPT))
    assert (first.fit, first.reason, first.version, first.pointer_number) == (True, "no model yet", "v0001", None)
    assert first.model == f"s3://fruits-data/features/_pca_models/_attempts/{ATTEMPT}"  # the attempt's own folder
    # this run's date is refitted from its new features
    assert first.corpus == (CorpusDate("2024-06-01", committed["2024-06-01"] + "/features"),)
    assert first.planned_on == committed  # the commit fails if another run changed them since
    pointer = {"version": "v0001", "number": 1, "model": first.model, "corpus": {}}
    daily = pca_plan.plan_pca(config, pointer, committed, layout.run_paths(config, "2024-06-03", ATTEMPT))
    assert (daily.fit, daily.version, daily.model, daily.corpus, daily.pointer_number) == (
        False, "v0001", first.model, (), 1)
    day3 = layout.run_paths(config, "2024-06-03", ATTEMPT)
    refit = pca_plan.plan_pca(resolve({"bucket": "fruits-data", "refit_pca": True}), pointer, committed, day3)
    assert (refit.fit, refit.version, refit.pointer_number, len(refit.corpus)) == (True, "v0002", 1, 2)
    full = pca_plan.plan_pca(resolve({"bucket": "fruits-data", "full_refresh": True}), pointer, committed, day3)
    assert (full.fit, full.reason, full.corpus) == (True, "full_refresh", ())


def test_pca_step_arguments_follow_the_plan():
    config = resolve({"bucket": "fruits-data"})
    paths = layout.run_paths(config, "2024-06-03", ATTEMPT)
    committed = {"2024-06-01": "s3://fruits-data/features/run_date=2024-06-01/_attempts/a"}
    fit = pca_plan.plan_pca(config, None, committed, layout.run_paths(config, "2024-06-03", ATTEMPT))
    assert pca_plan.pca_arguments(config, paths, fit) == [
        "--output", paths.output_uri, "--variance", "0.95", "--model-output", fit.model, "--model-version", "v0001",
        "--corpus", committed["2024-06-01"] + "/features"]
    pointer = {"version": "v0001", "number": 1, "model": fit.model, "corpus": {}}
    apply = pca_plan.plan_pca(config, pointer, {}, layout.run_paths(config, "2024-06-04", ATTEMPT))
    assert pca_plan.pca_arguments(config, paths, apply) == ["--output", paths.output_uri, "--model", fit.model]


def test_pca_pointer_and_problems():
    """What a commit makes of the PCA pointer (pca_pointer.RunChange, with no S3: the pointer as read
    and its committed attempts are given): a fit starts the corpus, an apply adds its date, a refit
    re-projects the corpus into its model folder."""
    config = resolve({"bucket": "fruits-data"})
    now = datetime(2024, 6, 4, tzinfo=UTC).isoformat()
    day1 = layout.run_paths(config, "2024-06-01", ATTEMPT)

    def change(paths, plan, seen, k=9):
        return pca_pointer.RunChange(paths.run_date, paths.output_uri, plan, seen, {}, {}, lambda uri: {},
                                     lambda uri: None, k, "r", now)

    fit = pca_plan.plan_pca(config, None, {}, layout.run_paths(config, "2024-06-01", ATTEMPT))
    report = {"pca_fitted": True, "pca_model": "v0001", "pca_corpus": [], "k": 9}
    assert validation.pca_problems(report, fit) == []
    pointer = change(day1, fit, {})(None, {})
    assert pointer["corpus"] == {"2024-06-01": f"{day1.output_uri}/pca"}
    assert pointer["committed"] == {"2024-06-01": day1.output_uri}
    assert (pointer["version"], pointer["number"], pointer["k"], pointer["fitted_run_date"]) == ("v0001", 1, 9, "2024-06-01")
    day2 = layout.run_paths(config, "2024-06-02", ATTEMPT)
    apply = pca_plan.plan_pca(config, pointer, pointer["committed"], layout.run_paths(config, "2024-06-02", ATTEMPT))
    applied = change(day2, apply, pointer["committed"])(pointer, pointer["committed"])
    assert applied["corpus"] == {"2024-06-01": f"{day1.output_uri}/pca", "2024-06-02": f"{day2.output_uri}/pca"}
    assert (applied["version"], applied["k"]) == ("v0001", 9)
    assert change(day2, apply, pointer["committed"])(applied, applied["committed"]) is None  # done already
    assert validation.pca_problems({"pca_fitted": True, "pca_model": "sha-1"}, apply) == [
        "report says pca_fitted=True, the run planned fit=False",
        "report names PCA model 'sha-1', the run planned 'v0001'"]
    day2_again = layout.run_paths(config, "2024-06-02", "20240605T000000000000Z-abcdef")
    refit = pca_plan.plan_pca(resolve({"bucket": "fruits-data", "refit_pca": True}), applied, applied["committed"],
                              day2_again)
    assert refit.corpus == (CorpusDate("2024-06-01", f"{day1.output_uri}/features"),)
    refitted = change(day2_again, refit, applied["committed"], k=4)(applied, applied["committed"])
    assert refitted["corpus"] == {"2024-06-01": f"{refit.model}/corpus/part-00000",
                                  "2024-06-02": f"{day2_again.output_uri}/pca"}
    assert refitted["committed"] == {"2024-06-01": day1.output_uri, "2024-06-02": day2_again.output_uri}
    assert (refitted["version"], refitted["k"]) == ("v0002", 4)
