"""Fixtures of the static checks: the compose file as Compose reads it, its services, the image's
build and Dockerfile, .env.example and requirements.txt."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support import REPO_ROOT

from .compose_file import COMPOSE_FILE, ENV_EXAMPLE, REQUIREMENTS, dockerfile_instructions, read_env_file, resolve


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
def image_build(services: dict) -> dict:
    """The one `build:` of the Airflow image (airflow-init's)."""
    builds = {name: spec["build"] for name, spec in services.items() if "build" in spec}
    assert list(builds) == ["airflow-init"], f"one service builds the image, airflow-init: {sorted(builds)}"
    return builds["airflow-init"]


@pytest.fixture(scope="module")
def dockerfile_path(image_build: dict) -> Path:
    return REPO_ROOT / image_build["context"] / image_build["dockerfile"]


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
