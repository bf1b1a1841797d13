"""S3 work of the DAG's Python tasks: stage the job code, list new images, write the manifest, read the
report, commit the run's outputs and the PCA model pointer.

Each function takes a boto3 S3 client, so the DAG passes the one of its AWS connection and
tests pass one pointed at moto.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from fruits_emr import wheelhouse
from fruits_emr.artifacts import (
    CONSTRAINTS_FILE,
    REQUIREMENTS_FILE,
    REQUIREMENTS_TENSORFLOW_FILE,
    SIDECAR_SUFFIX,
    StagedArtifacts,
    code_layout,
    export_model_command,
    model_key,
    model_settings,
    needs_tensorflow,
    weights_key,
    wheelhouse_uri,
)
from fruits_emr.layout import RunPaths, commit_key, in_window, is_file_key, pca_pointer_key
from fruits_emr.settings import CALIBRATION_IMAGES, INT8_ENGINE, ConfigError, RunConfig, sse_arguments, weights_kind
from spark_jobs.image_files import has_image_extension
from spark_jobs.run_files import PCA_MODEL_INFO, format_manifest, parse_manifest
from spark_jobs.s3_uri import is_not_found, key_prefix, split_s3_uri

STAGED_MARKER = "_STAGED"
BOOTSTRAP = Path("emr/bootstrap.sh")
REQUIREMENTS = Path("emr") / REQUIREMENTS_FILE
REQUIREMENTS_TENSORFLOW = Path("emr") / REQUIREMENTS_TENSORFLOW_FILE
CONSTRAINTS = Path("emr") / CONSTRAINTS_FILE
PACKAGE = "spark_jobs"
# the code an exported model depends on besides its settings and weights (int8: and the calibration images)
EXPORT_SOURCES = (
    Path("spark_jobs/backbones.py"), Path("spark_jobs/export_model.py"), Path("spark_jobs/quantize.py"),
    Path("spark_jobs/quantization_training.py"), Path("spark_jobs/images.py"), Path("spark_jobs/image_files.py"),
)
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


class RunOutputError(RuntimeError):
    """A run's outputs in S3 are missing or do not reconcile."""


def check_bucket(s3: Any, bucket: str) -> None:
    """Fail with one message when the bucket is missing or not accessible with the aws_default connection."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        reason = ("does not exist" if is_not_found(exc) else "is not accessible" if code == "403"
                  else f"cannot be read ({code})")
        raise ConfigError(
            f"Param 'bucket': s3://{bucket} {reason} with the Airflow connection aws_default."
            " Create the bucket or fix the Param / Variable fruits_features_defaults."
        ) from None


def check_security_configuration(emr_client: Any, name: str) -> None:
    """Fail with one message, before any cluster starts, when the EMR security configuration is missing
    or does not encrypt S3 writes (with one, the cluster request sends no S3 encryption settings of its own)."""
    try:
        described = emr_client.describe_security_configuration(Name=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise ConfigError(
            f"Param 'security_configuration' = {name!r}: EMR cannot describe it ({code}:"
            f" {exc.response.get('Error', {}).get('Message', '')}). Create it (aws emr"
            " create-security-configuration) or leave the Param empty."
        ) from None
    encryption = json.loads(described.get("SecurityConfiguration") or "{}").get("EncryptionConfiguration", {})
    s3_mode = (encryption.get("AtRestEncryptionConfiguration") or {}).get("S3EncryptionConfiguration", {}).get(
        "EncryptionMode")
    if not encryption.get("EnableAtRestEncryption") or not s3_mode:
        raise ConfigError(
            f"Param 'security_configuration' = {name!r} does not encrypt S3 at rest (no"
            " AtRestEncryptionConfiguration.S3EncryptionConfiguration): the cluster's writes would carry no"
            " encryption and the bucket policy refuses them. Add SSE-S3 or SSE-KMS to it, or leave the Param empty."
        )


# --- staging ----------------------------------------------------------------------------------

def package_sources(repo_root: Path) -> list[Path]:
    """The job package's Python files, relative to the repo root, in a stable order."""
    package = repo_root / PACKAGE
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
    """Content hash and files of the code bundle: entry points, package zip, bootstrap, EMR requirements."""
    sources = package_sources(repo_root)
    for extra in (BOOTSTRAP, REQUIREMENTS, REQUIREMENTS_TENSORFLOW, CONSTRAINTS):
        if not (repo_root / extra).is_file():
            raise ConfigError(f"{repo_root / extra} is missing: deploy the repo's emr/ folder next to dags/.")
    digest = hashlib.sha256()
    for relative in [*sources, BOOTSTRAP, REQUIREMENTS, REQUIREMENTS_TENSORFLOW, CONSTRAINTS]:
        digest.update(relative.as_posix().encode() + b"\0" + (repo_root / relative).read_bytes() + b"\0")
    files = {
        "featurize.py": (repo_root / PACKAGE / "featurize.py").read_bytes(),
        "pca.py": (repo_root / PACKAGE / "pca.py").read_bytes(),
        "spark_jobs.zip": package_zip(repo_root, sources),
        "bootstrap.sh": (repo_root / BOOTSTRAP).read_bytes(),
        REQUIREMENTS_FILE: (repo_root / REQUIREMENTS).read_bytes(),
        REQUIREMENTS_TENSORFLOW_FILE: (repo_root / REQUIREMENTS_TENSORFLOW).read_bytes(),
        CONSTRAINTS_FILE: (repo_root / CONSTRAINTS).read_bytes(),
    }
    return digest.hexdigest()[:16], files


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    return True


