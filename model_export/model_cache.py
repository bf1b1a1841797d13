"""The machine's cache of exported models: one folder per model identity (model_identity.model_hash)
under ~/.cache/fruits/models (or $FRUITS_MODEL_CACHE), holding model.onnx and its sidecar.

`make run`, the tests and the DAG's staging ask it for a model: the first ask exports it (in a child
process, `python -m model_export.export_model`, so TensorFlow's memory goes away with it), every later
ask with the same settings, weights, code and libraries gets the same files at once. Processes that
ask for one model at the same time export it once: the others wait on a lock, then read it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from model_export.model_identity import REPO_ROOT, ExportSettings, model_hash
from spark_jobs.cnn.exported_model import sidecar_path
from spark_jobs.contract.run_files import MODEL_FILE

log = logging.getLogger(__name__)

CACHE_ENV = "FRUITS_MODEL_CACHE"


class ModelExportRefused(ValueError):
    """The exporter cannot use these settings (its exit code 2); the message is its own."""


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fruits" / "models")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def exported_model(settings: ExportSettings, repo_root: Path = REPO_ROOT, calibration_root: Path | None = None,
                   python: str = sys.executable) -> Path:
    """The cached model.onnx of these settings (its sidecar beside it), exported first on a miss.

    Raises ModelExportRefused (settings the exporter rejects) or RuntimeError (an export that failed)."""
    identity = model_hash(settings, repo_root, calibration_root)
    folder = cache_root() / identity
    model = folder / MODEL_FILE
    if Path(sidecar_path(str(model))).is_file():  # the sidecar is moved in with the model: a whole folder
        return model
    with _locked(cache_root() / f".{identity}.lock"):
        if Path(sidecar_path(str(model))).is_file():  # another process exported it while this one waited
            return model
        started = time.monotonic()
        scratch = Path(tempfile.mkdtemp(prefix=f".{identity}-", dir=cache_root()))
        try:
            _export(settings, scratch / MODEL_FILE, repo_root, calibration_root, python)
            shutil.rmtree(folder, ignore_errors=True)  # a folder left without its sidecar
            os.replace(scratch, folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    log.info("exported %s (%s) in %.0f s into the model cache %s", settings.model, settings.engine,
             time.monotonic() - started, folder)
    return model


def _export(settings: ExportSettings, output: Path, repo_root: Path, calibration_root: Path | None,
            python: str) -> None:
    python_path = os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        settings.command(python, str(output), calibration_root),
        cwd=repo_root, env={**os.environ, "PYTHONPATH": python_path, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, check=False,
    )
    if done.returncode == 2:  # the exporter's exit code for unusable settings
        raise ModelExportRefused(done.stderr.strip()[-1500:])
    if done.returncode != 0:
        raise RuntimeError(f"Model export failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
