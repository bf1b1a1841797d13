"""Local compute mode: run the DAG's EMR steps with spark-submit on the Airflow worker.

The steps are the ones `emr_request.spark_steps` builds for EMR, arguments unchanged: Spark reads the
staged code, the manifest and the images from S3 and writes its outputs there itself, through
Hadoop's S3A connector (local_spark.s3a: jars from `make setup`, the S3 server from
FRUITS_S3_ENDPOINT and the AWS_* variables), with the run's server-side encryption.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fruits_emr.settings import RunConfig, sse_arguments
from local_spark.jvm_options import local_jvm_options
from local_spark.s3a import encryption_conf, require_s3a_jars, s3a_conf

log = logging.getLogger(__name__)


class StepRejectedInput(ValueError):
    """A step exited 2, the jobs' exit code for unusable input: retrying cannot help."""


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
    ServerSideEncryption/SSEKMSKeyId, settings.sse_arguments) asks. Raises S3ConfigError."""
    require_s3a_jars()
    conf = s3a_conf()
    conf.update(encryption_conf(sse.get("ServerSideEncryption"), sse.get("SSEKMSKeyId")))
    return conf


def run_streaming(command: list[str], env: dict[str, str], cwd: str) -> tuple[int, list[str]]:
    """Run command, logging its output line by line into the task log; returns (exit code, last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            log.info("%s", line.rstrip("\n"))
            tail.append(line.rstrip())
        returncode = process.wait()
    return returncode, list(tail)


LOCAL_SPARK_CONF = {
    "spark.ui.enabled": "false",  # no port to clash with another run on the worker
    "spark.sql.session.timeZone": "UTC",  # as on EMR nodes
    "spark.log.level": "WARN",  # the task log keeps the jobs' own lines, not Spark's INFO chatter
}


def local_step_command(
    args: list[str],
    spark_submit: str,
    s3_conf: Mapping[str, str],
    master: str = "local[*,4]",
    driver_memory: str = "2g",
) -> list[str]:
    """An EMR step's `spark-submit --deploy-mode client ...` as a local spark-submit.

    Same script, --py-files and job arguments, s3:// URIs included: Spark reads and writes them
    itself through S3A (`s3_conf`, local_spark.s3a). Only the master and the Spark settings differ.
    """
    if not args or args[0] != "spark-submit":
        raise ValueError(f"not a spark-submit step: {args[:3]}")
    command = [spark_submit, "--master", master, "--driver-memory", driver_memory]
    # the JVM as local_spark.session.local_spark runs it (C1 only, the class archive once built)
    jvm = {"spark.driver.extraJavaOptions": local_jvm_options()}
    for name, value in {**LOCAL_SPARK_CONF, **jvm, **s3_conf}.items():
        command += ["--conf", f"{name}={value}"]
    rest = args[1:]
    index = 0
    while index < len(rest):
        if rest[index] == "--deploy-mode":  # the cluster's; local mode runs the driver here
            index += 2
            continue
        command.append(rest[index])
        index += 1
    return command


def run_steps(
    steps: list[dict[str, Any]],
    s3_conf: Mapping[str, str],
    master: str = "local[*,4]",
    driver_memory: str = "2g",
    workdir: str | None = None,
) -> list[str]:
    """Run the EMR steps one after the other with the local spark-submit, each echoing its output
    into the task log; returns the step names.

    Raises StepRejectedInput when a step exits 2 (its message is in the log above), RuntimeError
    for any other failure. `workdir`: where Spark's scratch folder is made (None: the system temp).
    """
    spark_submit, env = spark_submit_path(), spark_env()
    scratch = tempfile.mkdtemp(prefix="fruits-local-", dir=workdir)
    try:
        for step in steps:
            name, args = step["Name"], step["HadoopJarStep"]["Args"]
            command = local_step_command(args, spark_submit, s3_conf, master, driver_memory)
            log.info("$ %s", shlex.join(command))
            returncode, _ = run_streaming(command, env, cwd=scratch)
            if returncode == 2:
                raise StepRejectedInput(f"step {name} rejected its input (exit 2); its message is above.")
            if returncode != 0:
                raise RuntimeError(f"step {name} failed with exit code {returncode}; its output is above.")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [step["Name"] for step in steps]


def run_steps_locally(
    config: RunConfig, steps: list[dict[str, Any]], master: str, driver_memory: str, workdir: str | None
) -> dict[str, Any]:
    """The run_steps_locally task: the EMR steps, arguments unchanged, with S3 through S3A and the
    run's server-side encryption. Raises S3ConfigError, StepRejectedInput or RuntimeError."""
    names = run_steps(steps, step_s3_conf(sse_arguments(config)), master, driver_memory, workdir)
    return {"steps": names}
