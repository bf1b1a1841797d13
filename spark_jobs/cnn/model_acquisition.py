"""How the featurize job's driver gets its model: the weights (named, a local file or a Hadoop URI),
the exported artifact executors load (exported once per process, or a pre-exported ONNX model
with its sidecar), shipped to the executors under a name that carries its content hash."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from spark_jobs import hadoop_fs
from spark_jobs.cnn.backbones import ModelSpec, engine_model_id, export_artifact
from spark_jobs.cnn.exported_model import sidecar_path, spec_from_description
from spark_jobs.contract.model_choices import NAMED_WEIGHTS, ONNX_ENGINES
from spark_jobs.featurization.input_errors import InputError

# Driver-side cache: one exported artifact per (spec, engine) in this process.
_ARTIFACTS: dict[tuple[ModelSpec, str], Path] = {}


@dataclass(frozen=True)
class AcquiredModel:
    """The model a run featurizes with, its artifact already shipped to the executors."""

    spec: ModelSpec
    engine: str
    artifact: Path
    model_id: str  # written next to every output row
    weights: str  # as the user named them (a file by its name)


def acquire_model(spark: SparkSession, args: argparse.Namespace) -> AcquiredModel:
    """The pre-exported --model-artifact, or the model the options describe, exported; shipped."""
    if getattr(args, "model_artifact", None):
        model = _pre_exported(spark, args, Path(tempfile.mkdtemp(prefix="fruits-model-")))  # kept: addFile
    else:
        with tempfile.TemporaryDirectory(prefix="fruits-weights-") as workdir:  # a downloaded weights file
            model = _exported(spark, args, Path(workdir))
    ship_to_executors(spark, model.artifact)
    return model


def _pre_exported(spark: SparkSession, args: argparse.Namespace, workdir: Path) -> AcquiredModel:
    if args.engine not in ONNX_ENGINES:
        raise InputError(f"--model-artifact is an ONNX model: use it with --engine {' or '.join(ONNX_ENGINES)}")
    artifact, spec, model_id, weights = fetch_exported_model(spark, args.model_artifact, args.engine, workdir)
    return AcquiredModel(spec, args.engine, artifact, model_id, weights)


def _exported(spark: SparkSession, args: argparse.Namespace, workdir: Path) -> AcquiredModel:
    spec = ModelSpec(
        backbone=args.model,
        alpha=args.alpha,
        image_size=args.image_size,
        pooling=args.pooling,
        weights=args.weights,
        seed=args.seed,
    ).validate()
    spec = replace(spec, weights=resolve_weights(spark, args.weights, workdir))
    return AcquiredModel(spec, args.engine, model_artifact(spec, args.engine), engine_model_id(spec, args.engine), args.weights)


def resolve_weights(spark: SparkSession, weights: str, workdir: Path) -> str:
    """imagenet/random as they are; a file (local or any Hadoop URI) as a local path on the driver."""
    if weights in NAMED_WEIGHTS:
        return weights
    scheme = urlparse(weights).scheme
    if scheme and len(scheme) > 1:  # s3://, s3a://, hdfs://, file: — not a Windows drive letter
        if not hadoop_fs.exists(spark, weights):
            raise InputError(f"weights file {weights} does not exist")
        local = workdir / Path(urlparse(weights).path).name
        return str(hadoop_fs.download_file(spark, weights, local))
    if not Path(weights).is_file():
        raise InputError(f"weights file {weights} does not exist (or use imagenet / random)")
    return str(Path(weights).resolve())


def content_named(path: Path, directory: Path) -> Path:
    """Move the file to directory/fruits-<sha256 prefix><suffixes>: its name says its content."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    named = directory / f"fruits-{digest}{''.join(path.suffixes)}"
    shutil.move(path, named)
    return named


def model_artifact(spec: ModelSpec, engine: str) -> Path:
    """Export the model once per driver process; the file name carries its content hash."""
    key = (spec, engine)
    if key not in _ARTIFACTS or not _ARTIFACTS[key].exists():
        workdir = Path(tempfile.mkdtemp(prefix="fruits-model-"))
        _ARTIFACTS[key] = content_named(export_artifact(spec, engine, workdir), workdir)
    return _ARTIFACTS[key]


def fetch_exported_model(spark: SparkSession, uri: str, engine: str, workdir: Path) -> tuple[Path, ModelSpec, str, str]:
    """A pre-exported ONNX model and its sidecar: (local file named by content, spec, model id, weights)."""
    for needed in (uri, sidecar_path(uri)):
        if not hadoop_fs.exists(spark, needed):
            raise InputError(f"model artifact {needed} does not exist (make it with python -m model_export.export_model)")
    description = hadoop_fs.read_json(spark, sidecar_path(uri))
    exported_for = description.get("engine", "onnxruntime")
    if exported_for != engine:
        raise InputError(
            f"model artifact {uri} was exported for --engine {exported_for}, not {engine}:"
            f" use it with --engine {exported_for}, or export one with model_export.export_model --engine {engine}"
        )
    local = content_named(hadoop_fs.download_file(spark, uri, workdir / "model.onnx"), workdir)
    spec = spec_from_description(description)
    return local, spec, description["model_id"], description["weights"]


def ship_to_executors(spark: SparkSession, artifact: Path) -> None:
    """addFile once per name: artifact names carry their content hash, so a name already
    shipped is the same model (Spark refuses a second path under one name)."""
    shipped = {uri.rsplit("/", 1)[-1] for uri in spark.sparkContext.listFiles}
    if artifact.name not in shipped:
        spark.sparkContext.addFile(str(artifact))
