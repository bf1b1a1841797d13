"""What stage_artifacts puts in S3 and under which identity: the code bundle, the exported model
(keyed by the hash of its settings, weights and export code), the weights and the node wheelhouse."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from fruits_emr.settings import RunConfig, number_arg, weights_kind
from spark_jobs.s3_uri import key_prefix


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
    lineage_jar: str = ""  # the OpenLineage Spark listener the steps load (fruits_emr.lineage); empty: lineage off

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
    base = f"s3://{bucket}/{key_prefix(artifacts_prefix)}code/{code_hash}/"
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
    return f"s3://{bucket}/{key_prefix(artifacts_prefix)}wheelhouse/{wheelhouse_hash}/"


def jar_key(artifacts_prefix: str, jar_hash: str, filename: str) -> str:
    return f"{key_prefix(artifacts_prefix)}jars/{jar_hash}/{filename}"


def weights_key(artifacts_prefix: str, weights_hash: str, filename: str) -> str:
    return f"{key_prefix(artifacts_prefix)}weights/{weights_hash}/{filename}"


# The featurize job's defaults, which the DAG does not override; part of an exported model's identity.
EXPORT_POOLING = "avg"
EXPORT_SEED = 42
MODEL_FILE = "model.onnx"
SIDECAR_SUFFIX = ".json"  # spark_jobs.export_model.sidecar_path: <model>.json


def model_key(artifacts_prefix: str, model_hash: str) -> str:
    """Key of an exported ONNX model; its sidecar is the same key + .json."""
    return f"{key_prefix(artifacts_prefix)}models/{model_hash}/{MODEL_FILE}"


def model_settings(config: RunConfig) -> dict[str, Any]:
    """What the exported model depends on, besides the weights' content and the export code."""
    return {
        "model": config.model,
        "alpha": number_arg(config.alpha),
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
        "--alpha", number_arg(config.alpha),
        "--image-size", str(config.image_size),
        "--pooling", EXPORT_POOLING,
        "--weights", weights,
        "--seed", str(EXPORT_SEED),
        "--engine", config.engine,
    ]


def needs_tensorflow(config: RunConfig, model_artifact: str) -> bool:
    """The cluster builds the model itself (engine tensorflow, or no exported model staged)."""
    return config.engine == "tensorflow" or not model_artifact
