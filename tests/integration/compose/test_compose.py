"""Static checks of the local docker compose stack: docker-compose.yaml and .env.example (the image's
Dockerfile: test_dockerfile.py).

No Docker engine is needed (helpers in compose_file.py, fixtures in conftest.py); one test lets
the pinned Compose (docker_engine.COMPOSE, built from source once) validate the file with `config`.
The stack itself runs in test_stack_run.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit

import pytest

from tests.support import REPO_ROOT

from .compose_file import (
    COMPOSE_FILE,
    ENTRYPOINT,
    ENV_EXAMPLE,
    PINNED_IMAGE,
    host_ports,
    interpolate,
    is_bind,
    referenced_variables,
    split_volume,
)

REQUIRED_SERVICES = {
    "postgres",
    "s3",
    "s3-init",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
ONE_SHOT_SERVICES = {"airflow-init", "s3-init"}
# Where the Airflow containers see the repository (read-only): the code, the weights, emr/, data/.
REPO_MOUNT = "/opt/fruits"
EXPECTED_HOST_PORTS = {"airflow-apiserver": {8080}, "s3": {9000}}
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# Repositories that no longer serve images: MinIO removed minio/minio and minio/mc from Docker
# Hub (Sept 2026) and made quay.io/minio private; Bitnami's free images left Docker Hub (2025).
GONE_REPOSITORIES = ("minio/minio", "minio/mc", "docker.io/minio/", "quay.io/minio/", "bitnami/", "docker.io/bitnami/")


# --------------------------------------------------------------------------- structure


def test_compose_file_parses_into_services(compose: dict) -> None:
    assert isinstance(compose.get("services"), dict) and compose["services"]
    assert isinstance(compose.get("x-airflow-common"), dict)


def test_required_services_exist(services: dict) -> None:
    assert REQUIRED_SERVICES <= set(services), f"missing: {sorted(REQUIRED_SERVICES - set(services))}"


def test_airflow_services_share_the_common_block(compose: dict, airflow_services: dict) -> None:
    common = compose["x-airflow-common"]
    assert {"image", "environment", "volumes", "user", "depends_on"} <= set(common)
    assert "build" not in common, "a build: per service builds and exports the same image once each"
    assert len(airflow_services) >= 5
    for name, spec in airflow_services.items():
        assert spec.get("image") == common["image"], name
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
    assert services["airflow-init"]["command"] == "init"
    init = ENTRYPOINT.read_text().split("\ninit() {", 1)[1].split("\n}\n", 1)[0]
    assert "check_resources" in init and "airflow db migrate" in init


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
    assert used, "expected named volumes (postgres data, airflow logs)"
    assert used <= declared, f"undeclared named volumes: {sorted(used - declared)}"


def test_the_repository_is_mounted_read_only_and_is_the_code(compose: dict, services: dict) -> None:
    """One mount, the checkout: every top-level package (pyproject's, and any added later), the
    DAG and plugin folders, the weights and emr/ are the host's, with no list to keep in step."""
    volumes = [split_volume(v) for v in compose["x-airflow-common"]["volumes"]]
    binds = [(source, target, read_only) for source, target, read_only in volumes if is_bind(source)]
    assert binds == [(".", REPO_MOUNT, True)], "the Airflow containers mount the repository root, read-only, only"
    assert "/opt/airflow/logs" in {target for _, target, _ in volumes}
    env = compose["x-airflow-common"]["environment"]
    assert (env["FRUITS_REPO_ROOT"], env["PYTHONPATH"]) == (REPO_MOUNT, REPO_MOUNT)
    assert (env["AIRFLOW__CORE__DAGS_FOLDER"], env["AIRFLOW__CORE__PLUGINS_FOLDER"]) == (
        f"{REPO_MOUNT}/dags", f"{REPO_MOUNT}/plugins")
    weights = REPO_ROOT / env["FRUITS_WEIGHTS"]
    assert weights.is_file(), f"FRUITS_WEIGHTS {env['FRUITS_WEIGHTS']} is not in the repository"
    for name, spec in services.items():  # no host path outside the repository
        for source, _, _ in (split_volume(v) for v in spec.get("volumes", [])):
            if is_bind(source):
                assert (REPO_ROOT / source).resolve().is_relative_to(REPO_ROOT), f"{name}: {source}"


def test_s3_init_uploads_the_sample_to_the_bucket(services: dict, env_example: dict) -> None:
    init = services["s3-init"]
    mounts = {split_volume(v)[0]: split_volume(v)[1] for v in init["volumes"]}
    assert mounts.get("./data/sample") == init["environment"]["SAMPLE_DIR"]
    assert mounts.get("./docker/s3_init.py") == init["entrypoint"][-1]
    assert mounts.get("./iam/s3-notification.json") == init["environment"]["NOTIFICATION_FILE"]
    assert init["environment"]["FRUITS_BUCKET"] == env_example["FRUITS_BUCKET"]
    assert init["environment"]["FRUITS_S3_ENDPOINT"] == "http://s3:5000"
    assert init["depends_on"]["s3"]["condition"] == "service_healthy"
    images = [p for p in (REPO_ROOT / "data" / "sample").glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]
    assert images, "data/sample/ holds no <label>/<file>.jpg images for s3-init to upload"


def _run_s3_init(endpoint: str, sample_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FRUITS_S3_ENDPOINT": endpoint, "FRUITS_BUCKET": "bucket", "SAMPLE_DIR": str(sample_dir),
           "AWS_ACCESS_KEY_ID": "dev", "AWS_SECRET_ACCESS_KEY": "dev", "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "docker" / "s3_init.py")], env=env,
                          capture_output=True, text=True, timeout=300)


def test_s3_init_script_creates_the_bucket_and_uploads_into_raw_twice(tmp_path: Path) -> None:
    """Against a real moto server, as the compose stack runs it; a second run changes nothing."""
    boto3 = pytest.importorskip("boto3")
    from tests.support.moto import running_moto_server

    sample = tmp_path / "sample"
    (sample / "apple").mkdir(parents=True)
    (sample / "apple" / "a b.jpg").write_bytes(b"jpeg bytes")
    (sample / "NOTICE.md").write_text("not uploaded")
    with running_moto_server() as endpoint:
        for _ in range(2):
            done = _run_s3_init(endpoint, sample)
            assert done.returncode == 0, done.stderr
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="dev", aws_secret_access_key="dev")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="bucket")["Contents"]] == ["raw/apple/a b.jpg"]
        # uploads to raw/ after the first run notify the queue of event-driven runs (the second run's
        # re-upload of the sample too: those runs find the image processed already)
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="dev", aws_secret_access_key="dev")
        queue_url = sqs.get_queue_url(QueueName="fruits-raw-images")["QueueUrl"]
        s3.put_object(Bucket="bucket", Key="raw/lemon/new.jpg", Body=b"jpeg bytes")
        s3.put_object(Bucket="bucket", Key="features/x.json", Body=b"{}")
        bodies = [json.loads(m["Body"]) for m in sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])]
        keys = [unquote_plus(r["s3"]["object"]["key"]) for b in bodies for r in b.get("Records", [])]
        assert sorted(keys) == ["raw/apple/a b.jpg", "raw/lemon/new.jpg"]
    assert "uploaded 1 sample images to s3://bucket/raw/" in done.stdout


