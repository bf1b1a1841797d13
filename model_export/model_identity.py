"""The identity of an exported model: one content hash over everything the export depends on (its
settings, the weights' bytes, the export code, the exporter libraries' versions and, for int8, the
calibration photos). The DAG stages an exported model in S3 under it and the machine's model cache
(model_export.model_cache) keeps one under it, so the same inputs are exported once and a changed
input is exported again.

Pure Python (hashlib, pathlib): the Airflow worker imports it without TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from spark_jobs.contract.model_choices import INT8_ENGINE, NAMED_WEIGHTS, has_image_extension

REPO_ROOT = Path(__file__).resolve().parent.parent
# the int8 engine calibrates (and fine-tunes) on every photo under this folder of the repository
CALIBRATION_FOLDER = Path("data") / "sample"
CALIBRATION_ROOT = REPO_ROOT / CALIBRATION_FOLDER
# the code an exported model depends on besides its settings and weights, relative to the repo root
EXPORT_SOURCES = (
    Path("spark_jobs/cnn/backbones.py"), Path("spark_jobs/cnn/exported_model.py"),
    Path("spark_jobs/featurization/image_decode.py"), Path("model_export/export_model.py"),
    Path("model_export/quantize.py"), Path("model_export/quantization_training.py"),
)
# the libraries that write the ONNX graph: another version may write another graph
EXPORTER_DISTRIBUTIONS = ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime")
# The featurize job's defaults, which the DAG does not override; part of an exported model's identity.
EXPORT_POOLING = "avg"
EXPORT_SEED = 42


class CalibrationError(ValueError):
    """No usable calibration images; the message names the folder and the fix."""


@dataclass(frozen=True)
class ExportSettings:
    """What `python -m model_export.export_model` is asked to export."""

    model: str
    alpha: float
    image_size: int
    weights: str  # imagenet, random, or a local weights file
    engine: str = "onnxruntime"
    pooling: str = EXPORT_POOLING
    seed: int = EXPORT_SEED

    def identity(self) -> dict[str, object]:
        """The settings as the hash sees them: a weights file by its bytes (hashed apart), not its path."""
        settings = {**asdict(self), "alpha": repr(float(self.alpha))}
        settings["weights"] = self.weights if self.weights in NAMED_WEIGHTS else "file"
        if self.engine == "onnxruntime":
            settings.pop("engine")
        return settings

    def command(self, python: str, output: str, calibration_root: Path | None = None) -> list[str]:
        """The exporter's command line for these settings."""
        command = [
            python, "-m", "model_export.export_model", "--output", output, "--model", self.model,
            "--alpha", repr(float(self.alpha)), "--image-size", str(self.image_size), "--pooling", self.pooling,
            "--weights", self.weights, "--seed", str(self.seed), "--engine", self.engine,
        ]
        if self.engine == INT8_ENGINE:
            command += ["--calibration-images", str(calibration_root or CALIBRATION_ROOT)]
        return command


def calibration_files(root: Path = CALIBRATION_ROOT) -> list[Path]:
    """The calibration set: every image file under root, sorted by its path relative to root."""
    root = Path(root)
    files = sorted(
        (path for path in root.rglob("*") if path.is_file() and has_image_extension(path.name)),
        key=lambda path: path.relative_to(root).as_posix(),
    )
    if not files:
        raise CalibrationError(
            f"no calibration images under {root}: the int8 engine calibrates on real photos"
            " (<label>/<image> files); give a folder of them, or use a model artifact exported"
            f" with `python -m model_export.export_model --engine {INT8_ENGINE}`"
        )
    return files


def calibration_list(files: list[Path], root: Path = CALIBRATION_ROOT) -> list[dict[str, str]]:
    """What the quantized model was calibrated on: relative path and sha256 of each image."""
    return [
        {"image": path.relative_to(root).as_posix(), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for path in files
    ]


def exporter_versions() -> dict[str, str]:
    versions = {}
    for name in EXPORTER_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def model_hash(settings: ExportSettings, repo_root: Path = REPO_ROOT, calibration_root: Path | None = None) -> str:
    """16 hex digits naming the model these settings export with this code, these libraries and
    (int8) these calibration photos."""
    weights = settings.weights.encode() if settings.weights in NAMED_WEIGHTS else Path(settings.weights).read_bytes()
    digest = hashlib.sha256(json.dumps(settings.identity(), sort_keys=True).encode() + b"\0" + weights)
    for relative in EXPORT_SOURCES:
        source = repo_root / relative
        digest.update(b"\0" + (source.read_bytes() if source.is_file() else b""))
    digest.update(b"\0" + json.dumps(exporter_versions(), sort_keys=True).encode())
    if settings.engine == INT8_ENGINE:
        root = calibration_root or repo_root / CALIBRATION_FOLDER
        for entry in calibration_list(calibration_files(root), root):
            digest.update(f"\0{entry['image']}\0{entry['sha256']}".encode())
    return digest.hexdigest()[:16]