def stage_weights(s3: Any, config: RunConfig, repo_root: Path) -> tuple[str, bool]:
    """The --weights value for the cluster; a local weights file is uploaded under its sha256."""
    kind = weights_kind(config.weights)
    if kind == "preset":
        return config.weights, False
    if kind == "s3":
        bucket, key = split_s3_uri(config.weights)
        if not key or not object_exists(s3, bucket, key):
            raise ConfigError(f"Param 'weights' = {config.weights!r}: no such S3 object. Upload it or fix the URI.")
        return config.weights, False
    path = local_weights_file(config, repo_root)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    key = weights_key(config.artifacts_prefix, digest, path.name)
    uploaded = not object_exists(s3, config.bucket, key)
    if uploaded:
        s3.upload_file(str(path), config.bucket, key, ExtraArgs=sse_arguments(config))
    return f"s3://{config.bucket}/{key}", uploaded


def local_weights_file(config: RunConfig, repo_root: Path) -> Path:
    """The weights file a repo-path Param names, or one clear message."""
    path = Path(config.weights)
    path = path if path.is_absolute() else repo_root / path
    if not path.is_file():
        raise ConfigError(
            f"Param 'weights' = {config.weights!r} is not 'imagenet', 'random', an s3:// URI or a file"
            f" (looked for {path})."
        )
    return path


