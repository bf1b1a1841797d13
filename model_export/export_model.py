"""Export the CNN once to ONNX, with a sidecar JSON describing it, so the featurize job's
driver and executors need no TensorFlow (`featurize --model-artifact model.onnx`).

    python -m model_export.export_model --output model.onnx [--model ... --alpha ... --weights ...]
        [--engine onnxruntime-int8 [--calibration-images FOLDER]]

With --engine onnxruntime-int8 MobileNetV2 is fine-tuned for int8 first
(model_export.quantization_training), then quantized (model_export.quantize); the sidecar lists the
calibration images with their sha256. Exit code 2: settings the exporter cannot use.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from model_export import quantization_training, quantize
from model_export.model_identity import CALIBRATION_ROOT, CalibrationError, calibration_files, calibration_list
from spark_jobs.cnn.backbones import ModelConfigError, ModelSpec, build_model, export_artifact, write_onnx
from spark_jobs.cnn.exported_model import describe, sidecar_path
from spark_jobs.contract.model_choices import BACKBONES, INT8_ENGINE, NAMED_WEIGHTS, ONNX_ENGINES, POOLINGS


def export_int8(spec: ModelSpec, out_dir: Path, calibration_root: Path) -> Path:
    """Quantization-aware fine-tuning (MobileNetV2: model_export.quantization_training), then the
    static quantization (model_export.quantize), both on the calibration images."""
    try:
        files = calibration_files(calibration_root)
    except CalibrationError as exc:
        raise ModelConfigError(str(exc)) from None
    pixels = quantize.calibration_pixels(files, spec.image_size)
    trained = quantization_training.applies_to(spec.backbone)
    model = build_model(spec)
    if trained:  # the weights learn to tolerate int8 first; bias correction would then count twice
        quantization_training.fine_tune(model, build_model(spec), pixels, quantize.CALIBRATION_PERCENTILE)
    fp32 = write_onnx(model, spec, out_dir / "fp32" / "model.onnx")
    path = quantize.quantize_onnx(fp32, out_dir / "model.onnx", pixels, bias_correction=not trained)
    fp32.unlink()
    return path


def export_onnx(
    spec: ModelSpec, output: Path, engine: str = "onnxruntime", calibration_root: Path = CALIBRATION_ROOT
) -> dict:
    """Write output (ONNX) and output.json; return the description."""
    with tempfile.TemporaryDirectory(prefix="fruits-export-") as tmp:
        if engine == INT8_ENGINE:
            exported = export_int8(spec, Path(tmp), calibration_root)
        else:
            exported = export_artifact(spec, engine, Path(tmp))
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(exported, output)
    calibration = None
    if engine == INT8_ENGINE:  # the images export_int8 calibrated on
        calibration = calibration_list(calibration_files(calibration_root), calibration_root)
    description = describe(spec, engine, calibration)
    Path(sidecar_path(str(output))).write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    return description


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="ONNX file to write (its sidecar is OUTPUT.json)")
    parser.add_argument("--model", default="mobilenet_v2", choices=BACKBONES)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--pooling", default="avg", choices=POOLINGS)
    parser.add_argument("--weights", default="imagenet", help="imagenet, random, or a local weights file")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--engine", default="onnxruntime", choices=ONNX_ENGINES, help="onnxruntime-int8: quantized")
    parser.add_argument(
        "--calibration-images",
        type=Path,
        default=CALIBRATION_ROOT,
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
