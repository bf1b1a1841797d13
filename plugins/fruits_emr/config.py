"""Run configuration, EMR job-flow overrides and Spark steps of the fruits_features DAG.

Pure functions only: no AWS, Airflow or file-system calls, so tests build the EMR request
bodies and validate them against botocore's EMR model without Airflow running.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from fruits_emr.releases import DEFAULT_RELEASE, EMR_SPARK

DAG_ID = "fruits_features"
PROJECT_TAG = "fruits"
ENV_PREFIX = "FRUITS_"
DEFAULTS_VARIABLE = "fruits_features_defaults"
PRICES_VARIABLE = "fruits_emr_prices"

PYTHON = "/usr/bin/python3.11"  # absolute: the interpreter emr/bootstrap.sh installed the packages into
SPOT_TIMEOUT_MINUTES = 10
MAX_FLEET_INSTANCE_TYPES = 30  # per fleet, with an allocation strategy (5 without one)
# AmazonEMRServicePolicy_v2 (of EMR_DefaultRole_V2) acts only on resources carrying this tag
MANAGED_POLICY_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}

# Executor sizing (docs/deploy-aws.md, "6. YARN memory"): each executor core runs one Python worker
# (ONNX Runtime, Pillow, an Arrow batch), whose memory YARN counts against memoryOverhead.
# Peak RSS of the Python workers in the 10x soak (bench/soak.json): 2.60 GB for 2 concurrent
# tasks, 1.30 GB per worker; the budget adds ~18 % headroom (alpha 1.0 activations are larger
# than the soak's alpha 0.35). tests/dag/test_emr_config.py checks it against the soak file.
EXECUTOR_CORES = 2
EXECUTOR_MEMORY_MB = 2048
PYTHON_WORKER_MEMORY_MB = 1536
JVM_OVERHEAD_MB = 384  # Spark's own minimum overhead, for the JVM's off-heap use
# YARN memoryOverhead of an executor: one Python worker per core plus the JVM's off-heap
EXECUTOR_MEMORY_OVERHEAD_MB = EXECUTOR_CORES * PYTHON_WORKER_MEMORY_MB + JVM_OVERHEAD_MB

MOBILENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENET_SIZES = (96, 128, 160, 192, 224)
PRESET_WEIGHTS = ("imagenet", "random")
ACTIVE_CLUSTER_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
MODELS = ("mobilenet_v2", "resnet50", "vgg16")
INT8_ENGINE = "onnxruntime-int8"  # a quantized ONNX model (spark_jobs.quantize), calibrated on CALIBRATION_IMAGES
ENGINES = ("onnxruntime", INT8_ENGINE, "tensorflow")
CALIBRATION_IMAGES = "data/sample"  # spark_jobs.quantize.CALIBRATION_ROOT, relative to the repo

# Safety rails: a typo in a Param must not start a fleet of large nodes.
MAX_CORE_INSTANCES = 20  # raise per deployment with the environment variable FRUITS_MAX_CORE_INSTANCES
MAX_CORE_INSTANCES_ENV = f"{ENV_PREFIX}MAX_CORE_INSTANCES"
# General purpose, compute and memory families, large..8xlarge: no GPU, no metal, no 24xlarge.
INSTANCE_FAMILIES = ("m5", "m5a", "m6i", "m6a", "m7i", "m7a", "c5", "c5a", "c6i", "c6a", "c7i", "r5", "r5a", "r6i", "r6a", "r7i")
INSTANCE_SIZES = ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge")
ALLOWED_INSTANCE_TYPE = re.compile(rf"({'|'.join(INSTANCE_FAMILIES)})\.({'|'.join(INSTANCE_SIZES)})")
KMS_KEY = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}|alias/[A-Za-z0-9/_-]{1,250}"
    r"|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key/(mrk-)?[0-9a-f-]{32,36}|alias/[A-Za-z0-9/_-]{1,250})"
)
SECURITY_CONFIGURATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,255}")

# Approximate us-east-1 USD per instance-hour (EMR fee, EC2 on-demand, typical spot).
# Override with the Airflow Variable `fruits_emr_prices` (same JSON shape).
PRICE_TABLE: dict[str, dict[str, float]] = {
    "m5.xlarge": {"emr": 0.048, "on_demand": 0.192, "spot": 0.075},
    "m5a.xlarge": {"emr": 0.048, "on_demand": 0.172, "spot": 0.070},
    "m6i.xlarge": {"emr": 0.048, "on_demand": 0.192, "spot": 0.075},
    "m5.2xlarge": {"emr": 0.096, "on_demand": 0.384, "spot": 0.150},
    "m6i.2xlarge": {"emr": 0.096, "on_demand": 0.384, "spot": 0.150},
    "r5.xlarge": {"emr": 0.063, "on_demand": 0.252, "spot": 0.090},
    "c5.2xlarge": {"emr": 0.085, "on_demand": 0.340, "spot": 0.130},
}


class ConfigError(ValueError):
    """A Param, Variable or environment value the user set cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, after Params, the defaults Variable and the environment are merged."""

    bucket: str = ""
    raw_prefix: str = "raw/"
    output_prefix: str = "features/"
    artifacts_prefix: str = "artifacts/"
    logs_prefix: str = "emr-logs/"
    variance: float = 0.95
    k: int | None = None
    model: str = "mobilenet_v2"
    alpha: float = 1.0
    image_size: int = 224
    weights: str = "imagenet"
    engine: str = "onnxruntime"
    arrow_batch_size: int = 128
    release_label: str = DEFAULT_RELEASE
    master_instance_type: str = "m5.xlarge"
    core_instance_types: tuple[str, ...] = ("m5.xlarge", "m5a.xlarge", "m6i.xlarge")
    core_instance_count: int = 2
    use_spot: bool = True
    idle_timeout_minutes: int = 60
    full_refresh: bool = False
    refit_pca: bool = False
    subnet_id: str = ""
    service_role: str = "EMR_DefaultRole_V2"
    job_flow_role: str = "EMR_EC2_DefaultRole"
    kms_key_id: str = ""
    security_configuration: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["core_instance_types"] = list(self.core_instance_types)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        return cls(**_coerce_all(data))


CODE_DEFAULTS: dict[str, Any] = RunConfig().to_dict()

# A setting that may stay empty. Airflow's trigger form marks a Param required unless its schema's
# type list includes "null" (and clears a text field to null), so "empty" must be nullable there.
OPTIONAL_STRING: dict[str, Any] = {"type": ["null", "string"]}

PARAM_DOCS: dict[str, tuple[str, dict[str, Any]]] = {
    "bucket": (
        "S3 bucket holding raw images, outputs, staged code and EMR logs. Required: here, in the Variable"
        " fruits_features_defaults or in the environment variable FRUITS_BUCKET.",
        OPTIONAL_STRING,
    ),
    "raw_prefix": ("Key prefix of the raw images, laid out <label>/<file>.", {"type": "string"}),
    "output_prefix": ("Key prefix of the outputs; one run_date=YYYY-MM-DD partition per run.", {"type": "string"}),
    "artifacts_prefix": ("Key prefix where job code, bootstrap and weights are staged.", {"type": "string"}),
    "logs_prefix": ("Key prefix of the EMR LogUri (cluster and step logs).", {"type": "string"}),
    "variance": (
        "PCA keeps the smallest k reaching this cumulative explained variance (ignored when k is set).",
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    ),
    "k": ("Fixed number of PCA components; empty = use variance.", {"type": ["null", "integer"], "minimum": 1}),
    "model": ("CNN backbone.", {"type": "string", "enum": list(MODELS)}),
    "alpha": ("MobileNetV2 width multiplier.", {"type": "number", "exclusiveMinimum": 0}),
    "image_size": ("Square input size in pixels.", {"type": "integer", "minimum": 32, "maximum": 1024}),
    "weights": (
        "imagenet, random, an s3:// URI, or a weights file path in the repo (staged to S3 by the DAG).",
        {"type": "string", "minLength": 1},
    ),
    "engine": ("Inference engine on the executors.", {"type": "string", "enum": list(ENGINES)}),
    "arrow_batch_size": ("Rows per Arrow batch sent to a Python worker.", {"type": "integer", "minimum": 1}),
    "release_label": (
        f"EMR release (Spark 3.5); the default {DEFAULT_RELEASE} runs the Spark the tests run"
        " (plugins/fruits_emr/releases.py).",
        {"type": "string", "enum": list(EMR_SPARK)},
    ),
    "master_instance_type": ("EC2 type of the primary node (always on-demand).", {"type": "string"}),
    "core_instance_types": (
        "EC2 types the core fleet may use, preferred first.",
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_FLEET_INSTANCE_TYPES},
    ),
    "core_instance_count": (
        f"Number of core nodes (at most {MAX_CORE_INSTANCES_ENV}, default {MAX_CORE_INSTANCES}).",
        {"type": "integer", "minimum": 1},
    ),
    "use_spot": ("Core nodes on spot, switching to on-demand when spot is not available.", {"type": "boolean"}),
    "idle_timeout_minutes": (
        "AutoTerminationPolicy backstop: EMR ends the cluster after this long idle.",
        {"type": "integer", "minimum": 1, "maximum": 10080},
    ),
    "full_refresh": (
        "Process every raw image, not only the images that landed in the run's interval; also refits the PCA"
        " model on this run's features alone.",
        {"type": "boolean"},
    ),
    "refit_pca": (
        "Fit a new PCA model version on the whole committed corpus plus this run's images and re-project"
        " the corpus into it; off = apply the current model (a model is fitted anyway when none exists).",
        {"type": "boolean"},
    ),
    "subnet_id": ("EC2 subnet of the cluster; empty = the account's default VPC.", OPTIONAL_STRING),
    "service_role": (
        "EMR service role (AWS's default EMR_DefaultRole_V2 with AmazonEMRServicePolicy_v2).",
        {"type": "string", "minLength": 1},
    ),
    "job_flow_role": ("EC2 instance profile of the cluster nodes.", {"type": "string", "minLength": 1}),
    "kms_key_id": (
        "KMS key (ARN, key id or alias/...) encrypting every object the pipeline writes (SSE-KMS);"
        " empty = SSE-S3 (AES256).",
        {**OPTIONAL_STRING, "maxLength": 2048},
    ),
    "security_configuration": (
        "Name of an existing EMR security configuration for the cluster (at-rest / in-transit"
        " encryption); empty = none. Its S3 encryption settings override kms_key_id on the cluster.",
        {**OPTIONAL_STRING, "maxLength": 256},
    ),
}


def parse_time_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """Code defaults overridden by FRUITS_<PARAM> environment variables (read when the DAG is parsed)."""
    defaults = dict(CODE_DEFAULTS)
    for name in defaults:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            defaults[name] = _coerce(name, raw, source=f"environment variable {ENV_PREFIX}{name.upper()}")
    return defaults


def max_core_instances(environ: Mapping[str, str] | None = None) -> int:
    """The cap on core_instance_count: FRUITS_MAX_CORE_INSTANCES, else MAX_CORE_INSTANCES."""
    raw = (os.environ if environ is None else environ).get(MAX_CORE_INSTANCES_ENV)
    if raw is None or not raw.strip():
        return MAX_CORE_INSTANCES
    try:
        cap = int(raw)
    except ValueError:
        cap = 0
    if cap < 1:
        raise ConfigError(f"Environment variable {MAX_CORE_INSTANCES_ENV} = {raw!r} must be a positive integer, e.g. 20.")
    return cap


def param_specs(defaults: Mapping[str, Any], max_core: int | None = None) -> dict[str, dict[str, Any]]:
    """Keyword arguments of one airflow.sdk.Param per run setting (UI form fields)."""
    specs = {
        name: {"default": defaults[name], "description": doc, "title": name.replace("_", " "), **schema}
        for name, (doc, schema) in PARAM_DOCS.items()
    }
    specs["core_instance_count"]["maximum"] = max_core or max_core_instances()
    return specs


def resolve_run_config(
    params: Mapping[str, Any],
    parse_defaults: Mapping[str, Any],
    variable_defaults: Mapping[str, Any] | None = None,
    max_core: int | None = None,
) -> tuple[RunConfig, dict[str, str]]:
    """Merge Params over the defaults Variable: a Param left at its parse-time default takes the Variable's value.

    Returns the validated config and, for each setting, where its value came from.
    """
    variable_defaults = dict(variable_defaults or {})
    unknown = sorted(set(variable_defaults) - set(CODE_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"Variable {DEFAULTS_VARIABLE} has unknown keys {unknown}; allowed keys: {sorted(CODE_DEFAULTS)}."
        )
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in CODE_DEFAULTS:
        value = params.get(name, parse_defaults.get(name))
        changed = _normalise(value) != _normalise(parse_defaults.get(name))
        if not changed and name in variable_defaults:
            merged[name] = _coerce(name, variable_defaults[name], source=f"Variable {DEFAULTS_VARIABLE}[{name!r}]")
            sources[name] = "variable"
        else:
            merged[name] = _coerce(name, value, source=f"Param {name!r}")
            sources[name] = "param" if changed else "default"
    config = RunConfig(**merged)
    validate_run_config(config, max_core)
    return config, sources


def validate_run_config(config: RunConfig, max_core: int | None = None) -> None:
    """Raise ConfigError naming the first unusable setting and its fix.

    max_core: the cap on core_instance_count (None: FRUITS_MAX_CORE_INSTANCES or MAX_CORE_INSTANCES).
    """
    if not config.bucket:
        raise ConfigError(
            "Param 'bucket' is empty. Set it in the trigger form (--conf '{\"bucket\": \"my-bucket\"}'),"
            f" in the Variable {DEFAULTS_VARIABLE} ({{\"bucket\": \"my-bucket\"}}) or in the environment"
            f" variable {ENV_PREFIX}BUCKET."
        )
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", config.bucket):
        raise ConfigError(f"Param 'bucket' = {config.bucket!r} is not an S3 bucket name (no s3://, no slash).")
    for name in ("raw_prefix", "output_prefix", "artifacts_prefix", "logs_prefix"):
        value = getattr(config, name)
        if "://" in value or value.startswith("/") or "\\" in value or {".", ".."} & set(value.split("/")):
            raise ConfigError(
                f"Param {name!r} = {value!r} must be a key prefix inside the bucket, like 'raw/'"
                " (no s3://, no leading '/', no '.' or '..' segments, no backslash)."
            )
    raw, out = prefix(config.raw_prefix), prefix(config.output_prefix)
    if out.startswith(raw) or raw.startswith(out):
        raise ConfigError(
            f"Params 'raw_prefix' ({raw!r}) and 'output_prefix' ({out!r}) overlap: the run's plots would be"
            " read back as images. Use separate prefixes such as 'raw/' and 'features/'."
        )
    if not 0 < config.variance <= 1:
        raise ConfigError(f"Param 'variance' = {config.variance} must be in (0, 1], e.g. 0.95.")
    if config.k is not None and config.k < 1:
        raise ConfigError(f"Param 'k' = {config.k} must be a positive integer, or empty to use 'variance'.")
    if config.model not in MODELS:
        raise ConfigError(f"Param 'model' = {config.model!r} is not a known backbone; use one of {list(MODELS)}.")
    if config.engine not in ENGINES:
        raise ConfigError(f"Param 'engine' = {config.engine!r} is not a known engine; use one of {list(ENGINES)}.")
    if weights_kind(config.weights) == "s3":
        # the IAM policies (fruits_emr.iam) let Airflow and the cluster read only the artifacts prefix
        staged = f"s3://{config.bucket}/{prefix(config.artifacts_prefix)}"
        if not config.weights.startswith(staged) or config.weights.endswith("/") or ".." in config.weights.split("/"):
            raise ConfigError(
                f"Param 'weights' = {config.weights!r} must be an object under {staged} (the run's bucket and"
                f" artifacts prefix, which the IAM policies allow reading). Copy the file to {staged}weights/"
                " and point 'weights' there."
            )
    if config.model == "mobilenet_v2" and config.weights not in ("random",):
        if config.alpha not in MOBILENET_ALPHAS:
            raise ConfigError(
                f"Param 'alpha' = {config.alpha} has no pretrained MobileNetV2; use one of {list(MOBILENET_ALPHAS)}."
            )
        if config.weights == "imagenet" and config.image_size not in MOBILENET_SIZES:
            raise ConfigError(
                f"Param 'image_size' = {config.image_size} has no ImageNet MobileNetV2 weights;"
                f" use one of {list(MOBILENET_SIZES)}."
            )
    if not config.core_instance_types:
        raise ConfigError("Param 'core_instance_types' is empty; give at least one EC2 type, e.g. ['m5.xlarge'].")
    if len(config.core_instance_types) > MAX_FLEET_INSTANCE_TYPES:
        raise ConfigError(
            f"Param 'core_instance_types' has {len(config.core_instance_types)} types; an EMR instance fleet"
            f" takes at most {MAX_FLEET_INSTANCE_TYPES}."
        )
    for name, values in (("master_instance_type", [config.master_instance_type]),
                         ("core_instance_types", config.core_instance_types)):
        for value in values:
            if not re.fullmatch(r"[a-z][a-z0-9-]*\.[a-z0-9]+", value):
                raise ConfigError(f"Param {name!r} has {value!r}, which is not an EC2 instance type like 'm5.xlarge'.")
            if not ALLOWED_INSTANCE_TYPE.fullmatch(value):
                raise ConfigError(
                    f"Param {name!r} has {value!r}, which is not an allowed instance type: use a family of"
                    f" {list(INSTANCE_FAMILIES)} in size {'/'.join(INSTANCE_SIZES)}, e.g. 'm5.xlarge'"
                    " (INSTANCE_FAMILIES in plugins/fruits_emr/config.py widens the list)."
                )
    if config.core_instance_count < 1:
        raise ConfigError(f"Param 'core_instance_count' = {config.core_instance_count} must be at least 1.")
    cap = max_core or max_core_instances()
    if config.core_instance_count > cap:
        raise ConfigError(
            f"Param 'core_instance_count' = {config.core_instance_count} is above the cap of {cap} core nodes;"
            f" use at most {cap}, or raise the cap with the environment variable {MAX_CORE_INSTANCES_ENV}."
        )
    if not 1 <= config.idle_timeout_minutes <= 7 * 24 * 60:
        raise ConfigError(f"Param 'idle_timeout_minutes' = {config.idle_timeout_minutes} must be 1..10080 (7 days).")
    if config.release_label not in EMR_SPARK:
        raise ConfigError(
            f"Param 'release_label' = {config.release_label!r} is not a release the pipeline was checked on;"
            f" use one of {list(EMR_SPARK)} (default {DEFAULT_RELEASE}), or add it to plugins/fruits_emr/releases.py."
        )
    if config.subnet_id and not config.subnet_id.startswith("subnet-"):
        raise ConfigError(f"Param 'subnet_id' = {config.subnet_id!r} must look like 'subnet-0123abcd' or be empty.")
    if config.kms_key_id and not KMS_KEY.fullmatch(config.kms_key_id):
        raise ConfigError(
            f"Param 'kms_key_id' = {config.kms_key_id!r} is not a KMS key: use a key ARN"
            " (arn:aws:kms:<region>:<account>:key/<id>), a key id (a UUID), an alias (alias/<name>)"
            " or an alias ARN; empty = SSE-S3."
        )
    if config.security_configuration and not SECURITY_CONFIGURATION.fullmatch(config.security_configuration):
        raise ConfigError(
            f"Param 'security_configuration' = {config.security_configuration!r} is not an EMR security"
            " configuration name (letters, digits, '.', '_', '-'; up to 256); empty = none."
        )


def weights_kind(weights: str) -> str:
    """'preset' (imagenet/random), 's3' (already in S3) or 'file' (a local file the DAG stages)."""
    if weights in PRESET_WEIGHTS:
        return "preset"
    if weights.startswith("s3://"):
        return "s3"
    return "file"


# --- S3 layout ---------------------------------------------------------------------------

def prefix(value: str) -> str:
    """A key prefix with no leading slash and one trailing slash ('' stays the bucket root)."""
    value = value.strip("/")
    return f"{value}/" if value else ""


ATTEMPTS_FOLDER = "_attempts"  # leading underscore: Spark/Hive readers of the prefix skip it
COMMIT_FILE = "_COMMITTED.json"


@dataclass(frozen=True)
class RunPaths:
    """S3 locations of one attempt at one run date.

    The jobs write into the attempt's own folder, which no reader looks at; the run's outputs
    become visible at once when commit_outputs replaces the partition's commit pointer (one PUT,
    atomic in S3). A failed attempt therefore never shows, and the last committed one stays.
    """

    bucket: str
    run_date: str
    attempt: str
    partition_key: str
    attempts_key: str
    attempt_key: str
    manifest_key: str
    report_key: str
    commit_key: str
    log_uri: str

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @property
    def output_uri(self) -> str:
        """Where this attempt's jobs write (the committed output once commit_outputs ran)."""
        return self.uri(self.attempt_key).rstrip("/")

    @property
    def manifest_uri(self) -> str:
        return self.uri(self.manifest_key)

    @property
    def report_uri(self) -> str:
        return self.uri(self.report_key)

    @property
    def commit_uri(self) -> str:
        return self.uri(self.commit_key)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def new_attempt_id(now: datetime) -> str:
    """A sortable, unique-per-run attempt folder name: UTC time to the microsecond."""
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def partition_key(config: RunConfig, run_date: str) -> str:
    return f"{prefix(config.output_prefix)}run_date={run_date}/"


def commit_key(config: RunConfig, run_date: str) -> str:
    """Key of a run date's commit pointer, the one object readers start from."""
    return f"{partition_key(config, run_date)}{COMMIT_FILE}"


def run_paths(config: RunConfig, run_date: str, attempt: str) -> RunPaths:
    if not re.fullmatch(r"[0-9A-Za-z_-]+", attempt):
        raise ValueError(f"attempt id {attempt!r} is not a plain folder name")
    partition = partition_key(config, run_date)
    attempts = f"{partition}{ATTEMPTS_FOLDER}/"
    attempt_key = f"{attempts}{attempt}/"
    return RunPaths(
        bucket=config.bucket,
        run_date=run_date,
        attempt=attempt,
        partition_key=partition,
        attempts_key=attempts,
        attempt_key=attempt_key,
        manifest_key=f"{attempt_key}manifest.txt",
        report_key=f"{attempt_key}report.json",
        commit_key=commit_key(config, run_date),
        log_uri=f"s3://{config.bucket}/{prefix(config.logs_prefix)}",
    )


def commit_record(paths: RunPaths, summary: Mapping[str, Any], dag_run_id: str, committed_at: datetime) -> dict[str, Any]:
    """The commit pointer's content: which attempt readers should read, and what it holds."""
    return {
        "run_date": paths.run_date,
        "attempt": paths.attempt,
        "output": paths.output_uri,
        "features": f"{paths.output_uri}/features",
        "pca": f"{paths.output_uri}/pca",
        "report": paths.report_uri,
        "images": summary.get("images"),
        "features_rows": summary.get("features_rows"),
        "quarantined": summary.get("quarantined"),
        "k": summary.get("k"),
        "pca_model": summary.get("pca_model"),
        "dag_run_id": dag_run_id,
        "committed_at": committed_at.isoformat(),
    }


# --- PCA model versions ----------------------------------------------------------------------

PCA_MODELS_FOLDER = "_pca_models"  # inside the output prefix; the underscore hides it from partition discovery
PCA_POINTER_FILE = "_CURRENT.json"
PCA_MODEL_INFO = "pca_model.json"  # spark_jobs.pca_model.INFO_FILE, written last into a model folder
PCA_CORPUS_PART = "corpus/part-{index:05d}"  # spark_jobs.pca: where a fit re-projects its index-th --corpus input


def pca_models_key(config: RunConfig) -> str:
    return f"{prefix(config.output_prefix)}{PCA_MODELS_FOLDER}/"


def pca_pointer_key(config: RunConfig) -> str:
    """Key of the pointer to the current model version and the reduced corpus in its space."""
    return f"{pca_models_key(config)}{PCA_POINTER_FILE}"


def pca_version_uri(config: RunConfig, number: int) -> str:
    """The folder of model version `number` (v0001, v0002, ...): written once, by the run that fits it."""
    return f"s3://{config.bucket}/{pca_models_key(config)}v{number:04d}"


def plan_pca(
    config: RunConfig, pointer: Mapping[str, Any] | None, committed_features: Mapping[str, str], run_date: str
) -> dict[str, Any]:
    """Fit a new model version or apply the current one, and on what.

    A fit happens when asked (refit_pca), on full_refresh, or when no model exists yet. It fits on
    every other committed run date's features plus this run's (full_refresh: this run's alone, since it
    holds every image) and re-projects those dates into the new version's space.
    """
    reason = ("refit_pca" if config.refit_pca else "full_refresh" if config.full_refresh
              else None if pointer else "no model yet")
    if reason is None:
        return {"fit": False, "reason": "apply the current model", "number": int(pointer["number"]),
                "version": pointer["version"], "model": pointer["model"], "corpus": []}
    number = int(pointer["number"]) + 1 if pointer else 1
    corpus = [] if config.full_refresh else [
        [date, uri] for date, uri in sorted(committed_features.items()) if date != run_date
    ]
    return {"fit": True, "reason": reason, "number": number, "version": f"v{number:04d}",
            "model": pca_version_uri(config, number), "corpus": corpus,
            "previous_number": int(pointer["number"]) if pointer else None}


