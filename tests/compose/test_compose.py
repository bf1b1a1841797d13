"""Static checks of the local docker compose stack: docker-compose.yaml, docker/ and .env.example.

No Docker engine is needed. The file is read with PyYAML (which resolves the `<<` merge keys the
way Compose does) and `${VAR:-default}` is interpolated with the file's own defaults. When a
Compose v2 CLI is installed, one test also lets `docker compose config` validate the file.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
REQUIREMENTS = REPO_ROOT / "requirements.txt"

REQUIRED_SERVICES = {
    "postgres",
    "minio",
    "minio-init",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
ONE_SHOT_SERVICES = {"airflow-init", "minio-init"}
# Repository folders the Airflow containers must see, and where (mirroring the repo layout).
CODE_AND_DATA_MOUNTS = {
    "./dags": "/opt/airflow/dags",
    "./plugins": "/opt/airflow/plugins",
    "./spark_jobs": "/opt/airflow/spark_jobs",
    "./models": "/opt/airflow/models",
    "./data": "/opt/airflow/data",
}
EXPECTED_HOST_PORTS = {"airflow-apiserver": {8080}, "minio": {9000, 9001}}
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# Hadoop (and the AWS SDK bundle hadoop-aws was built with) that each pyspark minor release
# ships; extend when requirements.txt moves to another pyspark minor version.
PYSPARK_HADOOP = {"3.5": ("3.3.4", "1.12.262")}
SPARK_SUPPORTED_JAVA = {"3.5": {8, 11, 17}}


# --------------------------------------------------------------------------- helpers


def interpolate(text: str, env: dict[str, str]) -> str:
    """Resolve Compose-style `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$$`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                if j >= len(text):
                    raise ValueError(f"unclosed ${{ in {text!r}")
                if text.startswith("${", j):
                    depth, j = depth + 1, j + 2
                    continue
                if text[j] == "}":
                    depth -= 1
                j += 1
            expr = text[i + 2 : j - 1]
            name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", expr)
            if not name:
                raise ValueError(f"bad variable in {text!r}")
            rest = expr[name.end() :]
            value = env.get(name.group())
            if rest.startswith(":-"):
                value = value if value else interpolate(rest[2:], env)
            elif rest.startswith("-"):
                value = value if value is not None else interpolate(rest[1:], env)
            elif rest:
                raise ValueError(f"unsupported interpolation {expr!r}")
            out.append(value or "")
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def referenced_variables(text: str) -> set[str]:
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: line without '=': {line!r}"
            values[key.strip()] = value.strip()
    return values


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def dockerfile_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args.setdefault(name.strip(), value.strip().strip('"'))
    return args


def pinned_version(requirements: str, package: str) -> str | None:
    pattern = rf"^\s*{re.escape(package)}(\[[^\]]*\])?\s*==\s*([0-9][^\s;#\\]*)"
    match = re.search(pattern, requirements, flags=re.IGNORECASE | re.MULTILINE)
    return match.group(2) if match else None


def split_volume(spec: str | dict) -> tuple[str, str, bool]:
    """(source, target, read_only) of a short- or long-syntax volume entry."""
    if isinstance(spec, dict):
        return spec.get("source", ""), spec["target"], bool(spec.get("read_only"))
    parts = spec.split(":")
    if len(parts) == 1:
        return "", parts[0], False
    mode = parts[2] if len(parts) > 2 else ""
    return parts[0], parts[1], "ro" in mode.split(",")


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def host_ports(service: dict) -> set[int]:
    ports = set()
    for spec in service.get("ports", []):
        if isinstance(spec, dict):
            if spec.get("published"):
                ports.add(int(spec["published"]))
            continue
        parts = str(spec).split("/")[0].split(":")
        if len(parts) >= 2:
            ports.add(int(parts[-2]))
    return ports


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            excluded = not negate
    return excluded


def compose_cli() -> list[str] | None:
    candidates = [["docker", "compose"], ["docker-compose"]]
    for command in candidates:
        if not shutil.which(command[0]):
            continue
        try:
            done = subprocess.run(
                [*command, "version", "--short"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip().lstrip("v").startswith("2"):
            return command
    return None


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict:
    """docker-compose.yaml with merge keys resolved and variables set to the file's defaults."""
    return resolve(yaml.safe_load(compose_text), env={})


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def airflow_services(services: dict) -> dict[str, dict]:
    return {name: spec for name, spec in services.items() if name.startswith("airflow-")}


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def dockerfile_path(compose: dict) -> Path:
    build = compose["x-airflow-common"]["build"]
    return REPO_ROOT / build["context"] / build["dockerfile"]


@pytest.fixture(scope="module")
def instructions(dockerfile_path: Path) -> list[tuple[str, str]]:
    return dockerfile_instructions(dockerfile_path)


@pytest.fixture(scope="module")
def requirements() -> str:
    assert REQUIREMENTS.is_file(), (
        "requirements.txt is missing at the repository root; docker/Dockerfile installs it "
        "and these tests read the pyspark pin from it"
    )
    return REQUIREMENTS.read_text()


# --------------------------------------------------------------------------- structure


def test_compose_file_parses_into_services(compose: dict) -> None:
    assert isinstance(compose.get("services"), dict) and compose["services"]
    assert isinstance(compose.get("x-airflow-common"), dict)


def test_required_services_exist(services: dict) -> None:
    assert REQUIRED_SERVICES <= set(services), f"missing: {sorted(REQUIRED_SERVICES - set(services))}"


def test_airflow_services_share_the_common_block(compose: dict, airflow_services: dict) -> None:
    common = compose["x-airflow-common"]
    assert {"image", "build", "environment", "volumes", "user", "depends_on"} <= set(common)
    assert len(airflow_services) >= 5
    for name, spec in airflow_services.items():
        assert spec.get("image") == common["image"], name
        assert spec.get("build") == common["build"], name
        assert spec.get("volumes") == common["volumes"], name
        for key, value in common["environment"].items():
            assert spec["environment"].get(key) == value, f"{name}: {key} differs from x-airflow-common"
        for dependency, condition in common["depends_on"].items():
            assert spec["depends_on"].get(dependency) == condition, f"{name}: depends_on {dependency}"
        if name == "airflow-init":
            assert spec["user"] == "0:0", "airflow-init needs root to chown the logs volume"
        else:
            assert spec["user"] == common["user"], name


def test_airflow_runs_local_executor_against_postgres_and_the_api_server(
    compose: dict, services: dict
) -> None:
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    db = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert db.scheme.startswith("postgresql") and db.hostname == "postgres"
    pg = services["postgres"]["environment"]
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )
    execution_api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert execution_api.hostname == "airflow-apiserver" and execution_api.port == 8080
    assert execution_api.path == "/execution/"
    assert "api-server" in json.dumps(services["airflow-apiserver"]["command"])
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"], "components must share one JWT secret"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert env["FRUITS_COMPUTE_MODE"] == "local"
    assert "airflow db migrate" in json.dumps(services["airflow-init"]["command"])


def test_bind_mounted_paths_exist_in_the_repo(services: dict) -> None:
    missing = []
    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            source, _, _ = split_volume(volume)
            if is_bind(source) and not (REPO_ROOT / source).exists():
                missing.append(f"{name}: {source}")
    assert not missing, f"bind-mounted paths missing from the repo: {missing}"


def test_named_volumes_are_declared(compose: dict, services: dict) -> None:
    declared = set(compose.get("volumes") or {})
    used = {
        split_volume(volume)[0]
        for spec in services.values()
        for volume in spec.get("volumes", [])
        if split_volume(volume)[0] and not is_bind(split_volume(volume)[0])
    }
    assert used, "expected named volumes (postgres data, minio data, airflow logs)"
    assert used <= declared, f"undeclared named volumes: {sorted(used - declared)}"


def test_code_and_data_are_mounted_read_only(compose: dict) -> None:
    mounts = {split_volume(v)[0]: split_volume(v) for v in compose["x-airflow-common"]["volumes"]}
    for source, target in CODE_AND_DATA_MOUNTS.items():
        assert source in mounts, f"x-airflow-common does not mount {source}"
        assert mounts[source][1:] == (target, True), f"{source} should be {target}:ro"
    assert "/opt/airflow/logs" in {split_volume(v)[1] for v in compose["x-airflow-common"]["volumes"]}


def test_minio_init_uploads_the_sample_to_the_bucket(services: dict, env_example: dict) -> None:
    init = services["minio-init"]
    mounts = {split_volume(v)[0]: split_volume(v)[1] for v in init["volumes"]}
    assert mounts.get("./data/sample") == "/sample"
    assert init["environment"]["FRUITS_BUCKET"] == env_example["FRUITS_BUCKET"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    images = [p for p in (REPO_ROOT / "data" / "sample").glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]
    assert images, "data/sample/ holds no <label>/<file>.jpg images for minio-init to upload"


def _run_minio_init(tmp_path: Path, sample_dir: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "mc-calls"
    fake_mc = bin_dir / "mc"
    fake_mc.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n')
    fake_mc.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "MINIO_ENDPOINT": "http://minio:9000",
        "MINIO_ROOT_USER": "user",
        "MINIO_ROOT_PASSWORD": "password",
        "FRUITS_BUCKET": "bucket",
        "SAMPLE_DIR": str(sample_dir),
    }
    done = subprocess.run(
        ["sh", str(REPO_ROOT / "docker" / "minio-init.sh")], env=env, capture_output=True, text=True
    )
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_minio_init_script_creates_bucket_and_mirrors_into_raw(tmp_path: Path) -> None:
    done, calls = _run_minio_init(tmp_path, REPO_ROOT / "data" / "sample")
    assert done.returncode == 0, done.stderr
    assert calls[0].startswith("alias set local http://minio:9000 user password")
    assert "mb --ignore-existing local/bucket" in calls
    mirror = next(call for call in calls if call.startswith("mirror "))
    assert mirror.endswith(f"{REPO_ROOT / 'data' / 'sample'} local/bucket/raw")


def test_minio_init_script_fails_clearly_without_images(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done, calls = _run_minio_init(tmp_path, empty)
    assert done.returncode != 0
    assert "no images under" in done.stderr
    assert calls == []


# --------------------------------------------------------------------------- ports, health, order


def test_host_ports_do_not_clash(services: dict) -> None:
    seen: dict[int, str] = {}
    for name, spec in services.items():
        for port in host_ports(spec):
            assert port not in seen, f"host port {port} published by {seen[port]} and {name}"
            seen[port] = name
    for name, expected in EXPECTED_HOST_PORTS.items():
        assert host_ports(services[name]) == expected, name
    assert host_ports(services["postgres"]) <= {5432}


def test_long_running_services_have_healthchecks(services: dict) -> None:
    for name, spec in services.items():
        if name in ONE_SHOT_SERVICES or spec.get("profiles"):
            continue
        check = spec.get("healthcheck") or {}
        assert not check.get("disable"), name
        test = check.get("test")
        assert test and (isinstance(test, str) or test[0] in {"CMD", "CMD-SHELL"}), f"{name}: no healthcheck"


def test_one_shot_services_do_not_restart(services: dict) -> None:
    for name in ONE_SHOT_SERVICES:
        assert services[name].get("restart", "no") == "no", name


def test_depends_on_targets_exist_with_usable_conditions(services: dict) -> None:
    graph: dict[str, set[str]] = {}
    for name, spec in services.items():
        depends = spec.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        graph[name] = set(depends)
        for target, options in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = options.get("condition", "service_started")
            assert condition in DEPENDS_ON_CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target} health, which has no check"
            if condition == "service_completed_successfully":
                assert target in ONE_SHOT_SERVICES, f"{name} waits for {target} to exit, but it runs forever"

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"depends_on cycle: {' -> '.join(path + (node,))}"
        for nxt in graph[node]:
            visit(nxt, path + (node,))

    for name in graph:
        visit(name, ())


# --------------------------------------------------------------------------- Dockerfile


def test_build_context_and_copied_files_exist(compose: dict, dockerfile_path: Path, instructions: list) -> None:
    context = REPO_ROOT / compose["x-airflow-common"]["build"]["context"]
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


def test_dockerfile_builds_on_the_airflow_image(instructions: list, requirements: str) -> None:
    args = dockerfile_args(instructions)
    base = next(rest for keyword, rest in instructions if keyword == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"apache/airflow:\d+\.\d+\.\d+-python3\.\d+", base), base
    assert base == f"apache/airflow:{args['AIRFLOW_VERSION']}-python{args['PYTHON_VERSION']}"
    airflow_pin = pinned_version(requirements, "apache-airflow")
    if airflow_pin is not None:
        assert airflow_pin == args["AIRFLOW_VERSION"], "requirements.txt and docker/Dockerfile pin different Airflow"


def _user_per_run(instructions: list) -> list[tuple[str, str]]:
    user, runs = "airflow", []
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
    assert "SPARK_CONF_DIR=" in envs


def test_dockerfile_installs_requirements_as_airflow_user(instructions: list) -> None:
    installs = [(user, cmd) for user, cmd in _user_per_run(instructions) if "-r /tmp/requirements.txt" in cmd]
    assert installs, "requirements.txt is never pip-installed"
    assert all(user == "airflow" for user, _ in installs)
    assert all('"apache-airflow==${AIRFLOW_VERSION}"' in cmd for _, cmd in installs)
    assert all("-c /tmp/constraints.txt" in cmd for _, cmd in installs), "install without constraints.txt"


def test_image_python_matches_the_resolved_constraints(instructions: list) -> None:
    header = (REPO_ROOT / "constraints.txt").read_text().splitlines()[0]
    python = re.search(r"Python (3\.\d+)", header)
    assert python, f"constraints.txt does not say which Python it was resolved for: {header!r}"
    assert dockerfile_args(instructions)["PYTHON_VERSION"] == python.group(1)


def test_hadoop_aws_matches_the_pinned_pyspark(instructions: list, requirements: str) -> None:
    pyspark = pinned_version(requirements, "pyspark")
    assert pyspark, "requirements.txt does not pin pyspark==X.Y.Z"
    minor = ".".join(pyspark.split(".")[:2])
    assert minor in PYSPARK_HADOOP, f"no known Hadoop version for pyspark {pyspark}: extend PYSPARK_HADOOP"
    hadoop, sdk = PYSPARK_HADOOP[minor]
    args = dockerfile_args(instructions)
    assert args["HADOOP_AWS_VERSION"] == hadoop
    assert args["AWS_JAVA_SDK_BUNDLE_VERSION"] == sdk
    runs = [cmd for _, cmd in _user_per_run(instructions)]
    fetch = next((i for i, cmd in enumerate(runs) if "hadoop-aws" in cmd), None)
    install = next(i for i, cmd in enumerate(runs) if "requirements.txt" in cmd)
    assert fetch is not None, "the Dockerfile never fetches hadoop-aws"
    assert fetch > install, "jars must be fetched after pip installed pyspark"
    for name, version_arg in (("hadoop-aws", "HADOOP_AWS_VERSION"), ("aws-java-sdk-bundle", "AWS_JAVA_SDK_BUNDLE_VERSION")):
        assert re.search(rf"{name}\s+\"\$\{{{version_arg}\}}\"", runs[fetch]), f"{name} not fetched with {version_arg}"


def test_hadoop_version_matches_installed_pyspark_jars(instructions: list, requirements: str) -> None:
    pyspark = pytest.importorskip("pyspark")
    if pyspark.__version__ != pinned_version(requirements, "pyspark"):
        pytest.skip(f"installed pyspark {pyspark.__version__} is not the pinned one")
    jars = Path(pyspark.__file__).parent / "jars"
    versions = {m.group(1) for p in jars.glob("hadoop-client-api-*.jar") if (m := re.search(r"api-(.+)\.jar$", p.name))}
    assert versions == {dockerfile_args(instructions)["HADOOP_AWS_VERSION"]}


# --------------------------------------------------------------------------- settings


def test_env_example_lists_every_compose_variable_with_the_same_default(
    compose_text: str, env_example: dict
) -> None:
    referenced = referenced_variables(compose_text)
    assert referenced - set(env_example) == set(), "variables missing from .env.example"
    assert set(env_example) - referenced == set(), ".env.example has settings compose never reads"
    for name, value in env_example.items():
        for match in re.finditer(rf"(?<!\$)\$\{{{name}(:-|-|\}})", compose_text):
            start = match.start()
            depth, end = 0, start
            while True:
                if compose_text.startswith("${", end):
                    depth, end = depth + 1, end + 2
                    continue
                if compose_text[end] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                end += 1
            default = interpolate(compose_text[start : end + 1], env={})
            assert default == value, f"{name}: compose default {default!r} != .env.example {value!r}"


def test_env_example_credentials_are_labelled_dev_only() -> None:
    text = ENV_EXAMPLE.read_text()
    for name in ("AIRFLOW_ADMIN_PASSWORD", "MINIO_ROOT_PASSWORD", "AIRFLOW_JWT_SECRET"):
        block = text.split(f"\n{name}=")[0].rsplit("\n\n", 1)[-1]
        assert "DEV ONLY" in block, f"{name} is not labelled DEV ONLY in .env.example"


@pytest.mark.parametrize("source", ["compose default", ".env.example"])
def test_aws_connection_points_at_minio_with_its_credentials(
    source: str, compose: dict, services: dict, env_example: dict
) -> None:
    connection_module = pytest.importorskip("airflow.models.connection")
    if source == "compose default":
        uri = compose["x-airflow-common"]["environment"]["AIRFLOW_CONN_AWS_DEFAULT"]
        minio_env = services["minio"]["environment"]
    else:
        uri = env_example["AIRFLOW_CONN_AWS_DEFAULT"]
        minio_env = env_example
    conn = connection_module.Connection(conn_id="aws_default", uri=uri)
    assert conn.conn_type == "aws"
    assert (conn.login, conn.password) == (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"])
    endpoint = urlsplit(conn.extra_dejson["endpoint_url"])
    assert endpoint.hostname == "minio"
    assert f"{endpoint.port}:{endpoint.port}" in " ".join(services["minio"]["ports"])
    assert conn.extra_dejson.get("region_name")


def test_spark_s3a_endpoint_comes_from_the_compose_environment(compose: dict, tmp_path: Path) -> None:
    """Starts local Spark with docker/spark-conf and reads the Hadoop settings it resolved."""
    pytest.importorskip("pyspark")
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.skip("no Java runtime for Spark")
    probe = textwrap.dedent(
        """
        import json
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.master("local[1]").appName("s3a-conf-probe").getOrCreate()
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        keys = ["fs.s3a.endpoint", "fs.s3a.path.style.access", "fs.s3a.connection.ssl.enabled", "fs.s3a.impl"]
        print("S3A=" + json.dumps({key: conf.get(key) for key in keys}))
        spark.stop()
        """
    )
    common_env = compose["x-airflow-common"]["environment"]

    def s3a_settings(extra_env: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FRUITS_S3A_", "SPARK_", "PYSPARK_"))}
        env.update(extra_env, SPARK_CONF_DIR=str(REPO_ROOT / "docker" / "spark-conf"))
        done = subprocess.run(
            [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        line = next(line for line in done.stdout.splitlines() if line.startswith("S3A="))
        return json.loads(line[4:])

    local = s3a_settings({k: v for k, v in common_env.items() if k.startswith("FRUITS_S3A_")})
    assert local == {
        "fs.s3a.endpoint": "http://minio:9000",
        "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
    }
    real_s3 = s3a_settings({})
    assert real_s3["fs.s3a.endpoint"] == "s3.amazonaws.com"
    assert real_s3["fs.s3a.path.style.access"] == "false"
    assert real_s3["fs.s3a.connection.ssl.enabled"] == "true"


# --------------------------------------------------------------------------- docker compose itself


def test_docker_compose_config_accepts_the_file(compose: dict, airflow_services: dict) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI (docker compose / docker-compose) installed")
    variables = referenced_variables(COMPOSE_FILE.read_text())
    env = {k: v for k, v in os.environ.items() if k not in variables and not k.startswith("COMPOSE_")}
    base = [*cli, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE)]
    check = subprocess.run([*base, "config", "-q"], env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    rendered = subprocess.run(
        [*base, "config", "--format", "json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert rendered.returncode == 0, rendered.stderr
    resolved = json.loads(rendered.stdout)["services"]
    assert REQUIRED_SERVICES <= set(resolved)
    for name in set(airflow_services) & set(resolved):
        assert resolved[name]["environment"] == {
            key: str(value) for key, value in airflow_services[name]["environment"].items()
        }, f"{name}: compose resolves a different environment than the YAML anchors say"
