"""Small file operations through Hadoop's FileSystem, so one code path serves local paths,
s3:// (EMRFS on EMR) and s3a:// alike, on the driver, without boto3."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession

# scheme:[//authority]path; the rest of the string is the path, as for Hadoop's Path.
URI_PARTS = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?://(?P<authority>[^/]*))?(?P<path>.*)$")
PATH_SEPARATOR = "\0"  # no file name or S3 key holds it
GLOB_CHARACTERS = re.compile(r"([{}\[\]*?\\])")  # what Spark's file sources treat as a glob

# Two spellings of one file cross this module. The literal form is the name the user gave, as
# Hadoop's `new Path(String)` takes it and `Path.toString()` gives it back: manifests, S3 keys,
# --images, and the binaryFile `path` column (Spark 3.5) use it. The URI-encoded form is
# `Path.toUri().toString()`: DataFrame.inputFiles() returns it (file:///a/p%20q%25.jpg). Handing
# the encoded form to `new Path(String)` names another file; literal_path() converts it back.


def literal_path(uri: str) -> str:
    """The literal Hadoop path of a URI-encoded one: file:///a/p%20q%25.jpg -> file:/a/p q%.jpg.

    The inverse of Path.toUri().toString(), as `new Path(new URI(uri)).toString()` computes it
    (tests check that the two agree): every '%' of a name is encoded as %25 there, so decoding
    each %XX once gives the name back; '+' stays '+'; an empty authority (file:///) is dropped.
    """
    parts = URI_PARTS.match(uri)
    if parts is None:
        return unquote(uri)
    authority = unquote(parts["authority"] or "")
    return f"{parts['scheme']}:" + (f"//{authority}" if authority else "") + unquote(parts["path"])


def glob_escaped(path: str) -> str:
    """A literal path as a Hadoop glob that matches only itself: Spark's file sources glob every
    path they are given, so a file named q?u.jpg would otherwise also match qXu.jpg."""
    return GLOB_CHARACTERS.sub(r"\\\1", path)


def is_hidden_name(name: str) -> bool:
    """Spark's file sources skip such files and folders, even when named explicitly."""
    return (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")


def _fs_path(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def list_files(spark: SparkSession, root: str) -> list[str]:
    """Every file under root, recursively, hidden ones too: literal paths."""
    qualified = qualify(spark, root)
    if qualified.startswith("file:/"):
        # Hadoop's local listing forks a process per file for its permissions (without the native
        # library): ~4 ms a file, where os.walk takes microseconds.
        top = qualified.removeprefix("file:")
        return [f"file:{os.path.join(folder, name)}" for folder, _, names in os.walk(top) for name in names]
    fs, path = _fs_path(spark, root)
    jvm = spark.sparkContext._jvm
    statuses = jvm.org.apache.hadoop.util.functional.RemoteIterators.toList(fs.listFiles(path, True))
    if statuses.isEmpty():
        return []
    paths = jvm.org.apache.hadoop.fs.FileUtil.stat2Paths(_java_array(spark, statuses.toArray(), jvm.org.apache.hadoop.fs.FileStatus))
    return python_strings(spark, paths)


def input_files(spark: SparkSession, frame: DataFrame) -> list[str]:
    """DataFrame.inputFiles() (URI-encoded), without its py4j call per file."""
    return python_strings(spark, frame._jdf.inputFiles())


def python_strings(spark: SparkSession, array) -> list[str]:
    """The toString() of each element of a Java array, sent as one string: a py4j call per
    element costs ~0.5 ms, seconds for 10,000 files."""
    if len(array) == 0:
        return []
    jvm = spark.sparkContext._jvm
    joined = jvm.org.apache.commons.lang3.StringUtils.join(_java_array(spark, array, jvm.java.lang.Object), PATH_SEPARATOR)
    return str(joined).split(PATH_SEPARATOR)


def _java_array(spark: SparkSession, source, element_class):
    """A copy of a Java array as element_class[]: py4j matches an array argument by its exact type."""
    size = len(source)
    target = spark.sparkContext._gateway.new_array(element_class, size)
    spark.sparkContext._jvm.java.lang.System.arraycopy(source, 0, target, 0, size)
    return target


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
