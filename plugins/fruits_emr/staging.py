"""The stage_artifacts task: what the cluster needs, in S3 under content hashes, uploaded only when
missing: the code bundle (the cluster package spark_jobs/ zipped, its two entry points, the
bootstrap and the node requirements), the exported ONNX model (or the weights, engine tensorflow)
and the node wheelhouse.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from fruits_emr import wheelhouse
from fruits_emr.artifacts import (
    HASHED_REQUIREMENTS_FILE,
    StagedArtifacts,
    code_layout,
    export_settings,
    jar_key,
    model_key,
    needs_tensorflow,
    weights_key,
    wheelhouse_uri,
)
from fruits_emr.s3_objects import object_exists
from fruits_emr.settings import ConfigError, RunConfig, sse_arguments, weights_kind
from fruits_emr.weights_files import confined_weights_file
from model_export.model_cache import ModelExportRefused, exported_model
from model_export.model_identity import CALIBRATION_FOLDER, CalibrationError, calibration_files
from spark_jobs.cnn.exported_model import sidecar_path
from spark_jobs.contract.model_choices import INT8_ENGINE
from spark_jobs.contract.s3_uri import split_s3_uri

log = logging.getLogger(__name__)

STAGED_MARKER = "_STAGED"
BOOTSTRAP = Path("emr/bootstrap.sh")
CLUSTER_PACKAGE = "spark_jobs"  # what runs on the cluster: the only package zipped and staged
ENTRY_POINTS = ("featurize.py", "pca.py")  # the steps' scripts, staged beside the zip
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)

Builder = Callable[[Path], Path]  # a hash file -> the folder of its wheels (wheelhouse.build_wheelhouse)


# --- the code bundle ---------------------------------------------------------------------------

def package_sources(repo_root: Path) -> list[Path]:
    """The cluster package's Python files, relative to the repo root, in a stable order."""
    package = repo_root / CLUSTER_PACKAGE
    if not (package / "__init__.py").is_file():
        raise ConfigError(
            f"The Spark job package {package} is missing: deploy the repo's spark_jobs/ next to dags/"
            " or set FRUITS_REPO_ROOT to the repo checkout."
        )
    return sorted(
        path.relative_to(repo_root)
        for path in package.rglob("*.py")
        if "__pycache__" not in path.parts and "tests" not in path.parts
    )


def package_zip(repo_root: Path, sources: list[Path]) -> bytes:
    """spark_jobs.zip for --py-files, byte-identical for identical sources."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in sources:
            info = zipfile.ZipInfo(relative.as_posix(), date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, (repo_root / relative).read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def code_bundle(repo_root: Path) -> tuple[str, dict[str, bytes]]:
    """Content hash and files of the code bundle: entry points, package zip, bootstrap (the node
    packages and their hashes travel in the wheelhouse, stage_wheelhouse)."""
    sources = package_sources(repo_root)
    if not (repo_root / BOOTSTRAP).is_file():
        raise ConfigError(f"{repo_root / BOOTSTRAP} is missing: deploy the repo's emr/ folder next to dags/.")
    digest = hashlib.sha256()
    for relative in [*sources, BOOTSTRAP]:
        digest.update(relative.as_posix().encode() + b"\0" + (repo_root / relative).read_bytes() + b"\0")
    files = {
        **{name: (repo_root / CLUSTER_PACKAGE / name).read_bytes() for name in ENTRY_POINTS},
        "spark_jobs.zip": package_zip(repo_root, sources),
        "bootstrap.sh": (repo_root / BOOTSTRAP).read_bytes(),
    }
    return digest.hexdigest()[:16], files


# --- the model or its weights ----------------------------------------------------------------------

def _require_s3_weights(s3: Any, config: RunConfig) -> tuple[str, str]:
    bucket, key = split_s3_uri(config.weights)
    if not key or not object_exists(s3, bucket, key):
        raise ConfigError(f"Param 'weights' = {config.weights!r}: no such S3 object. Upload it or fix the URI.")
    return bucket, key


def stage_weights(s3: Any, config: RunConfig, repo_root: Path) -> tuple[str, bool]:
    """The --weights value for the cluster; a local weights file is uploaded under its sha256."""
    kind = weights_kind(config.weights)
    if kind == "preset":
        return config.weights, False
    if kind == "s3":
        _require_s3_weights(s3, config)
        return config.weights, False
    path = confined_weights_file(config.weights, repo_root)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    key = weights_key(config.artifacts_prefix, digest, path.name)
    uploaded = not object_exists(s3, config.bucket, key)
    if uploaded:
        s3.upload_file(str(path), config.bucket, key, ExtraArgs=sse_arguments(config))
    return f"s3://{config.bucket}/{key}", uploaded


def stage_model(s3: Any, config: RunConfig, repo_root: Path) -> tuple[str, bool]:
    """Stage model.onnx + model.onnx.json (int8: quantized; the sidecar lists the calibration images)
    under artifacts/models/<model identity>/, from the machine's model cache (exported there once);
    skipped when already staged."""
    with tempfile.TemporaryDirectory(prefix="fruits-stage-model-") as tmp:
        kind = weights_kind(config.weights)
        if kind == "preset":
            weights = config.weights
        elif kind == "s3":
            bucket, key = _require_s3_weights(s3, config)
            local = Path(tmp) / "weights" / Path(key).name
            local.parent.mkdir()
            s3.download_file(bucket, key, str(local))
            weights = str(local)
        else:
            weights = str(confined_weights_file(config.weights, repo_root))
        settings = export_settings(config, weights)
        calibration = repo_root / CALIBRATION_FOLDER
        if config.engine == INT8_ENGINE:
            try:
                calibration_files(calibration)
            except CalibrationError as exc:
                raise ConfigError(f"Param 'engine' = {INT8_ENGINE!r}: {exc}; or choose engine onnxruntime.") from None
        try:
            model = exported_model(settings, repo_root, calibration)
        except ModelExportRefused as exc:
            raise ConfigError(f"The model cannot be exported with these Params: {exc}") from None
        key = model_key(config.artifacts_prefix, model.parent.name)  # the cache folder is the model identity
        uri = f"s3://{config.bucket}/{key}"
        # the sidecar is written last, so it marks a complete upload
        if object_exists(s3, config.bucket, sidecar_path(key)):
            return uri, False
        s3.upload_file(str(model), config.bucket, key, ExtraArgs=sse_arguments(config))
        s3.upload_file(sidecar_path(str(model)), config.bucket, sidecar_path(key), ExtraArgs=sse_arguments(config))
        return uri, True


# --- the node wheelhouse ---------------------------------------------------------------------------

def stage_wheelhouse(
    s3: Any, config: RunConfig, repo_root: Path, tensorflow: bool, build: Builder = wheelhouse.build_wheelhouse
) -> tuple[str, list[str]]:
    """Stage the wheels of the node packages (the TensorFlow add-on too when the cluster needs it) and
    their hash file under artifacts/wheelhouse/<hash of that file>/, so the key changes with any
    wheel's sha256; skipped when its marker exists. The local build is cached per hash as well
    (wheelhouse.build_wheelhouse, which downloads with pip --require-hashes), so it is downloaded
    once per worker and a wheel changed upstream is refused."""
    hashed = repo_root / wheelhouse.HASHED_REQUIREMENTS[tensorflow]
    if not hashed.is_file():
        raise ConfigError(f"{hashed} is missing: deploy the repo's emr/ folder next to dags/.")
    uri = wheelhouse_uri(config.bucket, config.artifacts_prefix, wheelhouse.wheelhouse_hash([hashed]))
    _, key = split_s3_uri(uri)
    if object_exists(s3, config.bucket, key + STAGED_MARKER):
        return uri, []
    local = build(hashed)
    wheels = sorted(local.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"the wheelhouse {local} holds no wheels")
    for wheel in wheels:
        s3.upload_file(str(wheel), config.bucket, key + wheel.name, ExtraArgs=sse_arguments(config))
    s3.put_object(Bucket=config.bucket, Key=key + HASHED_REQUIREMENTS_FILE, Body=hashed.read_bytes(),
                  ContentType="text/plain", **sse_arguments(config))
    # written last, with the wheel list: a wheelhouse interrupted half-way is uploaded again next time
    listing = "".join(f"{wheel.name}\n" for wheel in wheels).encode()
    s3.put_object(Bucket=config.bucket, Key=key + STAGED_MARKER, Body=listing, **sse_arguments(config))
    return uri, [uri + wheel.name for wheel in wheels] + [uri + HASHED_REQUIREMENTS_FILE]


def stage_jar(s3: Any, config: RunConfig, jar: Path) -> tuple[str, bool]:
    """A jar the steps load (--jars) under artifacts/jars/<content hash>/; skipped when present."""
    digest = hashlib.sha256(jar.read_bytes()).hexdigest()[:16]
    key = jar_key(config.artifacts_prefix, digest, jar.name)
    if object_exists(s3, config.bucket, key):
        return f"s3://{config.bucket}/{key}", False
    s3.upload_file(str(jar), config.bucket, key, ExtraArgs=sse_arguments(config))
    return f"s3://{config.bucket}/{key}", True


# --- the task --------------------------------------------------------------------------------------

def stage_artifacts(
    s3: Any, config: RunConfig, repo_root: Path, build_wheelhouse: Builder | None = wheelhouse.build_wheelhouse,
    lineage_jar: Path | None = None,
) -> tuple[StagedArtifacts, list[str]]:
    """Upload the code bundle under its content hash (skipped when its marker exists), what the
    cluster needs to build the model (the exported ONNX model, engines onnxruntime[-int8], or the weights),
    the node wheelhouse (build_wheelhouse None: none, for the local compute mode) and, with lineage
    on, the OpenLineage Spark listener jar. Returns the staged URIs and the list of what was uploaded now."""
    code_hash, files = code_bundle(repo_root)
    if config.engine != "tensorflow":  # an ONNX engine: fp32 or int8
        model_uri, model_uploaded = stage_model(s3, config, repo_root)
        weights_uri = config.weights
        uploaded = [model_uri, sidecar_path(model_uri)] if model_uploaded else []
    else:
        model_uri = ""
        weights_uri, weights_uploaded = stage_weights(s3, config, repo_root)
        uploaded = [weights_uri] if weights_uploaded else []
    wheels_uri = ""
    if build_wheelhouse is not None:
        wheels_uri, wheels_uploaded = stage_wheelhouse(
            s3, config, repo_root, needs_tensorflow(config, model_uri), build_wheelhouse
        )
        uploaded += wheels_uploaded
    staged = code_layout(config.bucket, config.artifacts_prefix, code_hash, weights_uri, model_uri, wheels_uri)
    if lineage_jar is not None:
        jar_uri, jar_uploaded = stage_jar(s3, config, lineage_jar)
        staged = replace(staged, lineage_jar=jar_uri)
        uploaded += [jar_uri] if jar_uploaded else []
    _, code_key = split_s3_uri(staged.code_uri)
    if not object_exists(s3, config.bucket, code_key + STAGED_MARKER):
        for name, body in files.items():
            s3.put_object(Bucket=config.bucket, Key=code_key + name, Body=body, **sse_arguments(config))
            uploaded.append(staged.code_uri + name)
        # written last: a bundle interrupted half-way is uploaded again next time
        s3.put_object(Bucket=config.bucket, Key=code_key + STAGED_MARKER, Body=code_hash.encode(), **sse_arguments(config))
    log.info("code bundle %s; model %s: %s", staged.code_uri, staged.model_artifact or staged.weights,
             f"uploaded {uploaded}" if uploaded else "already staged")
    return staged, uploaded
