"""Shared fixtures: real sample images, the bundled real weights, one local Spark session."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = REPO_ROOT / "tests" / "data" / "fruits-360"  # 480 real images bundled with the repo (NOTICE.md)
WEIGHTS = REPO_ROOT / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
LABELS = ("apple", "lemon", "mango", "raspberry")
S3_KMS_KEY = "alias/fruits-test"


def pytest_configure(config):
    # py4j logs "closing connection" from finalizers after pytest closed its streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def copy_sample(target: Path, per_label: int, offset: int = 0) -> list[Path]:
    """Copy `per_label` real images of each fruit into target/<label>/ and return them."""
    copied = []
    for label in LABELS:
        (target / label).mkdir(parents=True, exist_ok=True)
        for source in sorted((SAMPLE / label).iterdir())[offset : offset + per_label]:
            copied.append(Path(shutil.copy(source, target / label / source.name)))
    return copied


# Makes netlib fall back to its pure-Java F2J LAPACK even where a native liblapack is installed, so
# every machine runs the tests against the fallback that gave Spark ML's PCA wrong spectra (issue 12).
FORCE_F2J_LAPACK = {"spark.driver.extraJavaOptions": "-Ddev.ludovic.netlib.lapack.nativeLib=none-such.so"}


@pytest.fixture(scope="session")
def spark():
    from spark_jobs.run_local import local_spark

    session = local_spark("local[2]", "4g", FORCE_F2J_LAPACK)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3_server(spark):
    """A moto S3 server, with the session's Spark reading and writing s3:// and s3a:// on it
    through S3A (spark_jobs.s3a, as run_local does) and SSE-KMS on every object it writes."""
    from motoserver import JAVA_TRUST_ANY_CERT, running_moto_server
    from spark_jobs.s3a import require_s3a_jars, s3a_conf

    require_s3a_jars()
    name, value = JAVA_TRUST_ANY_CERT.removeprefix("-D").split("=")
    spark.sparkContext._jvm.java.lang.System.setProperty(name, value)  # read when S3A makes its client
    with running_moto_server(tls=True) as endpoint:
        settings = {"FRUITS_S3_ENDPOINT": endpoint, "FRUITS_S3_SSE": "SSE-KMS", "FRUITS_S3_KMS_KEY": S3_KMS_KEY}
        hadoop = spark.sparkContext._jsc.hadoopConfiguration()
        for name, value in s3a_conf(settings).items():
            if name.startswith("spark.hadoop."):
                hadoop.set(name.removeprefix("spark.hadoop."), value)
        for name in ("access.key", "secret.key"):  # the JVM's environment was fixed at its start
            hadoop.set(f"fs.s3a.{name}", "testing")
        yield endpoint


@pytest.fixture
def s3_client(s3_server):
    return s3_client_of(s3_server)


def s3_client_of(endpoint: str):
    import boto3
    from motoserver import certificate_of

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", verify=certificate_of(endpoint),
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
