"""The description of an exported model (its sidecar, <model>.json): what the featurize job needs to
know about a pre-exported ONNX model, written by model_export and read by the job's driver."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from spark_jobs.cnn.backbones import ModelSpec, engine_model_id, feature_dim
from spark_jobs.contract.model_choices import NAMED_WEIGHTS
from spark_jobs.contract.run_files import MODEL_SIDECAR_SUFFIX


def sidecar_path(artifact: str) -> str:
    return artifact + MODEL_SIDECAR_SUFFIX


def describe(spec: ModelSpec, engine: str = "onnxruntime", calibration: list[dict[str, str]] | None = None) -> dict:
    """What the featurize job needs to know about an exported model (int8: its calibration images)."""
    description = asdict(spec)
    description["weights"] = spec.weights if spec.weights in NAMED_WEIGHTS else Path(spec.weights).name
    description.update(model_id=engine_model_id(spec, engine), feature_dim=feature_dim(spec), engine=engine)
    if calibration is not None:
        description["calibration"] = calibration
    return description


def spec_from_description(description: dict) -> ModelSpec:
    fields = {name: description[name] for name in ("backbone", "alpha", "image_size", "pooling", "weights", "seed")}
    return ModelSpec(**fields).validate()
