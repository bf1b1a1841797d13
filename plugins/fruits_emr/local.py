"""Local compute mode: run the DAG's EMR steps with spark-submit on the Airflow worker.

The steps are the ones `config.spark_steps` builds for EMR. Their s3:// arguments are mapped to a
local mirror folder (`config.mirror_path`): the objects a step reads are downloaded first (through
the boto3 client of the DAG's AWS connection, so MinIO, moto and S3 all work), the manifest is
rewritten to the mirrored images, and the step's output folder is uploaded back afterwards.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from fruits_emr.config import StepFiles, mirror_path

DOWNLOAD_THREADS = 8


def spark_submit_path() -> str:
    """pyspark's own bin/spark-submit (present wherever pyspark is pip-installed)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "bin" / "spark-submit"
        if candidate.is_file():
            return str(candidate)
    beside = Path(sys.executable).parent / "spark-submit"
    if beside.is_file():
        return str(beside)
    found = shutil.which("spark-submit")
    if found:
        return found
    raise FileNotFoundError("spark-submit not found: install pyspark in the Airflow worker's environment.")


def spark_env() -> dict[str, str]:
    """The subprocess environment: Spark's Python workers use this interpreter (the worker's venv)."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    spec = importlib.util.find_spec("pyspark")
    if "SPARK_HOME" not in env and spec is not None and spec.submodule_search_locations:
        env["SPARK_HOME"] = list(spec.submodule_search_locations)[0]
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def download(s3: Any, uri: str, mirror_root: str) -> Path | None:
    """Copy one object to its mirror path with the object's LastModified as mtime (as EMRFS reports
    it); None when the object does not exist."""
    bucket, key = _split(uri)
    target = Path(mirror_path(uri, mirror_root))
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as handle:
        for chunk in response["Body"].iter_chunks(1 << 20):
            handle.write(chunk)
    stamp = response["LastModified"].timestamp()
    os.utime(target, (stamp, stamp))
    return target


def download_folder(s3: Any, uri: str, mirror_root: str) -> int:
    """Copy every object under the folder uri (a saved model, a features dataset); returns how many."""
    bucket, key = _split(uri.rstrip("/") + "/")
    keys = [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            for obj in page.get("Contents", [])]
    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        list(pool.map(lambda k: download(s3, f"s3://{bucket}/{k}", mirror_root), keys))
    return len(keys)


def mirror_step_inputs(s3: Any, files: StepFiles, mirror_root: str) -> int:
    """Download what a step reads; the manifest's images too, with the manifest rewritten to them.

    An image listed but gone from S3 keeps its (missing) mirror path, so featurize quarantines it
    as "listed in the manifest but not found", as on EMR. Returns the number of images mirrored.
    """
    for uri in files.inputs:
        if download(s3, uri, mirror_root) is None:
            raise FileNotFoundError(f"{uri} is missing: stage_artifacts should have uploaded it.")
    for uri in files.folders:
        download_folder(s3, uri, mirror_root)
    if files.manifest is None:
        return 0
    manifest = download(s3, files.manifest, mirror_root)
    if manifest is None:
        raise FileNotFoundError(f"{files.manifest} is missing: find_new_images writes it.")
    lines = [line.strip() for line in manifest.read_text().splitlines()]
    images = [line for line in lines if line.startswith("s3://")]
    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        found = list(pool.map(lambda uri: download(s3, uri, mirror_root), images))
    manifest.write_text("".join(f"{mirror_path(line, mirror_root)}\n" for line in lines))
    return sum(1 for path in found if path is not None)


def snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    """Size and mtime of every file under folder."""
    if not folder.is_dir():
        return {}
    return {path: (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*") if path.is_file()}


def upload_changes(
    s3: Any, folder: Path, uri: str, before: dict[Path, tuple[int, int]], sse: dict[str, str]
) -> list[str]:
    """Upload the files under folder that are new or changed since `before` (Hadoop's .crc files
    excluded) to the same relative keys under uri, encrypted with `sse`; returns the uploaded keys."""
    bucket, key_prefix = _split(uri.rstrip("/"))
    uploaded = []
    for path, state in sorted(snapshot(folder).items()):
        if path.name.endswith(".crc") or before.get(path) == state:
            continue
        key = f"{key_prefix}/{path.relative_to(folder).as_posix()}"
        s3.upload_file(str(path), bucket, key, ExtraArgs=sse)
        uploaded.append(key)
    return uploaded


def run_streaming(command: list[str], env: dict[str, str], cwd: str) -> tuple[int, list[str]]:
    """Run command, echoing its output line by line into the task log; returns (exit code, last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            tail.append(line.rstrip())
        returncode = process.wait()
    return returncode, list(tail)
