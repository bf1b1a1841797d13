"""Small file operations through Hadoop's FileSystem, so one code path serves local paths,
s3:// (EMRFS on EMR) and s3a:// alike, on the driver, without boto3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession


def _fs_path(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def exists(spark: SparkSession, uri: str) -> bool:
    fs, path = _fs_path(spark, uri)
    return bool(fs.exists(path))


def is_dir(spark: SparkSession, uri: str) -> bool:
    fs, path = _fs_path(spark, uri)
    return bool(fs.exists(path) and fs.getFileStatus(path).isDirectory())


def size(spark: SparkSession, uri: str) -> int:
    fs, path = _fs_path(spark, uri)
    return int(fs.getFileStatus(path).getLen())


def qualify(spark: SparkSession, uri: str) -> str:
    """The URI as Spark's file sources report it (e.g. /a/b -> file:/a/b)."""
    fs, path = _fs_path(spark, uri)
    return str(fs.makeQualified(path).toString())


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    fs, path = _fs_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    fs, path = _fs_path(spark, uri)
    stream = fs.open(path)
    try:
        return bytes(spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def write_json(spark: SparkSession, uri: str, payload: dict[str, Any]) -> None:
    write_bytes(spark, uri, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_json(spark: SparkSession, uri: str) -> dict[str, Any]:
    return json.loads(read_bytes(spark, uri).decode())


def upload_file(spark: SparkSession, local: Path, uri: str) -> None:
    write_bytes(spark, uri, Path(local).read_bytes())


def download_file(spark: SparkSession, uri: str, local: Path) -> Path:
    fs, path = _fs_path(spark, uri)
    target = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(str(Path(local).resolve()))
    fs.copyToLocalFile(False, path, target, True)  # raw local FS: no .crc file beside it
    return Path(local)
