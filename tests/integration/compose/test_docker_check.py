"""What a user on a laptop meets before the stack runs: `make up`'s check (scripts/docker_check.sh)
and airflow-init's (docker/entrypoint.sh `init`), each one clear line when Docker is missing, does
not answer, lacks Compose v2 or has too little memory. The checks run here against a fake `docker`
on PATH (a shell script answering as the real CLI does); the real engine's case is the compose test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

CHECK = REPO_ROOT / "scripts" / "docker_check.sh"
ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
GIB = 1024**3


def _path_with(tmp_path: Path, docker: str | None) -> str:
    """A PATH holding only the tools the check uses, and a fake docker whose body is `docker`."""
    folder = tmp_path / "bin"
    folder.mkdir(parents=True)
    for tool in ("dirname", "sed", "cat"):
        (folder / tool).symlink_to(shutil.which(tool))
    if docker is not None:
        (folder / "docker").write_text(f"#!/bin/bash\n{docker}\n")
        (folder / "docker").chmod(0o755)
    return str(folder)


def _check(tmp_path: Path, docker: str | None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("bash"), str(CHECK), "docker compose"], capture_output=True, text=True,
                          env={"PATH": _path_with(tmp_path, docker), **env}, timeout=60)


def _fake_docker(memory: int, compose_ok: bool = True) -> str:
    return f"""case "$1" in
  info) echo "{memory} 2" ;;
  compose) exit {0 if compose_ok else 1} ;;
  *) exit 2 ;;
esac"""


def stack_memory_floor() -> int:
    text = (REPO_ROOT / "docker-compose.yaml").read_text()
    return int(re.search(r"FRUITS_STACK_MIN_MEMORY_GB:-(\d+)\}", text).group(1))


def test_without_docker_make_up_says_so(tmp_path):
    done = _check(tmp_path, None)
    assert done.returncode == 1
    assert done.stderr.startswith("error: docker not found"), done.stderr


def test_a_daemon_that_does_not_answer_is_named(tmp_path):
    done = _check(tmp_path, 'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1')
    assert done.returncode == 1
    assert "the Docker daemon does not answer" in done.stderr and "Cannot connect" in done.stderr


def test_compose_v2_is_required(tmp_path):
    done = _check(tmp_path, _fake_docker(16 * GIB, compose_ok=False))
    assert done.returncode == 1
    assert "'docker compose version' failed" in done.stderr


def test_too_little_memory_stops_make_up_with_the_stacks_floor(tmp_path):
    floor = stack_memory_floor()
    done = _check(tmp_path, _fake_docker(2 * GIB))
    assert done.returncode == 1
    assert f"Docker has 2048 MiB of memory; the stack needs at least {floor} GiB" in done.stderr
    assert _check(tmp_path / "again", _fake_docker(floor * GIB)).returncode == 0


def test_enough_memory_passes_with_a_summary(tmp_path):
    done = _check(tmp_path, _fake_docker(16 * GIB))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"docker: 16 GiB of memory, 2 CPUs (the stack needs {stack_memory_floor()} GiB)"


def _entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "FRUITS_"))}
    return subprocess.run(["bash", str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=120,
                          env={**clean, "PATH": path, **env})


def test_airflow_init_refuses_a_machine_with_less_memory_than_the_stack_needs():
    """Before any migration: the memory this machine (or its cgroup) has is below a floor of 100 TiB."""
    done = _entrypoint("init", FRUITS_STACK_MIN_MEMORY_GB="102400", AIRFLOW_HOME="/nonexistent")
    assert done.returncode == 1
    assert re.search(r"airflow-init: Docker gives this stack \d+ MiB of memory; it needs at least 102400 GiB",
                     done.stderr), done.stderr
    assert "Performing upgrade" not in done.stdout + done.stderr


def test_the_entrypoint_writes_the_ui_login_and_runs_programs_as_given(tmp_path):
    passwords = tmp_path / "passwords.json"
    done = _entrypoint("echo", "ran", AIRFLOW_ADMIN_USERNAME="admin", AIRFLOW_ADMIN_PASSWORD="s3cret pass",
                       AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ran"
    assert json.loads(passwords.read_text()) == {"admin": "s3cret pass"}


@pytest.mark.parametrize("command", ["scheduler", "api-server"])
def test_other_commands_are_airflow_subcommands(tmp_path, command):
    """`command: scheduler` in compose runs `airflow scheduler`: here a stand-in `airflow` on PATH
    prints what it was given."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "airflow").write_text('#!/bin/bash\necho "airflow $*"\n')
    (folder / "airflow").chmod(0o755)
    done = _entrypoint(command, "--flag", PATH=os.pathsep.join([str(folder), os.environ["PATH"]]))
    assert (done.returncode, done.stdout.strip()) == (0, f"airflow {command} --flag"), done.stderr