def pca_arguments(config: RunConfig, paths: RunPaths, plan: Mapping[str, Any] | None) -> list[str]:
    """The pca job's arguments: fit into the plan's new version folder, or apply the current model."""
    if plan is not None and not plan["fit"]:
        return ["--output", paths.output_uri, "--model", plan["model"]]
    target = ["--k", str(config.k)] if config.k is not None else ["--variance", _num(config.variance)]
    if plan is None:  # no lifecycle: the model is saved beside the outputs
        return ["--output", paths.output_uri, *target]
    corpus = [arg for _, uri in plan["corpus"] for arg in ("--corpus", uri)]
    return ["--output", paths.output_uri, *target, "--model-output", plan["model"],
            "--model-version", plan["version"], *corpus]


def pca_problems(report: Mapping[str, Any], plan: Mapping[str, Any]) -> list[str]:
    """What in the report contradicts the run's PCA plan. Empty when all is well."""
    problems = []
    if report.get("pca_fitted") is not plan["fit"]:
        problems.append(f"report says pca_fitted={report.get('pca_fitted')}, the run planned fit={plan['fit']}")
    if report.get("pca_model") != plan["version"]:
        problems.append(f"report names PCA model {report.get('pca_model')!r}, the run planned {plan['version']!r}")
    if plan["fit"] and len(report.get("pca_corpus") or []) != len(plan["corpus"]):
        problems.append(f"{len(report.get('pca_corpus') or [])} corpus dates re-projected, {len(plan['corpus'])} planned")
    return problems


def pca_pointer_record(
    previous: Mapping[str, Any] | None, plan: Mapping[str, Any], paths: RunPaths, summary: Mapping[str, Any],
    dag_run_id: str, committed_at: datetime,
) -> dict[str, Any]:
    """The new pointer: the model version readers use and, per run date, its reduced rows in that space.

    A fit starts the corpus afresh from its re-projections; an apply adds or replaces its own date.
    """
    if plan["fit"]:
        # built from the plan, not from the paths the job reports
        corpus = {date: f"{plan['model']}/{PCA_CORPUS_PART.format(index=index)}"
                  for index, (date, _) in enumerate(plan["corpus"])}
        fitted = {"fitted_run_date": paths.run_date, "k": summary.get("k")}
    else:
        corpus = dict(previous["corpus"]) if previous else {}
        fitted = {"fitted_run_date": previous.get("fitted_run_date"), "k": previous.get("k")} if previous else {}
    corpus[paths.run_date] = f"{paths.output_uri}/pca"
    return {"version": plan["version"], "number": plan["number"], "model": plan["model"], **fitted,
            "corpus": dict(sorted(corpus.items())), "updated_by": dag_run_id, "updated_at": committed_at.isoformat()}


def sse_arguments(config: RunConfig) -> dict[str, str]:
    """boto3 put_object / upload_file ExtraArgs that encrypt an object as the run asks."""
    if config.kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": config.kms_key_id}
    return {"ServerSideEncryption": "AES256"}


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


