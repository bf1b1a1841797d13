"""Run settings of the fruits_features DAG: RunConfig, the merge of Params over the defaults
Variable and the environment, and the validation that names the setting to fix.

Pure functions only: no AWS, Airflow or file-system calls.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from fruits_emr.releases import DEFAULT_RELEASE, EMR_SPARK
from spark_jobs.contract.model_choices import (
    BACKBONES,
    DEFAULT_MAX_FILE_BYTES,
    ENGINES,
    MOBILENET_ALPHAS,
    MOBILENET_IMAGENET_SIZES,
    NAMED_WEIGHTS,
)
from spark_jobs.contract.s3_uri import key_prefix

DAG_ID = "fruits_features"
PROJECT_TAG = "fruits"
ENV_PREFIX = "FRUITS_"
DEFAULTS_VARIABLE = "fruits_features_defaults"

MAX_FLEET_INSTANCE_TYPES = 30  # per fleet, with an allocation strategy (5 without one)

# auto: fruits_emr.cost.choose_shape from the day's image count; primary_only: the primary node runs
# driver and executors; cluster: core_instance_count core nodes run the executors
CLUSTER_SHAPES = ("auto", "primary_only", "cluster")

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
# IAM role and instance profile names (the IAM policies let Airflow pass only the two configured ones)
IAM_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")
SUBNET_ID = re.compile(r"subnet-[0-9a-f]{8,17}")

# Upper bounds of the Params that had none: every value a trigger form or the Variable can set is bounded.
MAX_PREFIX_LENGTH = 512  # S3 keys end at 1,024 bytes; the run layout under a prefix needs the rest
MAX_WEIGHTS_LENGTH = 1024  # an s3:// URI of a key of up to 1,024 bytes, or a path under models/
MAX_PCA_COMPONENTS = 2048  # the widest feature vector of the backbones (ResNet50's 2,048; MobileNetV2 1.4: 1,792)
MAX_ALPHA = max(MOBILENET_ALPHAS)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024
# Rows per Arrow batch: a batch's decoded float32 images at 224 px take ~0.6 MB a row in the Python
# worker, whose budget is 1.5 GB (emr_request.PYTHON_WORKER_MEMORY_MB): 1,024 rows stay within it.
MAX_ARROW_BATCH_SIZE = 1024
# a file the nodes' Python worker (1.5 GB, emr_request.PYTHON_WORKER_MEMORY_MB) can still decode
MAX_FILE_BYTES = 512 * 2**20
MAX_IDLE_TIMEOUT_MINUTES = 7 * 24 * 60


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
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
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
    cluster_shape: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["core_instance_types"] = list(self.core_instance_types)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        return cls(**_coerce_all(data))


CODE_DEFAULTS: dict[str, Any] = RunConfig().to_dict()


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
        if len(value) > MAX_PREFIX_LENGTH:
            raise ConfigError(f"Param {name!r} is {len(value)} characters long; use at most {MAX_PREFIX_LENGTH}.")
        if "://" in value or value.startswith("/") or "\\" in value or {".", ".."} & set(value.split("/")):
            raise ConfigError(
                f"Param {name!r} = {value!r} must be a key prefix inside the bucket, like 'raw/'"
                " (no s3://, no leading '/', no '.' or '..' segments, no backslash)."
            )
    raw, out = key_prefix(config.raw_prefix), key_prefix(config.output_prefix)
    if out.startswith(raw) or raw.startswith(out):
        raise ConfigError(
            f"Params 'raw_prefix' ({raw!r}) and 'output_prefix' ({out!r}) overlap: the run's plots would be"
            " read back as images. Use separate prefixes such as 'raw/' and 'features/'."
        )
    if not 0 < config.variance <= 1:
        raise ConfigError(f"Param 'variance' = {config.variance} must be in (0, 1], e.g. 0.95.")
    if config.k is not None and not 1 <= config.k <= MAX_PCA_COMPONENTS:
        raise ConfigError(
            f"Param 'k' = {config.k} must be 1..{MAX_PCA_COMPONENTS} (no backbone has more features),"
            " or empty to use 'variance'."
        )
    if not 0 < config.alpha <= MAX_ALPHA:
        raise ConfigError(f"Param 'alpha' = {config.alpha} must be in (0, {MAX_ALPHA}], e.g. 1.0.")
    if not MIN_IMAGE_SIZE <= config.image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"Param 'image_size' = {config.image_size} must be {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels, e.g. 224."
        )
    if not 1 <= config.arrow_batch_size <= MAX_ARROW_BATCH_SIZE:
        raise ConfigError(
            f"Param 'arrow_batch_size' = {config.arrow_batch_size} must be 1..{MAX_ARROW_BATCH_SIZE} rows, e.g. 128"
            " (a larger batch would not fit the Python worker's memory on the nodes)."
        )
    if not config.weights or len(config.weights) > MAX_WEIGHTS_LENGTH:
        raise ConfigError(
            f"Param 'weights' must be 1..{MAX_WEIGHTS_LENGTH} characters: 'imagenet', 'random', an s3:// URI or"
            " 'models/<file>'."
        )
    if config.model not in BACKBONES:
        raise ConfigError(f"Param 'model' = {config.model!r} is not a known backbone; use one of {list(BACKBONES)}.")
    if config.cluster_shape not in CLUSTER_SHAPES:
        raise ConfigError(
            f"Param 'cluster_shape' = {config.cluster_shape!r} is not a cluster shape; use one of {list(CLUSTER_SHAPES)}."
        )
    if config.engine not in ENGINES:
        raise ConfigError(f"Param 'engine' = {config.engine!r} is not a known engine; use one of {list(ENGINES)}.")
    if weights_kind(config.weights) == "s3":
        # the IAM policies (fruits_emr.iam) let Airflow and the cluster read only the artifacts prefix
        staged = f"s3://{config.bucket}/{key_prefix(config.artifacts_prefix)}"
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
        if config.weights == "imagenet" and config.image_size not in MOBILENET_IMAGENET_SIZES:
            raise ConfigError(
                f"Param 'image_size' = {config.image_size} has no ImageNet MobileNetV2 weights;"
                f" use one of {list(MOBILENET_IMAGENET_SIZES)}."
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
                    " (INSTANCE_FAMILIES in plugins/fruits_emr/settings.py widens the list)."
                )
    if not 1 <= config.max_file_bytes <= MAX_FILE_BYTES:
        raise ConfigError(
            f"Param 'max_file_bytes' = {config.max_file_bytes} must be 1..{MAX_FILE_BYTES} (512 MiB; default"
            f" {DEFAULT_MAX_FILE_BYTES}: 32 MiB); larger raw files are quarantined unread."
        )
    if config.core_instance_count < 1:
        raise ConfigError(f"Param 'core_instance_count' = {config.core_instance_count} must be at least 1.")
    cap = max_core or max_core_instances()
    if config.core_instance_count > cap:
        raise ConfigError(
            f"Param 'core_instance_count' = {config.core_instance_count} is above the cap of {cap} core nodes;"
            f" use at most {cap}, or raise the cap with the environment variable {MAX_CORE_INSTANCES_ENV}."
        )
    if not 1 <= config.idle_timeout_minutes <= MAX_IDLE_TIMEOUT_MINUTES:
        raise ConfigError(
            f"Param 'idle_timeout_minutes' = {config.idle_timeout_minutes} must be 1..{MAX_IDLE_TIMEOUT_MINUTES} (7 days)."
        )
    if config.release_label not in EMR_SPARK:
        raise ConfigError(
            f"Param 'release_label' = {config.release_label!r} is not a release the pipeline was checked on;"
            f" use one of {list(EMR_SPARK)} (default {DEFAULT_RELEASE}), or add it to plugins/fruits_emr/releases.py."
        )
    if config.subnet_id and not SUBNET_ID.fullmatch(config.subnet_id):
        raise ConfigError(f"Param 'subnet_id' = {config.subnet_id!r} must look like 'subnet-0123abcd' or be empty.")
    for name in ("service_role", "job_flow_role"):
        if not IAM_NAME.fullmatch(getattr(config, name)):
            raise ConfigError(
                f"Param {name!r} = {getattr(config, name)!r} is not an IAM role / instance profile name"
                " (1..64 letters, digits and +=,.@_-)."
            )
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
    if weights in NAMED_WEIGHTS:
        return "preset"
    if weights.startswith("s3://"):
        return "s3"
    return "file"


def sse_arguments(config: RunConfig) -> dict[str, str]:
    """boto3 put_object / upload_file ExtraArgs that encrypt an object as the run asks."""
    if config.kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": config.kms_key_id}
    return {"ServerSideEncryption": "AES256"}


# --- coercion of Param, Variable and environment values ----------------------------------

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


def number_arg(value: float) -> str:
    """A number as a job argument: always a float, in a form that reads back exactly."""
    return repr(float(value))