def test_s3_init_script_fails_clearly_without_images(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _run_s3_init("http://127.0.0.1:9", empty)
    assert done.returncode == 1
    assert "no images under" in done.stderr


def test_every_image_is_pinned_by_tag_and_digest_and_served(services: dict) -> None:
    """Pulled images carry tag@sha256 (a moved tag cannot change them) and come from no
    repository known to be gone; the Airflow image is built here (docker/Dockerfile)."""
    built = {spec["image"] for spec in services.values() if "build" in spec}
    pulled = {name: spec["image"] for name, spec in services.items() if spec["image"] not in built}
    assert pulled, "no pulled images found"
    for name, image in pulled.items():
        assert PINNED_IMAGE.match(image), f"{name}: {image} is not pinned as name:tag@sha256:<digest>"
        assert not image.startswith(GONE_REPOSITORIES), f"{name}: {image} comes from a repository that is gone"
    assert all(image.split(":")[0] == "fruits-airflow" or "${" in image for image in built), built


def test_gone_repositories_are_refused(services: dict) -> None:
    """The check above fails on the images this stack used before (and on unpinned ones)."""
    for image in ("minio/minio:RELEASE.2025-09-07T16-13-09Z", "quay.io/minio/mc:RELEASE.2024-11-21T17-21-54Z"):
        assert image.startswith(GONE_REPOSITORIES)
    assert not PINNED_IMAGE.match("postgres:16") and not PINNED_IMAGE.match("motoserver/moto@sha256:" + "0" * 64)


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
    for name in ("AIRFLOW_ADMIN_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AIRFLOW_JWT_SECRET"):
        block = text.split(f"\n{name}=")[0].rsplit("\n\n", 1)[-1]
        assert "DEV ONLY" in block, f"{name} is not labelled DEV ONLY in .env.example"


@pytest.mark.parametrize("source", ["compose default", ".env.example"])
def test_aws_connection_and_spark_point_at_the_s3_service(
    source: str, compose: dict, services: dict, env_example: dict
) -> None:
    """boto3 (the DAG's connection) and Spark (S3A, local_spark/s3a.py) use the same server and keys."""
    connection_module = pytest.importorskip("airflow.models.connection")
    from local_spark.s3a import s3a_conf

    env = compose["x-airflow-common"]["environment"] if source == "compose default" else env_example
    env = {name: interpolate(str(value), {}) for name, value in env.items()}
    conn = connection_module.Connection(conn_id="aws_default", uri=env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert conn.conn_type == "aws"
    assert (conn.login, conn.password) == (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    endpoint = urlsplit(conn.extra_dejson["endpoint_url"])
    assert endpoint.hostname == "s3" and endpoint.port == 5000
    assert f":{endpoint.port}" in " ".join(services["s3"]["ports"])
    assert conn.extra_dejson.get("region_name") == env["AWS_DEFAULT_REGION"]
    spark = s3a_conf(env)
    assert spark["spark.hadoop.fs.s3a.endpoint"] == conn.extra_dejson["endpoint_url"]
    assert spark["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert (spark["spark.hadoop.fs.s3a.path.style.access"], spark["spark.hadoop.fs.s3a.connection.ssl.enabled"]) == (
        "true", "false")


# --------------------------------------------------------------------------- docker compose itself


def test_docker_compose_config_accepts_the_file(compose: dict, airflow_services: dict) -> None:
    """The pinned Compose (standalone, no engine needed) accepts the file and the stand-ins' override,
    and resolves the environment the YAML anchors say."""
    from .docker_engine import COMPOSE, DockerUnavailable, cli_plugin

    try:
        cli = [str(cli_plugin(COMPOSE))]
    except DockerUnavailable as error:
        if os.geteuid() == 0 and Path("/etc/debian_version").is_file():
            raise
        pytest.skip(str(error))
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
    # the compose test's override (the only place the stand-ins enter) merges into the same stack
    override = Path(__file__).resolve().parent / "standins.compose.yaml"
    standins = {"FRUITS_STANDIN_PYTHON": "standin/python:x", "FRUITS_STANDIN_POSTGRES": "standin/postgres:x",
                "FRUITS_STANDIN_MOTO": "standin/moto:x"}
    merged = subprocess.run([*base, "-f", str(override), "config", "--format", "json"], env={**env, **standins},
                            capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr
    merged_services = json.loads(merged.stdout)["services"]
    assert merged_services["airflow-init"]["build"]["args"] == {"PYTHON_IMAGE": "standin/python:x"}
    assert merged_services["airflow-init"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert {name: merged_services[name]["image"] for name in ("postgres", "s3", "s3-init")} == {
        "postgres": "standin/postgres:x", "s3": "standin/moto:x", "s3-init": "standin/moto:x"}
    assert {k: v for k, v in merged_services.items() if k not in ("postgres", "s3", "s3-init", "airflow-init")} == {
        k: v for k, v in resolved.items() if k not in ("postgres", "s3", "s3-init", "airflow-init")}
