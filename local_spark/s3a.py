"""Spark settings for s3:// and s3a:// outside EMR: Hadoop's S3A connector against any S3 server.

EMR 7.10+ reads s3:// through S3A; local runs (run_local, the tests, the DAG's local compute mode)
do the same, so the jobs' S3 code paths (binaryFile listing of keys, Hadoop reads and writes of
reports and Parquet) run here too. The connector's jars come from `make setup`
(scripts/fetch_s3a_jars.py, into jars/; FRUITS_JARS_DIR names another folder, as the compose
stack's image does). The server comes from the environment:

    FRUITS_S3_ENDPOINT   e.g. http://127.0.0.1:9000 (MinIO, moto); unset = AWS S3 itself
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN   read by S3A's default chain
    AWS_REGION or AWS_DEFAULT_REGION   the signing region (default us-east-1)
    FRUITS_S3_SSE        SSE-S3 or SSE-KMS: server-side encryption of every object written
    FRUITS_S3_KMS_KEY    the KMS key id, ARN or alias of SSE-KMS (unset: the bucket's default)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

JARS_DIR = Path(os.environ.get("FRUITS_JARS_DIR") or Path(__file__).resolve().parent.parent / "jars")
JAR_PREFIXES = ("hadoop-aws-", "aws-java-sdk-bundle-")
S3A = "org.apache.hadoop.fs.s3a.S3AFileSystem"
SSE_ALGORITHMS = ("SSE-S3", "SSE-KMS")
# The boto3 ServerSideEncryption values of plugins/fruits_emr/settings.sse_arguments, as named here.
BOTO3_SSE = {"AES256": "SSE-S3", "aws:kms": "SSE-KMS"}
# fs.s3a.encryption.algorithm's own names: Hadoop calls SSE-S3 "AES256" ("SSE-S3" is refused).
S3A_ALGORITHM = {"SSE-S3": "AES256", "SSE-KMS": "SSE-KMS"}


class S3ConfigError(ValueError):
    """The S3 settings in the environment cannot work; the message says which one."""


def s3a_jars() -> list[Path]:
    """hadoop-aws and the AWS SDK bundle in jars/ (empty until `make setup` fetched them)."""
    found = [next(iter(sorted(JARS_DIR.glob(f"{prefix}*.jar"))), None) for prefix in JAR_PREFIXES]
    return [jar for jar in found if jar is not None] if all(found) else []


def require_s3a_jars() -> list[Path]:
    jars = s3a_jars()
    if not jars:
        raise S3ConfigError(
            f"the S3A connector jars are not in {JARS_DIR}: run `make setup`"
            " (or python scripts/fetch_s3a_jars.py) to read or write s3:// locally"
        )
    return jars


def encryption_conf(algorithm: str | None, kms_key: str | None = None) -> dict[str, str]:
    """S3A's server-side encryption of every object it writes (SSE-S3 or SSE-KMS, optional key)."""
    if not algorithm:
        return {}
    algorithm = BOTO3_SSE.get(algorithm, algorithm).upper()
    if algorithm not in SSE_ALGORITHMS:
        raise S3ConfigError(f"S3 encryption {algorithm!r}: use one of {', '.join(SSE_ALGORITHMS)}")
    conf = {"spark.hadoop.fs.s3a.encryption.algorithm": S3A_ALGORITHM[algorithm]}
    if kms_key and algorithm == "SSE-KMS":
        conf["spark.hadoop.fs.s3a.encryption.key"] = kms_key
    return conf


def s3a_conf(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Spark confs that map s3://, s3a:// and s3n:// to S3A with the environment's server settings."""
    env = os.environ if environ is None else environ
    conf = {f"spark.hadoop.fs.{scheme}.impl": S3A for scheme in ("s3", "s3a", "s3n")}
    jars = s3a_jars()
    if jars:  # on the JVM's classpath from its start: spark-submit fetches an s3:// script before --jars
        conf["spark.driver.extraClassPath"] = os.pathsep.join(str(jar) for jar in jars)  # local: executors too
    conf["spark.hadoop.fs.s3a.endpoint.region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = (env.get("FRUITS_S3_ENDPOINT") or "").strip()
    if endpoint:
        if not endpoint.startswith(("http://", "https://")):
            raise S3ConfigError(f"FRUITS_S3_ENDPOINT={endpoint!r}: give a URL such as http://127.0.0.1:9000")
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"  # MinIO, moto: no bucket DNS names
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https://")).lower()
    conf.update(encryption_conf(env.get("FRUITS_S3_SSE"), env.get("FRUITS_S3_KMS_KEY")))
    return conf