def export_model(config: RunConfig, weights: str, output: Path, repo_root: Path) -> None:
    """Export the CNN to ONNX (+ sidecar) with `python -m spark_jobs.export_model` in a child process,
    so TensorFlow's memory goes away with it."""
    python_path = os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        export_model_command(config, weights, str(output), sys.executable)
        + (["--calibration-images", str(repo_root / CALIBRATION_IMAGES)] if config.engine == INT8_ENGINE else []),
        cwd=repo_root, env={**os.environ, "PYTHONPATH": python_path, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, check=False,
    )
    if done.returncode == 2:  # the exporter's exit code for unusable settings
        raise ConfigError(f"The model cannot be exported with these Params: {done.stderr.strip()[-1500:]}")
    if done.returncode != 0:
        raise RuntimeError(f"Model export failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def calibration_digest(root: Path) -> str:
    """sha256 over the int8 calibration images (names and bytes, sorted by name), as quantize reads them."""
    files = sorted(path for path in root.rglob("*") if path.is_file() and has_image_extension(path.name))
    if not files:
        raise ConfigError(
            f"Param 'engine' = {INT8_ENGINE!r} calibrates on the photos under {root}, and there are none:"
            " deploy the repo's data/ folder next to dags/ or choose engine onnxruntime."
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def stage_model(s3: Any, config: RunConfig, repo_root: Path) -> tuple[str, bool]:
    """Export the model once and stage model.onnx + model.onnx.json (int8: quantized; the sidecar lists
    the calibration images) under
    artifacts/models/<hash of settings, weights content and export code>/; skipped when present."""
    with tempfile.TemporaryDirectory(prefix="fruits-stage-model-") as tmp:
        kind = weights_kind(config.weights)
        if kind == "preset":
            weights, content = config.weights, config.weights.encode()
        elif kind == "s3":
            bucket, key = split_s3_uri(config.weights)
            if not key or not object_exists(s3, bucket, key):
                raise ConfigError(f"Param 'weights' = {config.weights!r}: no such S3 object. Upload it or fix the URI.")
            local = Path(tmp) / "weights" / Path(key).name
            local.parent.mkdir()
            s3.download_file(bucket, key, str(local))
            weights, content = str(local), local.read_bytes()
        else:
            local = local_weights_file(config, repo_root)
            weights, content = str(local), local.read_bytes()
        digest = hashlib.sha256(json.dumps(model_settings(config), sort_keys=True).encode() + b"\0" + content)
        for relative in EXPORT_SOURCES:
            source = repo_root / relative
            digest.update(b"\0" + (source.read_bytes() if source.is_file() else b""))
        if config.engine == INT8_ENGINE:
            digest.update(b"\0" + calibration_digest(repo_root / CALIBRATION_IMAGES).encode())
        key = model_key(config.artifacts_prefix, digest.hexdigest()[:16])
        uri = f"s3://{config.bucket}/{key}"
        # the sidecar is written last, so it marks a complete upload
        if object_exists(s3, config.bucket, key + SIDECAR_SUFFIX):
            return uri, False
        output = Path(tmp) / "model" / "model.onnx"
        export_model(config, weights, output, repo_root)
        s3.upload_file(str(output), config.bucket, key, ExtraArgs=sse_arguments(config))
        s3.upload_file(str(output) + SIDECAR_SUFFIX, config.bucket, key + SIDECAR_SUFFIX, ExtraArgs=sse_arguments(config))
        return uri, True


Builder = Callable[[list[Path], Path], Path]


def stage_wheelhouse(
    s3: Any, config: RunConfig, repo_root: Path, tensorflow: bool, build: Builder = wheelhouse.build_wheelhouse
) -> tuple[str, list[str]]:
    """Stage the wheels of the node packages (the TensorFlow add-on too when the cluster needs it)
    under artifacts/wheelhouse/<content hash>/; skipped when its marker exists. The local build is
    cached per hash as well (wheelhouse.build_wheelhouse), so it is downloaded once per worker."""
    requirements = [repo_root / REQUIREMENTS, *([repo_root / REQUIREMENTS_TENSORFLOW] if tensorflow else [])]
    constraints = repo_root / CONSTRAINTS
    uri = wheelhouse_uri(config.bucket, config.artifacts_prefix, wheelhouse.wheelhouse_hash([*requirements, constraints]))
    _, key = split_s3_uri(uri)
    if object_exists(s3, config.bucket, key + STAGED_MARKER):
        return uri, []
    local = build(requirements, constraints)
    wheels = sorted(local.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"the wheelhouse {local} holds no wheels")
    for wheel in wheels:
        s3.upload_file(str(wheel), config.bucket, key + wheel.name, ExtraArgs=sse_arguments(config))
    # written last, with the wheel list: a wheelhouse interrupted half-way is uploaded again next time
    listing = "".join(f"{wheel.name}\n" for wheel in wheels).encode()
    s3.put_object(Bucket=config.bucket, Key=key + STAGED_MARKER, Body=listing, **sse_arguments(config))
    return uri, [uri + wheel.name for wheel in wheels]


def stage_artifacts(
    s3: Any, config: RunConfig, repo_root: Path, build_wheelhouse: Builder | None = wheelhouse.build_wheelhouse
) -> tuple[StagedArtifacts, list[str]]:
    """Upload the code bundle under its content hash (skipped when its marker exists), what the
    cluster needs to build the model (the exported ONNX model, engines onnxruntime[-int8], or the weights),
    and the node wheelhouse (build_wheelhouse None: none, for the local compute mode)."""
    code_hash, files = code_bundle(repo_root)
    if config.engine != "tensorflow":  # an ONNX engine: fp32 or int8
        model_uri, model_uploaded = stage_model(s3, config, repo_root)
        weights_uri = config.weights
        uploaded = [model_uri, model_uri + SIDECAR_SUFFIX] if model_uploaded else []
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
    _, code_key = split_s3_uri(staged.code_uri)
    if not object_exists(s3, config.bucket, code_key + STAGED_MARKER):
        for name, body in files.items():
            s3.put_object(Bucket=config.bucket, Key=code_key + name, Body=body, **sse_arguments(config))
            uploaded.append(staged.code_uri + name)
        # written last: a bundle interrupted half-way is uploaded again next time
        s3.put_object(Bucket=config.bucket, Key=code_key + STAGED_MARKER, Body=code_hash.encode(), **sse_arguments(config))
    return staged, uploaded


# --- new images and the run partition -------------------------------------------------------

def list_objects(s3: Any, bucket: str, key_prefix: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
        yield from page.get("Contents", [])


def new_raw_files(s3: Any, config: RunConfig, start: datetime, end: datetime) -> dict[str, tuple[str, int]]:
    """{URI: (ETag, bytes)} of the raw files (photos and the rest: featurize ignores and lists those
    that are not photos; no folder markers) whose LastModified is in [start, end), or of all of them
    on full refresh (the ETag: which version of the file the run sees)."""
    return {
        f"s3://{config.bucket}/{obj['Key']}": (str(obj.get("ETag", "")).strip('"'), int(obj.get("Size", 0)))
        for obj in list_objects(s3, config.bucket, key_prefix(config.raw_prefix))
        if is_file_key(obj["Key"]) and (config.full_refresh or in_window(obj["LastModified"], start, end))
    }


def write_manifest(s3: Any, paths: RunPaths, uris: list[str], sse: dict[str, str]) -> None:
    body = format_manifest(uris).encode()
    s3.put_object(Bucket=paths.bucket, Key=paths.manifest_key, Body=body, ContentType="text/plain", **sse)


def read_manifest(s3: Any, paths: RunPaths) -> list[str]:
    """The run's manifest entries (run_files.parse_manifest: blanks, comments and repeats dropped)."""
    return parse_manifest(s3.get_object(Bucket=paths.bucket, Key=paths.manifest_key)["Body"].read().decode())


# --- outputs ---------------------------------------------------------------------------------

def attempt_entries(s3: Any, paths: RunPaths) -> set[str]:
    """Top-level names in the attempt's folder: 'features/', 'report.json', ..."""
    entries = set()
    for obj in list_objects(s3, paths.bucket, paths.attempt_key):
        relative = obj["Key"][len(paths.attempt_key):]
        head, slash, _ = relative.partition("/")
        entries.add(head + slash)
    return entries


def read_report(s3: Any, paths: RunPaths) -> dict[str, Any]:
    try:
        body = s3.get_object(Bucket=paths.bucket, Key=paths.report_key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            raise RunOutputError(f"{paths.report_uri} is missing: the pca step wrote no report.") from None
        raise
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise RunOutputError(f"{paths.report_uri} is not JSON ({exc}).") from None


# --- commit ----------------------------------------------------------------------------------

def read_commit(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """A partition's commit pointer, or None when nothing was committed for that date yet."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    return json.loads(body)


def committed_output(s3: Any, config: RunConfig, run_date: str) -> dict[str, Any] | None:
    """For readers: the committed outputs of a run date ({'output': s3://..., 'features': ..., ...}), or None."""
    return read_commit(s3, config.bucket, commit_key(config, run_date))


def commit_run(s3: Any, paths: RunPaths, record: dict[str, Any], sse: dict[str, str]) -> tuple[str | None, int]:
    """Make the attempt the run date's visible output: one PUT of the commit pointer (atomic), then
    delete the attempts nobody can see any more (failed ones, older commits). The previously
    committed attempt is kept, so a reader that resolved the old pointer a moment ago can finish.

    Returns (previously committed attempt or None, number of objects deleted).
    """
    previous = read_commit(s3, paths.bucket, paths.commit_key)
    previous_attempt = previous.get("attempt") if previous else None
    body = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    s3.put_object(Bucket=paths.bucket, Key=paths.commit_key, Body=body, ContentType="application/json", **sse)
    keep = {paths.attempt, previous_attempt}
    stale = [
        obj["Key"] for obj in list_objects(s3, paths.bucket, paths.attempts_key)
        if obj["Key"][len(paths.attempts_key):].split("/", 1)[0] not in keep
    ]
    delete_keys(s3, paths.bucket, stale, what=f"old attempts under s3://{paths.bucket}/{paths.attempts_key}")
    return previous_attempt, len(stale)


def committed_features(s3: Any, config: RunConfig) -> dict[str, str]:
    """{run date: its committed features/ URI} for every committed run date (the corpus a refit reads)."""
    root = key_prefix(config.output_prefix)
    dates = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=config.bucket, Prefix=f"{root}run_date=", Delimiter="/"):
        for folder in page.get("CommonPrefixes", []):
            run_date = folder["Prefix"][len(f"{root}run_date="):].rstrip("/")
            record = read_commit(s3, config.bucket, commit_key(config, run_date))
            if record is not None:
                dates[run_date] = record["features"]
    return dates


def read_pca_pointer(s3: Any, config: RunConfig) -> dict[str, Any] | None:
    """The current PCA model pointer, or None before the first fit was committed."""
    return read_commit(s3, config.bucket, pca_pointer_key(config))


def reduced_corpus(s3: Any, config: RunConfig) -> dict[str, Any] | None:
    """For readers: the current model version and, per run date, the URI of its reduced rows (Parquet:
    path, label, pca, pca_model), all in that one model's space; None before the first fit.

    Resolve it once and read those URIs: a later commit writes a new pointer and never changes them.
    """
    pointer = read_pca_pointer(s3, config)
    if pointer is None:
        return None
    return {"version": pointer["version"], "model": pointer["model"], "k": pointer.get("k"), "parts": pointer["corpus"]}


def commit_pca(s3: Any, config: RunConfig, record: dict[str, Any], expected_number: int | None, sse: dict[str, str]) -> None:
    """Replace the PCA pointer (one PUT), unless another run moved it since this run planned."""
    current = read_pca_pointer(s3, config)
    found = int(current["number"]) if current else None
    if found != expected_number:
        raise RunOutputError(
            f"The PCA model pointer s3://{config.bucket}/{pca_pointer_key(config)} is at version {found}, this run"
            f" planned on {expected_number}: another run changed it. Re-run this date to apply or refit again."
        )
    body = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    s3.put_object(Bucket=config.bucket, Key=pca_pointer_key(config), Body=body, ContentType="application/json", **sse)


def pca_model_written(s3: Any, model_uri: str) -> bool:
    """True when a fit finished writing the model folder (its info file is written last)."""
    bucket, key = split_s3_uri(f"{model_uri.rstrip('/')}/{PCA_MODEL_INFO}")
    return object_exists(s3, bucket, key)


def delete_keys(s3: Any, bucket: str, keys: list[str], what: str) -> None:
    """DeleteObjects in batches of 1,000; any key S3 refused to delete is an error naming the fix."""
    for first in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[first:first + 1000]]
        response = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        # DeleteObjects answers 200 even when it deleted nothing
        errors = response.get("Errors") or []
        if errors:
            first_error = errors[0]
            raise RunOutputError(
                f"Could not delete {what}: {len(errors)} objects not deleted"
                f" (first: {first_error.get('Key')}: {first_error.get('Code')} {first_error.get('Message')})."
                " Give the aws_default identity s3:DeleteObject on the output prefix (iam/airflow-policy.json)."
            )
