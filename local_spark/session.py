"""The local SparkSession of `make run`, the tests, the bench and the class archive: Python workers on
this interpreter, the repository on their path, s3:// through S3A, the local JVM options."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from local_spark.jvm_options import local_jvm_options
from local_spark.s3a import s3a_conf

REPO_ROOT = Path(__file__).resolve().parent.parent
# local[N] gives a failed task no second attempt; local[N,F] allows F attempts per task, so a
# crashed Python worker costs one retried task instead of the whole run, as on a cluster.
DEFAULT_MASTER = "local[2,4]"


def local_spark(master: str = DEFAULT_MASTER, driver_memory: str = "4g", conf: dict[str, str] | None = None) -> SparkSession:
    """A local SparkSession whose Python workers use this interpreter and see this repo (plus `conf`)."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    builder = SparkSession.builder
    # s3:// and s3a:// through S3A (server from the environment), then the caller's settings
    settings = {**s3a_conf(), **(conf or {})}
    settings["spark.driver.extraJavaOptions"] = local_jvm_options(settings.get("spark.driver.extraJavaOptions"))
    for name, value in settings.items():
        builder = builder.config(name, value)
    spark = (
        builder.master(master)
        .appName("fruits-local")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
        .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "2")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark
