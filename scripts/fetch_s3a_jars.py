"""Fetch hadoop-aws and its AWS SDK bundle, and the OpenLineage Spark listener, from Maven Central
into jars/ (idempotent).

    python scripts/fetch_s3a_jars.py [--dest jars]

Spark reads and writes s3:// and s3a:// through Hadoop's S3A connector, which pyspark does not
ship. hadoop-aws must match the Hadoop client jars pyspark bundles (pyspark 3.5.x: Hadoop 3.3.4)
and aws-java-sdk-bundle the SDK version that hadoop-aws was built against; a mismatch fails only
at the first S3 read, so this script refuses to run against another Hadoop. openlineage-spark (the
build for pyspark's Scala 2.12, one shaded jar) is what the Spark steps load when lineage is on:
stage_artifacts stages it from jars/ (fruits_emr.lineage, docs/lineage.md). Every jar is checked
against the SHA-1 that Maven Central publishes beside it and against the SHA-256 pinned below.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
HADOOP_VERSION = "3.3.4"
# (group path, artifact, version, sha256): the SHA-256s were taken from the downloaded jars,
# whose SHA-1s matched Maven Central's published .sha1 files.
JARS = (
    ("org/apache/hadoop", "hadoop-aws", HADOOP_VERSION,
     "53f9ae03c681a30a50aa17524bd9790ab596b28481858e54efd989a826ed3a4a"),
    ("com/amazonaws", "aws-java-sdk-bundle", "1.12.262",
     "873fe7cf495126619997bec21c44de5d992544aea7e632fdc77adb1a0915bae5"),
    ("io/openlineage", "openlineage-spark_2.12", "1.53.0",
     "9fe28ee2e5b2cb535cd51b6572394bddeb684bf0c58650a698cf7724ce62d94d"),
)
DEFAULT_DEST = REPO_ROOT / "jars"


def pyspark_hadoop_version() -> str | None:
    """The version of the hadoop-client-api jar that pyspark bundles (None without pyspark)."""
    try:
        import pyspark
    except ImportError:
        return None
    jars = Path(pyspark.__file__).parent / "jars"
    for jar in jars.glob("hadoop-client-api-*.jar"):
        return jar.name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    return None


def digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def fetch(group: str, artifact: str, version: str, sha256: str, dest: Path) -> Path:
    """dest/<artifact>-<version>.jar, downloaded unless already there with the pinned SHA-256."""
    target = dest / f"{artifact}-{version}.jar"
    if target.is_file() and digest(target, "sha256") == sha256:
        return target
    url = f"{MAVEN_CENTRAL}/{group}/{artifact}/{version}/{target.name}"
    with urllib.request.urlopen(url + ".sha1", timeout=60) as response:
        published_sha1 = response.read().decode().split()[0].strip().lower()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest, suffix=".part", delete=False) as partial:
        with urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                partial.write(chunk)
    part = Path(partial.name)
    for algorithm, expected in (("sha1", published_sha1), ("sha256", sha256)):
        actual = digest(part, algorithm)
        if actual != expected:
            part.unlink()
            raise SystemExit(f"fetch_s3a_jars: {url}: {algorithm} {actual} != expected {expected}")
    part.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="folder for the jars (default: %(default)s)")
    args = parser.parse_args(argv)
    bundled = pyspark_hadoop_version()
    if bundled != HADOOP_VERSION:
        print(
            f"fetch_s3a_jars: pyspark bundles Hadoop {bundled}, these jars are for {HADOOP_VERSION}:"
            " update JARS in scripts/fetch_s3a_jars.py to the matching hadoop-aws and SDK bundle",
            file=sys.stderr,
        )
        return 1
    for group, artifact, version, sha256 in JARS:
        print(f"fetch_s3a_jars: {fetch(group, artifact, version, sha256, args.dest)} (sha256 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
