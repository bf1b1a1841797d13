"""The JVM options of local Spark: the C1 JIT only, and an archive of Spark's classes to start from.

Class data sharing (JDK 13+): a JVM started with `-XX:SharedArchiveFile` maps the classes another
JVM archived at its exit (`-XX:ArchiveClassesAtExit`) instead of reading, parsing and verifying
them again from Spark's jars. `make setup` builds the archive once per machine
(`python -m spark_jobs.local_jvm`, ~45 s: featurize + pca on the demo images), in the user's cache
folder (~/.cache/fruits/spark-classes, or $FRUITS_CLASS_ARCHIVE_CACHE), named after the Java
runtime and Spark's class path; local Spark uses it when it is there
(a 5 % incremental featurize run: ~10-11 s without, ~7-8 s with it, docs/performance.md). Without
it (not built yet, another Java or another Spark) Spark starts as before.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spark_jobs.backbones import BUNDLED_WEIGHTS

REPO_ROOT = Path(__file__).resolve().parent.parent
# Local Spark's one JVM (driver and executor): C1 JIT only. Tiered compilation's C2 compiler
# takes cores from the tasks for the first seconds of every run (the JVM itself only moves bytes
# to Python and Parquet): a 5 % incremental run took ~1-2 s less, the full run no clear
# difference (docs/performance.md). Not set on EMR, whose own extraJavaOptions this would replace.
LOCAL_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
# What the archive's run works on: the demo's images and model (the Makefile's `make demo`)
EXERCISE_IMAGES = REPO_ROOT / "data" / "sample"
EXERCISE_MODEL = ("--weights", str(BUNDLED_WEIGHTS), "--alpha", "0.35")
CACHE_ENV = "FRUITS_CLASS_ARCHIVE_CACHE"  # the archives' folder (default ~/.cache/fruits/spark-classes)
# The dump's warnings list every class it cannot archive (signed jars, old class files): noise
QUIET_DUMP = "-Xlog:cds*=off"


def java_binary() -> Path | None:
    """The `java` spark-submit starts: $JAVA_HOME/bin/java, else the one on PATH (resolved)."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).is_file() else None


def class_path_files() -> list[Path]:
    """The jars on local Spark's class path: pyspark's own, then the S3A connector's (spark_jobs.s3a)."""
    import pyspark

    from spark_jobs.s3a import s3a_jars

    return [*sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar")), *s3a_jars()]


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


def exercise(spark, scratch: Path) -> None:
    """The jobs themselves on the bundled demo images, so the archive holds the classes they load:
    featurize + pca over an image folder (model exported, PCA fitted), then over a manifest of a
    few of them (the saved PCA model applied)."""
    from spark_jobs import run_local

    def run(*options: str) -> None:
        run_local.run_pipeline(spark, run_local.build_parser().parse_args([*options, *EXERCISE_MODEL]))

    run("--images", str(EXERCISE_IMAGES), "--output", str(scratch / "folder"))
    manifest = scratch / "manifest.txt"
    manifest.write_text("".join(f"{path}\n" for path in sorted(EXERCISE_IMAGES.glob("*/*.jpg"))[:8]))
    run("--manifest", str(manifest), "--output", str(scratch / "manifest"), "--pca-model", str(scratch / "folder" / "pca_model"))


def dump_archive(archive: Path) -> None:
    """In this process: run `exercise` with a local Spark whose JVM archives its classes at exit
    to `archive`, then end that JVM and wait until it has written the file."""
    from pyspark import SparkContext

    from spark_jobs.run_local import local_spark

    spark = local_spark(conf={"spark.driver.extraJavaOptions": f"{QUIET_DUMP} -XX:ArchiveClassesAtExit={archive}"})
    try:
        with tempfile.TemporaryDirectory(prefix="fruits-jvm-archive-") as scratch:
            exercise(spark, Path(scratch))
    finally:
        spark.stop()
        gateway = SparkContext._gateway.proc  # spark-submit's JVM: it exits when its stdin closes
        gateway.stdin.close()
        gateway.wait()


def build_archive(archive: Path) -> None:
    """Build `archive` in a fresh process (its JVM must start without one) and move it into place
    only once written: a truncated archive would crash the JVM that maps it. Beside it, a note of
    the class path it was built for. RuntimeError with the build's last output lines if it fails."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")
    try:
        done = subprocess.run([sys.executable, "-m", "spark_jobs.local_jvm", "--dump", str(partial)],
                              capture_output=True, text=True)
        if done.returncode != 0 or not partial.is_file():
            raise RuntimeError(f"building {archive.name} failed:\n{done.stderr[-3000:]}")
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)
    archive.with_suffix(".json").write_text(json.dumps({"class_path": file_identities(class_path_files())}))


def remove_stale_archives(cache: Path) -> None:
    """Archives built for a class path whose jars are gone or changed (a deleted or re-created
    virtualenv, an upgraded pyspark): ~150 MB each, no JVM can use them any more."""
    for note in cache.glob("*.json"):
        if not unchanged(json.loads(note.read_text())["class_path"]):
            note.with_suffix(".jsa").unlink(missing_ok=True)
            note.unlink()


def unchanged(identities: list[list]) -> bool:
    """Every file of file_identities' list still there, same size and time."""
    paths = [Path(path) for path, *_ in identities]
    return all(path.is_file() for path in paths) and file_identities(paths) == identities


def ensure_archive() -> Path | None:
    """The archive for this Java and Spark, built first if missing; None without Java."""
    archive = archive_path()
    if archive is not None and not archive.is_file():
        if archive.parent.is_dir():
            remove_stale_archives(archive.parent)
        build_archive(archive)
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local_jvm", description="Build local Spark's class archive once.")
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # the build's own child process
    args = parser.parse_args(argv)
    if args.dump:
        dump_archive(args.dump)
        return 0
    started = time.perf_counter()
    try:
        archive = ensure_archive()
    except RuntimeError as exc:  # Spark still runs without it, only slower to start
        print(f"local_jvm: warning: local Spark will start without a class archive: {exc}", file=sys.stderr)
        return 0
    if archive is None:
        print("local_jvm: Java not found: no class archive for local Spark", file=sys.stderr)
        return 1
    print(f"local Spark class archive: {archive} ({archive.stat().st_size / 2**20:.0f} MB,"
          f" {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
