"""The EMR request bodies of a run: the RunJobFlow overrides of a transient cluster and the Spark
steps (featurize, then pca), built by pure functions so tests validate them against botocore's
EMR model without Airflow running."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fruits_emr import cost, lineage
from fruits_emr.artifacts import StagedArtifacts, needs_tensorflow
from fruits_emr.cost import CLUSTER
from fruits_emr.layout import RunPaths
from fruits_emr.pca_plan import pca_arguments
from fruits_emr.settings import PROJECT_TAG, RunConfig, number_arg
from fruits_emr.task_records import EmrRequest, PcaPlan, RunSelection
from spark_jobs.contract.s3_uri import key_prefix

log = logging.getLogger(__name__)

PYTHON = "/usr/bin/python3.11"  # absolute: the interpreter emr/bootstrap.sh installed the packages into
SPOT_TIMEOUT_MINUTES = 10
# AmazonEMRServicePolicy_v2 (of EMR_DefaultRole_V2) acts only on resources carrying this tag
MANAGED_POLICY_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}

# Executor sizing (docs/deploy-aws.md, "6. YARN memory"): each executor core runs one Python worker
# (ONNX Runtime, Pillow, an Arrow batch), whose memory YARN counts against memoryOverhead.
# Peak RSS of the Python workers in the 10x soak (bench/soak.json): 2.60 GB for 2 concurrent
# tasks, 1.30 GB per worker; the budget adds ~18 % headroom (alpha 1.0 activations are larger
# than the soak's alpha 0.35). tests/fruits_emr/test_emr_config.py checks it against the soak file.
EXECUTOR_CORES = 2
EXECUTOR_MEMORY_MB = 2048
PYTHON_WORKER_MEMORY_MB = 1536
JVM_OVERHEAD_MB = 384  # Spark's own minimum overhead, for the JVM's off-heap use
# YARN memoryOverhead of an executor: one Python worker per core plus the JVM's off-heap
EXECUTOR_MEMORY_OVERHEAD_MB = EXECUTOR_CORES * PYTHON_WORKER_MEMORY_MB + JVM_OVERHEAD_MB

ACTIVE_CLUSTER_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
DEPLOY_MODE = "client"
TENSORFLOW_ADD_ON = "tensorflow"  # emr/bootstrap.sh's second argument: also check that TensorFlow imports  # the driver runs in the step's process on the on-demand primary node


def job_arguments(
    config: RunConfig, paths: RunPaths, weights_uri: str, model_artifact: str = "",
    pca_plan: PcaPlan | None = None,
) -> dict[str, list[str]]:
    """Arguments of each Spark job (after the script), as its own argument parser takes them.

    With an exported model the featurize job reads the model settings from its sidecar, so
    they are not repeated here (one source of truth) and no TensorFlow is needed on the cluster.
    """
    if model_artifact:
        model = ["--model-artifact", model_artifact, "--engine", config.engine]
    else:
        model = [
            "--model", config.model,
            "--alpha", number_arg(config.alpha),
            "--image-size", str(config.image_size),
            "--weights", weights_uri,
            "--engine", config.engine,
        ]
    featurize = [
        "--manifest", paths.manifest_uri,
        # the manifest may list only files of the run's raw prefix (the policies allow no other)
        "--allowed-prefix", f"s3://{config.bucket}/{key_prefix(config.raw_prefix)}",
        "--output", paths.output_uri,
        "--max-file-bytes", str(config.max_file_bytes),
        *model,
        "--arrow-batch-size", str(config.arrow_batch_size),
    ]
    return {"featurize": featurize, "pca": pca_arguments(config, paths, pca_plan)}


def spark_steps(
    config: RunConfig, paths: RunPaths, staged: StagedArtifacts, pca_plan: PcaPlan | None = None,
    lineage_settings: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """EMR steps: featurize then pca, each a command-runner.jar spark-submit of the staged code.

    Client deploy mode: the driver runs in the step's own process on the primary node, which is
    always on-demand, so a spot reclaim cannot take the driver, and its stderr (the Python
    traceback) is the step's stderr log. CANCEL_AND_WAIT: a failed featurize cancels pca and
    leaves the cluster to the teardown task. lineage_settings (fruits_emr.lineage.spark_settings): the
    OpenLineage Spark listener, loaded from the staged jar, and its transport; none: no listener.
    """
    arguments = job_arguments(config, paths, staged.weights, staged.model_artifact, pca_plan)
    listener = []
    if lineage_settings and staged.lineage_jar:
        listener = ["--jars", staged.lineage_jar,
                    *[arg for name, value in lineage_settings.items() for arg in ("--conf", f"{name}={value}")]]
    scripts = {"featurize": staged.featurize_py, "pca": staged.pca_py}
    return [
        {
            "Name": f"{job} {paths.run_date}",
            "ActionOnFailure": "CANCEL_AND_WAIT",
            "HadoopJarStep": {
                "Jar": "command-runner.jar",
                "Args": [
                    "spark-submit",
                    "--deploy-mode", DEPLOY_MODE,
                    *listener,
                    "--py-files", staged.py_files,
                    scripts[job],
                    *arguments[job],
                ],
            },
        }
        for job in ("featurize", "pca")
    ]


def cluster_tags(dag_id: str, run_id: str, run_date: str) -> list[dict[str, str]]:
    return [
        {"Key": "project", "Value": PROJECT_TAG},
        {"Key": "dag_id", "Value": dag_id},
        {"Key": "run_id", "Value": tag_value(run_id)},
        {"Key": "run_date", "Value": run_date},
        MANAGED_POLICY_TAG,
    ]


def job_flow_overrides(
    config: RunConfig, paths: RunPaths, staged: StagedArtifacts, dag_id: str, run_id: str, shape: str = CLUSTER
) -> dict[str, Any]:
    """The RunJobFlow request of a transient cluster: Spark on instance fleets, idle-timeout backstop.

    shape (fruits_emr.cost.choose_shape): cluster, a primary fleet and a core fleet; primary_only, the
    primary fleet alone, whose node then runs YARN's executors as well as the driver.
    """
    # an allocation strategy in every case: without one a fleet takes at most 5 instance types
    launch: dict[str, Any] = {"OnDemandSpecification": {"AllocationStrategy": "lowest-price"}}
    if config.use_spot:
        launch["SpotSpecification"] = {
            "TimeoutDurationMinutes": SPOT_TIMEOUT_MINUTES,
            "TimeoutAction": "SWITCH_TO_ON_DEMAND",
            "AllocationStrategy": "price-capacity-optimized",
        }
    core_fleet: dict[str, Any] = {
        "Name": "core",
        "InstanceFleetType": "CORE",
        "TargetOnDemandCapacity": 0 if config.use_spot else config.core_instance_count,
        "TargetSpotCapacity": config.core_instance_count if config.use_spot else 0,
        "InstanceTypeConfigs": [
            {"InstanceType": instance_type, "WeightedCapacity": 1} for instance_type in config.core_instance_types
        ],
        "LaunchSpecifications": launch,
    }
    instances: dict[str, Any] = {
        "InstanceFleets": [
            {
                "Name": "primary",
                "InstanceFleetType": "MASTER",
                "TargetOnDemandCapacity": 1,
                "InstanceTypeConfigs": [{"InstanceType": config.master_instance_type}],
            },
            *([core_fleet] if shape == CLUSTER else []),
        ],
        "KeepJobFlowAliveWhenNoSteps": True,
        "TerminationProtected": False,
    }
    if config.subnet_id:
        instances["Ec2SubnetIds"] = [config.subnet_id]
    return {
        "Name": f"{PROJECT_TAG}-features-{paths.run_date}",
        "ReleaseLabel": config.release_label,
        "LogUri": paths.log_uri,
        "Applications": [{"Name": "Spark"}],
        "Instances": instances,
        "BootstrapActions": [
            {
                "Name": "install-python-deps",
                "ScriptBootstrapAction": {"Path": staged.bootstrap, "Args": bootstrap_args(config, staged)},
            }
        ],
        "Configurations": [
            {
                "Classification": "spark-env",
                "Configurations": [
                    {"Classification": "export", "Properties": {"PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON}}
                ],
            },
            {
                "Classification": "spark-defaults",
                "Properties": {
                    "spark.sql.execution.arrow.pyspark.enabled": "true",
                    "spark.sql.execution.arrow.maxRecordsPerBatch": str(config.arrow_batch_size),
                    "spark.yarn.appMasterEnv.PYSPARK_PYTHON": PYTHON,
                    "spark.executorEnv.PYSPARK_PYTHON": PYTHON,
                    "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "2",
                    "spark.dynamicAllocation.enabled": "true",
                    "spark.executor.cores": str(EXECUTOR_CORES),
                    "spark.executor.memory": f"{EXECUTOR_MEMORY_MB}m",
                    "spark.executor.memoryOverhead": f"{EXECUTOR_MEMORY_OVERHEAD_MB}m",
                },
            },
            *s3_encryption_configurations(config),
        ],
        "AutoTerminationPolicy": {"IdleTimeout": config.idle_timeout_minutes * 60},
        "StepConcurrencyLevel": 1,
        "VisibleToAllUsers": True,
        "ServiceRole": config.service_role,
        "JobFlowRole": config.job_flow_role,
        "Tags": cluster_tags(dag_id, run_id, paths.run_date),
        **({"SecurityConfiguration": config.security_configuration} if config.security_configuration else {}),
    }


def bootstrap_args(config: RunConfig, staged: StagedArtifacts) -> list[str]:
    """The wheelhouse (its hash file names every wheel the nodes install) and `tensorflow` when the
    cluster builds the model itself (then the wheelhouse holds the TensorFlow add-on too)."""
    if not staged.wheelhouse:
        raise ValueError("no wheelhouse staged: stage_artifacts stages one for every EMR run")
    return [staged.wheelhouse, *([TENSORFLOW_ADD_ON] if needs_tensorflow(config, staged.model_artifact) else [])]


def step_log_uris(log_uri: str, cluster_id: str, step_id: str) -> dict[str, str]:
    """Where EMR ships a step's logs (a few minutes after the step ends).

    In client deploy mode (DEPLOY_MODE) the driver's stderr, with the Python traceback, is the
    step's stderr; executor logs (a UDF's own traceback) are YARN container logs."""
    base = f"{log_uri.rstrip('/')}/{cluster_id}/"
    return {
        "stderr": f"{base}steps/{step_id}/stderr.gz",
        "stdout": f"{base}steps/{step_id}/stdout.gz",
        "containers": f"{base}containers/",
    }


def s3_encryption_configurations(config: RunConfig) -> list[dict[str, Any]]:
    """Cluster configuration classifications that make Spark's S3 writes server-side encrypted:
    emrfs-site for EMRFS (s3:// up to EMR 7.9) and core-site for S3A (s3:// from EMR 7.10).

    None with a security configuration: its S3 encryption applies, and keys sent here could
    override it (from EMR 7.10 EMRFS settings reach S3A only where the S3A keys are unset)."""
    if config.security_configuration:
        return []
    emrfs = {"fs.s3.enableServerSideEncryption": "true"}
    s3a = {"fs.s3a.encryption.algorithm": "SSE-KMS" if config.kms_key_id else "AES256"}  # S3A's name of SSE-S3
    if config.kms_key_id:
        emrfs["fs.s3.serverSideEncryption.kms.keyId"] = config.kms_key_id
        s3a["fs.s3a.encryption.key"] = config.kms_key_id
    return [{"Classification": "emrfs-site", "Properties": emrfs}, {"Classification": "core-site", "Properties": s3a}]


def tag_value(value: str) -> str:
    """EMR tag values allow letters, digits, spaces and _ . : / = + - @ (max 256)."""
    return re.sub(r"[^\w .:/=+\-@]", "_", value)[:256]


def build_request(
    config: RunConfig, staged: StagedArtifacts, run: RunSelection, plan: PcaPlan,
    cluster_for: tuple[str, str] | None, prices: Mapping[str, Any] | None, repo_root: Path,
    lineage_settings: Mapping[str, str] | None = None,
) -> EmrRequest:
    """The emr_request task: the steps of this run and its datasets (lineage) and, for a cluster
    (cluster_for: its DAG id and run id; None in local mode), the RunJobFlow body and the shape
    chosen from the run's image count. lineage_settings: fruits_emr.lineage.spark_settings."""
    steps = spark_steps(config, run.paths, staged, plan, lineage_settings)
    datasets = lineage.run_datasets(config, run.paths, plan)
    if cluster_for is None:
        return EmrRequest(steps=steps, lineage=datasets)
    shape, reason = cost.choose_shape(config, run.images, cost.merge_prices(prices),
                                      lambda: cost.load_cost_model(repo_root / cost.BENCH_RESULTS, run.median_bytes))
    log.info("cluster shape %s: %s", shape, reason)
    overrides = job_flow_overrides(config, run.paths, staged, *cluster_for, shape)
    return EmrRequest(steps=steps, job_flow_overrides=overrides, cluster_shape=shape, lineage=datasets)
