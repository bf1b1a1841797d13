"""What stage_artifacts puts in S3 and under which identity: the code bundle, the exported model
(keyed by model_export.model_identity.model_hash), the weights and the node wheelhouse."""

from __future__ import annotations

from dataclasses import dataclass

from fruits_emr.settings import RunConfig
from model_export.model_identity import ExportSettings
from spark_jobs.contract.run_files import MODEL_FILE
from spark_jobs.contract.s3_uri import key_prefix


@dataclass(frozen=True)
class StagedArtifacts:
    """S3 URIs written by stage_artifacts."""

    code_uri: str
    featurize_py: str
    pca_py: str
    py_files: str
    bootstrap: str
    weights: str
    model_artifact: str = ""  # exported ONNX model (engine onnxruntime); empty: the driver builds the model
    # s3://.../wheelhouse/<hash>/: the wheels bootstrap.sh installs (no PyPI on the nodes) and their
    # hash file (HASHED_REQUIREMENTS_FILE), which pins every wheel by sha256
    wheelhouse: str = ""
    lineage_jar: str = ""  # the OpenLineage Spark listener the steps load (fruits_emr.lineage); empty: lineage off


# In each staged wheelhouse: the hash file it was built from (emr/hashed-requirements-emr*.txt);
# emr/bootstrap.sh installs exactly it, with pip --require-hashes.
HASHED_REQUIREMENTS_FILE = "requirements-hashed.txt"


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
        weights=weights,
        model_artifact=model_artifact,
        wheelhouse=wheelhouse,
    )


def wheelhouse_uri(bucket: str, artifacts_prefix: str, wheelhouse_hash: str) -> str:
    """Where the wheels of one node package set (by content hash) live in S3."""
    return f"s3://{bucket}/{key_prefix(artifacts_prefix)}wheelhouse/{wheelhouse_hash}/"


def jar_key(artifacts_prefix: str, jar_hash: str, filename: str) -> str:
    return f"{key_prefix(artifacts_prefix)}jars/{jar_hash}/{filename}"


def weights_key(artifacts_prefix: str, weights_hash: str, filename: str) -> str:
    return f"{key_prefix(artifacts_prefix)}weights/{weights_hash}/{filename}"


def model_key(artifacts_prefix: str, model_hash: str) -> str:
    """Key of an exported ONNX model (model_export.model_identity.model_hash); its sidecar is the same key + .json."""
    return f"{key_prefix(artifacts_prefix)}models/{model_hash}/{MODEL_FILE}"


def export_settings(config: RunConfig, weights: str) -> ExportSettings:
    """What the run's model is exported with; weights: imagenet, random or a local weights file."""
    return ExportSettings(model=config.model, alpha=config.alpha, image_size=config.image_size, weights=weights,
                          engine=config.engine)


def needs_tensorflow(config: RunConfig, model_artifact: str) -> bool:
    """The cluster builds the model itself (engine tensorflow, or no exported model staged)."""
    return config.engine == "tensorflow" or not model_artifact
