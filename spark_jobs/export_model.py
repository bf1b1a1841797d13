"""Export the CNN once to ONNX, with a sidecar JSON describing it, so the featurize job's
driver and executors need no TensorFlow (`featurize --model-artifact model.onnx`).

    python -m spark_jobs.export_model --output model.onnx [--model ... --alpha ... --weights ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from spark_jobs.backbones import BACKBONES, NAMED_WEIGHTS, POOLINGS, ModelConfigError, ModelSpec, export_artifact, feature_dim

SIDECAR_SUFFIX = ".json"


def sidecar_path(artifact: str) -> str:
    return artifact + SIDECAR_SUFFIX


def describe(spec: ModelSpec) -> dict:
    """What the featurize job needs to know about an exported model."""
    description = asdict(spec)
    description["weights"] = spec.weights if spec.weights in NAMED_WEIGHTS else Path(spec.weights).name
    description.update(model_id=spec.model_id, feature_dim=feature_dim(spec), engine="onnxruntime")
    return description


def spec_from_description(description: dict) -> ModelSpec:
    fields = {name: description[name] for name in ("backbone", "alpha", "image_size", "pooling", "weights", "seed")}
    return ModelSpec(**fields).validate()


def export_onnx(spec: ModelSpec, output: Path) -> dict:
    """Write output (ONNX) and output.json; return the description."""
    with tempfile.TemporaryDirectory(prefix="fruits-export-") as tmp:
        exported = export_artifact(spec, "onnxruntime", Path(tmp))
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(exported, output)
    description = describe(spec)
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
        description = export_onnx(spec.validate(), Path(args.output))
    except ModelConfigError as exc:
        print(f"export_model: error: {exc}", file=sys.stderr)
        return 2
    print(f"export_model: {description['model_id']} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
