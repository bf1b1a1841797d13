"""Local compute mode: run the DAG's EMR steps with spark-submit on the Airflow worker.

The steps are the ones `config.spark_steps` builds for EMR, arguments unchanged: Spark reads the
staged code, the manifest and the images from S3 and writes its outputs there itself, through
Hadoop's S3A connector (spark_jobs.s3a: jars from `make setup`, the S3 server from
FRUITS_S3_ENDPOINT and the AWS_* variables), with the run's server-side encryption.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


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


def step_s3_conf(sse: Mapping[str, str]) -> dict[str, str]:
    """Spark settings for S3 through S3A, encrypting what the steps write as `sse` (boto3's
    ServerSideEncryption/SSEKMSKeyId, config.sse_arguments) asks. Raises S3ConfigError."""
    from spark_jobs.s3a import encryption_conf, require_s3a_jars, s3a_conf

    require_s3a_jars()
    conf = s3a_conf()
    conf.update(encryption_conf(sse.get("ServerSideEncryption"), sse.get("SSEKMSKeyId")))
    return conf


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