def run_window(
    data_interval_start: datetime | None, data_interval_end: datetime | None, run_after: datetime
) -> tuple[datetime, datetime, str]:
    """The [start, end) window of image LastModified times and its run date (the start's day).

    Runs without a data interval (e.g. triggered with no logical date) take the last full UTC day.
    """
    if data_interval_start is None or data_interval_end is None or data_interval_end <= data_interval_start:
        end = datetime(run_after.year, run_after.month, run_after.day, tzinfo=run_after.tzinfo)
        data_interval_start, data_interval_end = end - timedelta(days=1), end
    return data_interval_start, data_interval_end, data_interval_start.date().isoformat()


def in_window(last_modified: datetime, start: datetime, end: datetime) -> bool:
    return start <= last_modified < end


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def is_image_key(key: str) -> bool:
    return key.lower().endswith(IMAGE_SUFFIXES)


# --- EMR request bodies --------------------------------------------------------------------

@dataclass(frozen=True)
class StagedArtifacts:
    """S3 URIs written by stage_artifacts."""

    code_uri: str
    featurize_py: str
    pca_py: str
    py_files: str
    bootstrap: str
    requirements: str
    requirements_tensorflow: str
    weights: str
    model_artifact: str = ""  # exported ONNX model (engine onnxruntime); empty: the driver builds the model
    constraints: str = ""  # emr/constraints-emr.txt: every node package pinned, transitive ones included
    wheelhouse: str = ""  # s3://.../wheelhouse/<hash>/: the wheels bootstrap.sh installs (no PyPI on the nodes)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> StagedArtifacts:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


REQUIREMENTS_FILE = "requirements-emr.txt"
REQUIREMENTS_TENSORFLOW_FILE = "requirements-emr-tensorflow.txt"
CONSTRAINTS_FILE = "constraints-emr.txt"


def code_layout(
    bucket: str, artifacts_prefix: str, code_hash: str, weights: str, model_artifact: str = "", wheelhouse: str = ""
) -> StagedArtifacts:
    """Where a code bundle with this content hash lives in S3."""
    base = f"s3://{bucket}/{prefix(artifacts_prefix)}code/{code_hash}/"
    return StagedArtifacts(
        code_uri=base,
        featurize_py=f"{base}featurize.py",
        pca_py=f"{base}pca.py",
        py_files=f"{base}spark_jobs.zip",
        bootstrap=f"{base}bootstrap.sh",
        requirements=f"{base}{REQUIREMENTS_FILE}",
        requirements_tensorflow=f"{base}{REQUIREMENTS_TENSORFLOW_FILE}",
        weights=weights,
        model_artifact=model_artifact,
        constraints=f"{base}{CONSTRAINTS_FILE}",
        wheelhouse=wheelhouse,
    )


def wheelhouse_uri(bucket: str, artifacts_prefix: str, wheelhouse_hash: str) -> str:
    """Where the wheels of one node package set (by content hash) live in S3."""
    return f"s3://{bucket}/{prefix(artifacts_prefix)}wheelhouse/{wheelhouse_hash}/"


