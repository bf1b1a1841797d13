"""Export the CNN once to ONNX, with a sidecar JSON describing it, so the featurize job's
driver and executors need no TensorFlow (`featurize --model-artifact model.onnx`).

    python -m spark_jobs.export_model --output model.onnx [--model ... --alpha ... --weights ...]
        [--engine onnxruntime-int8 [--calibration-images FOLDER]]

With --engine onnxruntime-int8 the model is quantized (spark_jobs.quantize) and the sidecar
lists the calibration images with their sha256.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from spark_jobs import quantize
from spark_jobs.backbones import (
    BACKBONES,
    INT8_ENGINE,
    NAMED_WEIGHTS,
    ONNX_ENGINES,
    POOLINGS,
    ModelConfigError,
    ModelSpec,
    engine_model_id,
    export_artifact,
    feature_dim,
)

SIDECAR_SUFFIX = ".json"


def sidecar_path(artifact: str) -> str:
    return artifact + SIDECAR_SUFFIX


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


def export_onnx(
    spec: ModelSpec, output: Path, engine: str = "onnxruntime", calibration_root: Path = quantize.CALIBRATION_ROOT
) -> dict:
    """Write output (ONNX) and output.json; return the description."""
    with tempfile.TemporaryDirectory(prefix="fruits-export-") as tmp:
        exported = export_artifact(spec, engine, Path(tmp), calibration_root)
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(exported, output)
    calibration = None
    if engine == INT8_ENGINE:  # the images export_artifact calibrated on
        calibration = quantize.calibration_list(quantize.calibration_files(calibration_root), calibration_root)
    description = describe(spec, engine, calibration)
    Path(sidecar_path(str(output))).write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    return description


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="ONNX file to write (its sidecar is OUTPUT.json)")
    parser.add_argument("--model", default="mobilenet_v2", choices=sorted(BACKBONES))
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--pooling", default="avg", choices=POOLINGS)
    parser.add_argument("--weights", default="imagenet", help="imagenet, random, or a local weights file")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--engine", default="onnxruntime", choices=ONNX_ENGINES, help="onnxruntime-int8: quantized")
    parser.add_argument(
        "--calibration-images",
        type=Path,
        default=quantize.CALIBRATION_ROOT,
        help="int8: folder of real photos to calibrate on, all of them (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    weights = args.weights
    if weights not in NAMED_WEIGHTS:
        if not Path(weights).is_file():
            print(f"export_model: error: weights file {weights} does not exist", file=sys.stderr)
            return 2
        weights = str(Path(weights).resolve())
    spec = ModelSpec(args.model, args.alpha, args.image_size, args.pooling, weights, args.seed)
    try:
        description = export_onnx(spec.validate(), Path(args.output), args.engine, args.calibration_images)
    except ModelConfigError as exc:
        print(f"export_model: error: {exc}", file=sys.stderr)
        return 2
    print(f"export_model: {description['model_id']} ({args.engine}) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
