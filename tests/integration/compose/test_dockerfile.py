"""Static checks of the stack's image, docker/Dockerfile: its base pinned by digest, what it installs
and as whom, the build context, the S3A jars against the pinned pyspark (no Docker engine needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

from .compose_file import PINNED_IMAGE, dockerfile_args, dockerignore_excludes, pinned_version

# Hadoop (and the AWS SDK bundle hadoop-aws was built with) that each pyspark minor release
# ships; extend when requirements.txt moves to another pyspark minor version.
PYSPARK_HADOOP = {"3.5": ("3.3.4", "1.12.262")}
SPARK_SUPPORTED_JAVA = {"3.5": {8, 11, 17}}


def test_build_context_and_copied_files_exist(image_build: dict, dockerfile_path: Path, instructions: list) -> None:
    context = REPO_ROOT / image_build["context"]
    assert dockerfile_path.is_file()
    ignore_file = dockerfile_path.with_name(dockerfile_path.name + ".dockerignore")
    patterns = [
        line.strip()
        for line in ignore_file.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the build context is the repo root: keep the ignore file an allow-list"
    copies = [rest.split() for keyword, rest in instructions if keyword == "COPY"]
    assert copies
    for words in copies:
        sources = [w for w in words if not w.startswith("--")][:-1]
        for source in sources:
            assert (context / source).exists(), f"COPY source {source} does not exist"
            assert not dockerignore_excludes(source.rstrip("/"), patterns), f"{source} is excluded by {ignore_file.name}"


def _base_image(instructions: list) -> str:
    """The FROM line's image with the Dockerfile's ARG defaults (what a user's build pulls)."""
    args = dockerfile_args(instructions)
    base = next(rest for keyword, rest in instructions if keyword == "FROM")
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)


def test_dockerfile_builds_on_a_python_image_pinned_by_digest(instructions: list) -> None:
    """A plain Python image of Debian bookworm (Java 17 from its packages), pinned by tag and
    digest; a build arg, so the compose test can put its stand-in there."""
    base = _base_image(instructions)
    assert PINNED_IMAGE.match(base), f"{base} is not pinned as name:tag@sha256:<digest>"
    assert re.fullmatch(r"python:3\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    assert next(rest for keyword, rest in instructions if keyword == "FROM") == "${PYTHON_IMAGE}"


def _user_per_run(instructions: list) -> list[tuple[str, str]]:
    user, runs = "root", []  # the Python image's user
    for keyword, rest in instructions:
        if keyword == "USER":
            user = rest
        elif keyword == "RUN":
            runs.append((user, rest))
    return runs


def test_dockerfile_installs_java_for_spark(instructions: list, requirements: str) -> None:
    runs = _user_per_run(instructions)
    java = [(user, cmd) for user, cmd in runs if re.search(r"apt-get install .*openjdk-\d+-jre-headless", cmd)]
    assert java, "no apt-get install of an openjdk JRE"
    user, command = java[0]
    assert user == "root"
    java_major = int(re.search(r"openjdk-(\d+)-jre-headless", command).group(1))
    pyspark = pinned_version(requirements, "pyspark")
    assert pyspark, "requirements.txt does not pin pyspark==X.Y.Z"
    supported = SPARK_SUPPORTED_JAVA.get(".".join(pyspark.split(".")[:2]))
    assert supported, f"no known Java versions for pyspark {pyspark}: extend SPARK_SUPPORTED_JAVA"
    assert java_major in supported, f"Java {java_major} is not supported by pyspark {pyspark}"
    envs = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert re.search(r"JAVA_HOME=\S+", envs)


def test_dockerfile_installs_the_project_pins_and_runs_as_a_non_root_user(instructions: list, requirements: str) -> None:
    """requirements.txt with constraints.txt, Airflow included, as `make setup` installs them, and a
    clean `pip check`; the containers then run as uid 50000 (compose: AIRFLOW_UID), via the repo's
    entrypoint."""
    installs = [cmd for _, cmd in _user_per_run(instructions) if "-r /tmp/requirements.txt" in cmd]
    assert len(installs) == 1, "requirements.txt is pip-installed once"
    assert "-c /tmp/constraints.txt" in installs[0] and installs[0].endswith("&& pip check")
    assert pinned_version(requirements, "apache-airflow"), "requirements.txt pins the Airflow the image runs"
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] == "50000"
    entrypoint = next(rest for keyword, rest in instructions if keyword == "ENTRYPOINT")
    assert json.loads(entrypoint)[-1] == "/entrypoint"
    assert "COPY docker/entrypoint.sh /entrypoint" in {f"{k} {rest}" for k, rest in instructions}


def test_image_python_matches_the_resolved_constraints(instructions: list) -> None:
    header = (REPO_ROOT / "constraints.txt").read_text().splitlines()[0]
    python = re.search(r"Python (3\.\d+)", header)
    assert python, f"constraints.txt does not say which Python it was resolved for: {header!r}"
    assert _base_image(instructions).startswith(f"python:{python.group(1)}-")


def _fetch_script():
    from scripts import fetch_s3a_jars

    return fetch_s3a_jars


def test_hadoop_aws_matches_the_pinned_pyspark(instructions: list, requirements: str) -> None:
    pyspark = pinned_version(requirements, "pyspark")
    assert pyspark, "requirements.txt does not pin pyspark==X.Y.Z"
    minor = ".".join(pyspark.split(".")[:2])
    assert minor in PYSPARK_HADOOP, f"no known Hadoop version for pyspark {pyspark}: extend PYSPARK_HADOOP"
    hadoop, sdk = PYSPARK_HADOOP[minor]
    fetch = _fetch_script()
    versions = {artifact: version for _, artifact, version, _ in fetch.JARS}
    assert (fetch.HADOOP_VERSION, versions["hadoop-aws"], versions["aws-java-sdk-bundle"]) == (hadoop, hadoop, sdk)
    assert all(re.fullmatch(r"[0-9a-f]{64}", sha256) for *_, sha256 in fetch.JARS)
    runs = [cmd for _, cmd in _user_per_run(instructions)]
    jars = next((i for i, cmd in enumerate(runs) if "fetch_s3a_jars.py" in cmd), None)
    install = next(i for i, cmd in enumerate(runs) if "requirements.txt" in cmd)
    assert jars is not None, "the Dockerfile never runs scripts/fetch_s3a_jars.py"
    assert jars > install, "jars must be fetched after pip installed pyspark"
    dest = re.search(r"--dest (\S+)", runs[jars]).group(1)
    envs = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert f"FRUITS_JARS_DIR={dest}" in envs, "local_spark/s3a.py looks for the jars in FRUITS_JARS_DIR"


def test_hadoop_version_matches_installed_pyspark_jars(requirements: str) -> None:
    pyspark = pytest.importorskip("pyspark")
    if pyspark.__version__ != pinned_version(requirements, "pyspark"):
        pytest.skip(f"installed pyspark {pyspark.__version__} is not the pinned one")
    fetch = _fetch_script()
    assert fetch.pyspark_hadoop_version() == fetch.HADOOP_VERSION
