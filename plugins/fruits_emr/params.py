"""The DAG's Params: one Airflow Param (UI form field) per RunConfig setting, with its schema and help."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fruits_emr.releases import DEFAULT_RELEASE, EMR_SPARK
from fruits_emr.settings import (
    CLUSTER_SHAPES,
    MAX_ALPHA,
    MAX_ARROW_BATCH_SIZE,
    MAX_CORE_INSTANCES,
    MAX_CORE_INSTANCES_ENV,
    MAX_FILE_BYTES,
    MAX_FLEET_INSTANCE_TYPES,
    MAX_IDLE_TIMEOUT_MINUTES,
    MAX_IMAGE_SIZE,
    MAX_PCA_COMPONENTS,
    MAX_PREFIX_LENGTH,
    MAX_WEIGHTS_LENGTH,
    MIN_IMAGE_SIZE,
    max_core_instances,
)
from spark_jobs.contract.model_choices import BACKBONES, ENGINES

# A setting that may stay empty. Airflow's trigger form marks a Param required unless its schema's
# type list includes "null" (and clears a text field to null), so "empty" must be nullable there.
OPTIONAL_STRING: dict[str, Any] = {"type": ["null", "string"]}
PREFIX: dict[str, Any] = {"type": "string", "maxLength": MAX_PREFIX_LENGTH}
INSTANCE_TYPE: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 32}
IAM_NAME: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 64}

PARAM_DOCS: dict[str, tuple[str, dict[str, Any]]] = {
    "bucket": (
        "S3 bucket holding raw images, outputs, staged code and EMR logs. Required: here, in the Variable"
        " fruits_features_defaults or in the environment variable FRUITS_BUCKET.",
        {**OPTIONAL_STRING, "maxLength": 63},
    ),
    "raw_prefix": ("Key prefix of the raw images, laid out <label>/<file>.", PREFIX),
    "output_prefix": ("Key prefix of the outputs; one run_date=YYYY-MM-DD partition per run.", PREFIX),
    "artifacts_prefix": ("Key prefix where job code, bootstrap and weights are staged.", PREFIX),
    "logs_prefix": ("Key prefix of the EMR LogUri (cluster and step logs).", PREFIX),
    "variance": (
        "PCA keeps the smallest k reaching this cumulative explained variance (ignored when k is set).",
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    ),
    "k": (
        "Fixed number of PCA components; empty = use variance.",
        {"type": ["null", "integer"], "minimum": 1, "maximum": MAX_PCA_COMPONENTS},
    ),
    "model": ("CNN backbone.", {"type": "string", "enum": list(BACKBONES)}),
    "alpha": ("MobileNetV2 width multiplier.", {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_ALPHA}),
    "image_size": (
        "Square input size in pixels.",
        {"type": "integer", "minimum": MIN_IMAGE_SIZE, "maximum": MAX_IMAGE_SIZE},
    ),
    "weights": (
        "imagenet, random, an s3:// object under the artifacts prefix, or a weights file in the repo's models/"
        " folder, e.g. models/<file>.h5 (staged to S3 by the DAG; any other path is refused).",
        {"type": "string", "minLength": 1, "maxLength": MAX_WEIGHTS_LENGTH},
    ),
    "engine": ("Inference engine on the executors.", {"type": "string", "enum": list(ENGINES)}),
    "arrow_batch_size": (
        "Rows per Arrow batch sent to a Python worker.",
        {"type": "integer", "minimum": 1, "maximum": MAX_ARROW_BATCH_SIZE},
    ),
    "max_file_bytes": (
        "Raw files larger than this many bytes are quarantined without being read (default 32 MiB; phone"
        " photos are 1-12 MB). A Python worker holds arrow_batch_size files at once.",
        {"type": "integer", "minimum": 1, "maximum": MAX_FILE_BYTES},
    ),
    "release_label": (
        f"EMR release (Spark 3.5); the default {DEFAULT_RELEASE} runs the Spark the tests run"
        " (plugins/fruits_emr/releases.py).",
        {"type": "string", "enum": list(EMR_SPARK)},
    ),
    "master_instance_type": ("EC2 type of the primary node (always on-demand).", INSTANCE_TYPE),
    "core_instance_types": (
        "EC2 types the core fleet may use, preferred first.",
        {"type": "array", "items": INSTANCE_TYPE, "minItems": 1, "maxItems": MAX_FLEET_INSTANCE_TYPES},
    ),
    "core_instance_count": (
        f"Number of core nodes (at most {MAX_CORE_INSTANCES_ENV}, default {MAX_CORE_INSTANCES}).",
        {"type": "integer", "minimum": 1},
    ),
    "cluster_shape": (
        "auto: the primary node alone while the cost model (docs/cost.md) finds it cheaper and fast enough"
        " for the day's new images, else core_instance_count core nodes; primary_only or cluster force a shape.",
        {"type": "string", "enum": list(CLUSTER_SHAPES)},
    ),
    "use_spot": ("Core nodes on spot, switching to on-demand when spot is not available.", {"type": "boolean"}),
    "idle_timeout_minutes": (
        "AutoTerminationPolicy backstop: EMR ends the cluster after this long idle.",
        {"type": "integer", "minimum": 1, "maximum": MAX_IDLE_TIMEOUT_MINUTES},
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
    "subnet_id": (
        "EC2 subnet of the cluster; empty = the account's default VPC.",
        {**OPTIONAL_STRING, "maxLength": 24},
    ),
    "service_role": ("EMR service role (AWS's default EMR_DefaultRole_V2 with AmazonEMRServicePolicy_v2).", IAM_NAME),
    "job_flow_role": ("EC2 instance profile of the cluster nodes.", IAM_NAME),
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


def param_specs(defaults: Mapping[str, Any], max_core: int | None = None) -> dict[str, dict[str, Any]]:
    """Keyword arguments of one airflow.sdk.Param per run setting (UI form fields)."""
    specs = {
        name: {"default": defaults[name], "description": doc, "title": name.replace("_", " "), **schema}
        for name, (doc, schema) in PARAM_DOCS.items()
    }
    specs["core_instance_count"]["maximum"] = max_core or max_core_instances()
    return specs