def weights_key(artifacts_prefix: str, weights_hash: str, filename: str) -> str:
    return f"{prefix(artifacts_prefix)}weights/{weights_hash}/{filename}"


# The featurize job's defaults, which the DAG does not override; part of an exported model's identity.
EXPORT_POOLING = "avg"
EXPORT_SEED = 42
MODEL_FILE = "model.onnx"
SIDECAR_SUFFIX = ".json"  # spark_jobs.export_model.sidecar_path: <model>.json


def model_key(artifacts_prefix: str, model_hash: str) -> str:
    """Key of an exported ONNX model; its sidecar is the same key + .json."""
    return f"{prefix(artifacts_prefix)}models/{model_hash}/{MODEL_FILE}"


def model_settings(config: RunConfig) -> dict[str, Any]:
    """What the exported model depends on, besides the weights' content and the export code."""
    return {
        "model": config.model,
        "alpha": _num(config.alpha),
        "image_size": config.image_size,
        "pooling": EXPORT_POOLING,
        "seed": EXPORT_SEED,
        "weights": config.weights if weights_kind(config.weights) == "preset" else "file",
        **({"engine": config.engine} if config.engine != "onnxruntime" else {}),  # int8 only: fp32 models keep their staged key
    }


def export_model_command(config: RunConfig, weights: str, output: str, python: str) -> list[str]:
    """`python -m spark_jobs.export_model` for this config; weights: imagenet, random or a local file."""
    return [
        python, "-m", "spark_jobs.export_model",
        "--output", output,
        "--model", config.model,
        "--alpha", _num(config.alpha),
        "--image-size", str(config.image_size),
        "--pooling", EXPORT_POOLING,
        "--weights", weights,
        "--seed", str(EXPORT_SEED),
        "--engine", config.engine,
    ]


def job_arguments(
    config: RunConfig, paths: RunPaths, weights_uri: str, model_artifact: str = "",
    pca_plan: Mapping[str, Any] | None = None,
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
            "--alpha", _num(config.alpha),
            "--image-size", str(config.image_size),
            "--weights", weights_uri,
            "--engine", config.engine,
        ]
    featurize = [
        "--manifest", paths.manifest_uri,
        # the manifest may list only images of the run's raw prefix (the policies allow no other)
        "--allowed-prefix", f"s3://{config.bucket}/{prefix(config.raw_prefix)}",
        "--output", paths.output_uri,
        *model,
        "--arrow-batch-size", str(config.arrow_batch_size),
    ]
    return {"featurize": featurize, "pca": pca_arguments(config, paths, pca_plan)}


def spark_steps(
    config: RunConfig, paths: RunPaths, staged: StagedArtifacts, pca_plan: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """EMR steps: featurize then pca, each a command-runner.jar spark-submit of the staged code.

    Client deploy mode: the driver runs in the step's own process on the primary node, which is
    always on-demand, so a spot reclaim cannot take the driver, and its stderr (the Python
    traceback) is the step's stderr log. CANCEL_AND_WAIT: a failed featurize cancels pca and
    leaves the cluster to the teardown task.
    """
    arguments = job_arguments(config, paths, staged.weights, staged.model_artifact, pca_plan)
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
                    "--py-files", staged.py_files,
                    scripts[job],
                    *arguments[job],
                ],
            },
        }
        for job in ("featurize", "pca")
    ]


DEPLOY_MODE = "client"


# --- local compute mode: the EMR steps, run by spark-submit on the Airflow worker ------------

LOCAL_SPARK_CONF = {
    "spark.ui.enabled": "false",  # no port to clash with another run on the worker
    "spark.sql.session.timeZone": "UTC",  # as on EMR nodes
    "spark.log.level": "WARN",  # the task log keeps the jobs' own lines, not Spark's INFO chatter
}


def local_step_command(
    args: list[str],
    spark_submit: str,
    s3_conf: Mapping[str, str],
    master: str = "local[*,4]",
    driver_memory: str = "2g",
) -> list[str]:
    """An EMR step's `spark-submit --deploy-mode client ...` as a local spark-submit.

    Same script, --py-files and job arguments, s3:// URIs included: Spark reads and writes them
    itself through S3A (`s3_conf`, spark_jobs.s3a). Only the master and the Spark settings differ.
    """
    if not args or args[0] != "spark-submit":
        raise ValueError(f"not a spark-submit step: {args[:3]}")
    command = [spark_submit, "--master", master, "--driver-memory", driver_memory]
    for name, value in {**LOCAL_SPARK_CONF, **s3_conf}.items():
        command += ["--conf", f"{name}={value}"]
    rest = args[1:]
    index = 0
    while index < len(rest):
        if rest[index] == "--deploy-mode":  # the cluster's; local mode runs the driver here
            index += 2
            continue
        command.append(rest[index])
        index += 1
    return command


def cluster_tags(dag_id: str, run_id: str, run_date: str) -> list[dict[str, str]]:
    return [
        {"Key": "project", "Value": PROJECT_TAG},
        {"Key": "dag_id", "Value": dag_id},
        {"Key": "run_id", "Value": tag_value(run_id)},
        {"Key": "run_date", "Value": run_date},
        MANAGED_POLICY_TAG,
    ]


def job_flow_overrides(
    config: RunConfig, paths: RunPaths, staged: StagedArtifacts, dag_id: str, run_id: str
) -> dict[str, Any]:
    """The RunJobFlow request of a transient cluster: Spark on instance fleets, idle-timeout backstop."""
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
            core_fleet,
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


def needs_tensorflow(config: RunConfig, model_artifact: str) -> bool:
    """The cluster builds the model itself (engine tensorflow, or no exported model staged)."""
    return config.engine == "tensorflow" or not model_artifact


def bootstrap_args(config: RunConfig, staged: StagedArtifacts) -> list[str]:
    """The wheelhouse and the node constraints, the light requirements always, the TensorFlow
    add-on only when the cluster builds the model."""
    if not staged.wheelhouse:
        raise ValueError("no wheelhouse staged: stage_artifacts stages one for every EMR run")
    requirements = [staged.requirements]
    if needs_tensorflow(config, staged.model_artifact):
        requirements.append(staged.requirements_tensorflow)
    return [staged.wheelhouse, staged.constraints, *requirements]


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


# --- validation of a finished run ------------------------------------------------------------

REQUIRED_OUTPUTS = ("features/", "pca/", "report.json")


def reconcile(report: Mapping[str, Any], manifest_images: int, present_keys: set[str]) -> list[str]:
    """Problems with a run's outputs: counts that do not add up, missing outputs. Empty when all is well."""
    problems = [f"output {name} is missing" for name in REQUIRED_OUTPUTS if name not in present_keys]
    try:
        seen, rows, quarantined = (int(report[k]) for k in ("images_seen", "features_rows", "quarantined"))
    except (KeyError, TypeError, ValueError) as exc:
        return [*problems, f"report.json lacks a count ({exc!r})"]
    if seen != manifest_images:
        problems.append(f"report says {seen} images seen, the manifest lists {manifest_images}")
    if rows + quarantined != manifest_images:
        problems.append(
            f"features ({rows}) + quarantined ({quarantined}) = {rows + quarantined},"
            f" not the {manifest_images} images of the manifest"
        )
    return problems


@dataclass(frozen=True)
class CostEstimate:
    hours: float
    usd: float
    lines: list[str] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)


def estimate_cost(
    config: RunConfig, started: datetime, ended: datetime, prices: Mapping[str, Mapping[str, float]]
) -> CostEstimate:
    """Instance-hours x (EMR fee + EC2 price): primary on-demand, core at spot or on-demand.

    Core nodes are priced as the first (preferred) fleet type; spot that fell back to on-demand costs more.
    """
    hours = max((ended - started).total_seconds(), 0.0) / 3600
    market = "spot" if config.use_spot else "on_demand"
    nodes = [("primary", config.master_instance_type, 1, "on_demand"),
             ("core", config.core_instance_types[0], config.core_instance_count, market)]
    usd, lines, unpriced = 0.0, [], []
    for role, instance_type, count, node_market in nodes:
        price = prices.get(instance_type)
        if not price or node_market not in price or "emr" not in price:
            unpriced.append(instance_type)
            continue
        rate = count * (float(price["emr"]) + float(price[node_market]))
        usd += rate * hours
        lines.append(f"{role}: {count} x {instance_type} {node_market} at ${rate:.3f}/h")
    return CostEstimate(hours=hours, usd=round(usd, 4), lines=lines, unpriced=unpriced)


def merge_prices(overrides: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    table = {k: dict(v) for k, v in PRICE_TABLE.items()}
    for instance_type, price in (overrides or {}).items():
        if not isinstance(price, Mapping):
            raise ConfigError(
                f"Variable {PRICES_VARIABLE}[{instance_type!r}] must be an object like"
                ' {"emr": 0.048, "on_demand": 0.192, "spot": 0.075}.'
            )
        table.setdefault(instance_type, {}).update({k: float(v) for k, v in price.items()})
    return table


# --- helpers ---------------------------------------------------------------------------------

_TYPES: dict[str, Any] = {f.name: f.type for f in fields(RunConfig)}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Convert a Param/Variable/env value to the RunConfig field type, or say which input is wrong."""
    kind = _TYPES[name]
    try:
        if value is None:
            if "None" in str(kind):
                return None
            if kind == "str":
                return ""
            raise ValueError("no value")
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("not a boolean")
        if kind in ("int", "int | None"):
            if kind == "int | None" and str(value).strip() in ("", "null", "none", "None"):
                return None
            number = float(value)
            if isinstance(value, bool) or not number.is_integer():
                raise ValueError("not an integer")
            return int(number)
        if kind == "float":
            number = float(value)
            if isinstance(value, bool) or math.isnan(number):
                raise ValueError("not a number")
            return number
        if kind == "tuple[str, ...]":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        return str(value).strip()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source} = {value!r} is not a valid {name} ({exc}); expected {kind}.") from None


def _coerce_all(data: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _coerce(name, data[name], source=f"setting {name!r}") for name in _TYPES if name in data}


def _normalise(value: Any) -> Any:
    if value == "":
        return None  # the trigger form sends a cleared text field as null
    return list(value) if isinstance(value, tuple) else value


def _num(value: float) -> str:
    return repr(float(value))


def tag_value(value: str) -> str:
    """EMR tag values allow letters, digits, spaces and _ . : / = + - @ (max 256)."""
    return re.sub(r"[^\w .:/=+\-@]", "_", value)[:256]
