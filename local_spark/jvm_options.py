"""The JVM options of local Spark (make run, the tests, the DAG's local compute mode): the C1 JIT only,
and the class archive of Spark's classes to start from once local_spark.class_archive built it.

Class data sharing (JDK 13+): a JVM started with `-XX:SharedArchiveFile` maps the classes another
JVM archived at its exit instead of reading, parsing and verifying them again from Spark's jars.
The archive is named after the Java runtime and Spark's class path, so a stale one is never used;
without it (not built yet, another Java or another Spark) Spark starts as before.

No pyspark import: the Airflow worker reads these options for its local spark-submit.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from local_spark.s3a import s3a_jars

# Local Spark's one JVM (driver and executor): C1 JIT only. Tiered compilation's C2 compiler
# takes cores from the tasks for the first seconds of every run (the JVM itself only moves bytes
# to Python and Parquet): a 5 % incremental run took ~1-2 s less, the full run no clear
# difference (docs/performance.md). Not set on EMR, whose own extraJavaOptions this would replace.
LOCAL_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
CACHE_ENV = "FRUITS_CLASS_ARCHIVE_CACHE"  # the archives' folder (default ~/.cache/fruits/spark-classes)


def java_binary() -> Path | None:
    """The `java` spark-submit starts: $JAVA_HOME/bin/java, else the one on PATH (resolved)."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).is_file() else None


def class_path_files() -> list[Path]:
    """The jars on local Spark's class path: pyspark's own, then the S3A connector's (local_spark.s3a)."""
    spec = importlib.util.find_spec("pyspark")  # located, not imported
    jars = Path(list(spec.submodule_search_locations)[0]) / "jars" if spec and spec.submodule_search_locations else None
    return [*(sorted(jars.glob("*.jar")) if jars else []), *s3a_jars()]


def file_identities(paths: list[Path]) -> list[list]:
    """Path, size and modification time of each file: what the JVM checks an archive's class path by."""
    return [[str(path), path.stat().st_size, path.stat().st_mtime_ns] for path in paths]


def archive_path() -> Path | None:
    """Where the archive for this Java runtime and Spark class path is (or would be); None
    without Java. The name changes with either, so a stale archive is never used."""
    java = java_binary()
    if java is None:
        return None
    libjvm = next(iter(sorted(java.parent.parent.glob("lib/server/libjvm.so"))), java)
    digest = hashlib.sha256(json.dumps(file_identities([java, libjvm, *class_path_files()])).encode()).hexdigest()[:16]
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fruits" / "spark-classes")
    return cache / f"{digest}.jsa"


def local_jvm_options(caller_options: str | None = None) -> str:
    """LOCAL_JVM_OPTIONS, the class archive when built, then the caller's own JVM options."""
    archive = archive_path()
    shared = f"-XX:SharedArchiveFile={archive}" if archive and archive.is_file() else None
    return " ".join(filter(None, [LOCAL_JVM_OPTIONS, shared, caller_options]))
