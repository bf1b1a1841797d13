"""Local Spark's class archive: built once per machine (`make setup` runs `python -m
local_spark.class_archive`, ~45-70 s: featurize + pca on the demo images in a JVM that archives the
classes it loaded at exit), in ~/.cache/fruits/spark-classes (or $FRUITS_CLASS_ARCHIVE_CACHE), where
local_spark.jvm_options finds it (a 5 % incremental featurize run: ~10-11 s without, ~7-8 s with it,
docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyspark import SparkContext

from local_spark import run_local
from local_spark.jvm_options import archive_path, class_path_files, file_identities
from local_spark.session import REPO_ROOT, local_spark

# What the archive's run works on: the demo's images and model (the Makefile's `make demo`)
EXERCISE_IMAGES = REPO_ROOT / "data" / "sample"
EXERCISE_MODEL = ("--weights", str(run_local.BUNDLED_WEIGHTS), "--alpha", "0.35")
# The dump's warnings list every class it cannot archive (signed jars, old class files): noise
QUIET_DUMP = "-Xlog:cds*=off"


def exercise(spark, scratch: Path) -> None:
    """The jobs themselves on the bundled demo images, so the archive holds the classes they load:
    featurize + pca over an image folder (model exported, PCA fitted), then over a manifest of a
    few of them (the saved PCA model applied)."""
    def run(*options: str) -> None:
        run_local.run_pipeline(spark, run_local.build_parser().parse_args([*options, *EXERCISE_MODEL]))

    run("--images", str(EXERCISE_IMAGES), "--output", str(scratch / "folder"))
    manifest = scratch / "manifest.txt"
    manifest.write_text("".join(f"{path}\n" for path in sorted(EXERCISE_IMAGES.glob("*/*.jpg"))[:8]))
    run("--manifest", str(manifest), "--output", str(scratch / "manifest"), "--pca-model", str(scratch / "folder" / "pca_model"))


def dump_archive(archive: Path) -> None:
    """In this process: run `exercise` with a local Spark whose JVM archives its classes at exit
    to `archive`, then end that JVM and wait until it has written the file."""
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
        done = subprocess.run([sys.executable, "-m", "local_spark.class_archive", "--dump", str(partial)],
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
    parser = argparse.ArgumentParser(prog="class_archive", description="Build local Spark's class archive once.")
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # the build's own child process
    args = parser.parse_args(argv)
    if args.dump:
        dump_archive(args.dump)
        return 0
    started = time.perf_counter()
    try:
        archive = ensure_archive()
    except RuntimeError as exc:  # Spark still runs without it, only slower to start
        print(f"class_archive: warning: local Spark will start without a class archive: {exc}", file=sys.stderr)
        return 0
    if archive is None:
        print("class_archive: Java not found: no class archive for local Spark", file=sys.stderr)
        return 1
    print(f"local Spark class archive: {archive} ({archive.stat().st_size / 2**20:.0f} MB,"
          f" {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
