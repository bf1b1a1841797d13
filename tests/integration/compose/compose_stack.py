"""The compose stack of the compose test (test_stack_run.py): docker-compose.yaml with the stand-ins'
override, as project `fruits-compose-test` on free host ports, driven with `docker compose` and
the Makefile's targets; `down -v` when the `with` block ends, whatever happened.

The environment is the documented one: `.env.example` as the env file, none of the caller's
settings the compose file reads (AWS_*, FRUITS_*, AIRFLOW_*), and AIRFLOW_UID a uid the image does
not know, as for a Linux user who set AIRFLOW_UID=$(id -u).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import REPO_ROOT
from tests.support.moto import free_port

from ..ui.stack import AirflowApi
from .compose_file import COMPOSE_FILE, ENV_EXAMPLE, referenced_variables
from .docker_engine import Docker

PROJECT = "fruits-compose-test"
OVERRIDE = Path(__file__).resolve().parent / "standins.compose.yaml"
AIRFLOW_UID = "4242"
IMAGE = "fruits-airflow:compose-test"


@dataclass
class ComposeStack:
    """How to run compose and make on the stack, where its API and S3 server answer."""

    docker: Docker
    env: dict[str, str]
    api_port: int
    s3_port: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def compose_command(self) -> list[str]:
        return ["docker", "compose", "-p", PROJECT, "--project-directory", str(REPO_ROOT), "--env-file",
                str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE)]

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        self.docker.plugin_ready("compose")
        done = subprocess.run([*self.compose_command, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO_ROOT)
        if check and done.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}\n{self.diagnostics()}")
        return done

    def make(self, target: str, *variables: str, timeout: float = 3600) -> subprocess.CompletedProcess:
        """`make <target>` as the README says, with COMPOSE naming this project and its override."""
        self.docker.plugin_ready("compose")
        compose = " ".join(self.compose_command)
        done = subprocess.run(["make", "--no-print-directory", target, f"COMPOSE={compose}", *variables],
                              env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
        if done.returncode != 0:
            raise AssertionError(f"make {target} exited {done.returncode}:\n{done.stdout[-4000:]}\n"
                                 f"{done.stderr[-4000:]}\n{self.diagnostics()}")
        return done

    def timed(self, name: str, action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """action(*args, **kwargs), its wall time recorded under name (also when it fails)."""
        start = time.monotonic()
        try:
            return action(*args, **kwargs)
        finally:
            self.timings[name] = round(time.monotonic() - start, 1)

    def services(self) -> dict[str, dict]:
        """`docker compose ps --all` per service: State, Health, ExitCode."""
        listed = self.compose("ps", "--all", "--format", "json").stdout.strip()
        rows = json.loads(listed) if listed.startswith("[") else [json.loads(line) for line in listed.splitlines()]
        return {row["Service"]: row for row in rows}

    def diagnostics(self) -> str:
        """Each container's state and the end of its log, for a failure message."""
        try:
            ps = self.compose("ps", "--all", check=False, timeout=60).stdout
            logs = self.compose("logs", "--no-color", "--tail", "40", check=False, timeout=120).stdout
        except subprocess.TimeoutExpired:
            return "(docker compose ps/logs timed out)"
        return f"--- docker compose ps\n{ps}\n--- docker compose logs (last 40 lines each)\n{logs[-12000:]}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def api(self) -> AirflowApi:
        return AirflowApi(self.url, "admin", "admin-dev-only")

    def s3(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.s3_port}", region_name="us-east-1",
                            aws_access_key_id="fruits-dev", aws_secret_access_key="fruits-dev-secret")


def compose_variables() -> set[str]:
    """Every variable the compose file and the override read."""
    return referenced_variables(COMPOSE_FILE.read_text() + OVERRIDE.read_text())


@contextmanager
def compose_stack(docker: Docker, standins: dict[str, str], timings: dict[str, float]) -> Iterator[ComposeStack]:
    """The stack's settings and its teardown: `down -v` (containers, network, volumes) at the end.
    timings: where stack.timed() records."""
    env = {k: v for k, v in docker.env.items() if k not in compose_variables() and not k.startswith("COMPOSE_")}
    api_port, s3_port = free_port(), free_port()
    env.update(standins)
    env.update({"AIRFLOW_API_PORT": str(api_port), "FRUITS_S3_PORT": str(s3_port), "AIRFLOW_UID": AIRFLOW_UID,
                "AIRFLOW_IMAGE_NAME": IMAGE, "COMPOSE_PROGRESS": "plain"})
    stack = ComposeStack(docker, env, api_port, s3_port, timings)
    stack.compose("down", "--volumes", "--remove-orphans", check=False)  # what a killed earlier run left
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False, timeout=300)
