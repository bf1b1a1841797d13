"""A Docker Engine with a pinned Compose and buildx, for the compose test (test_stack_run.py).

- The engine: the one answering already (DOCKER_HOST, or /var/run/docker.sock), else, as root,
  Debian's `dockerd` (package docker.io, installed by scripts/system-packages.sh) started as a child
  of the test and stopped when it ends. Its data root stays /var/lib/docker, so built images and
  the BuildKit cache serve the next run.
- `docker compose` v5.6.0 and `docker buildx` v0.38.2, built once from their Go modules' source
  (the Go module proxy; `go install` refuses compose's go.mod, which has exclude directives) into
  ~/.cache/fruits/docker-cli-plugins/, then linked into a DOCKER_CONFIG folder of the test's own.
  With buildx, Compose builds with BuildKit, which honours docker/Dockerfile.dockerignore; without
  it Compose falls back to the classic builder, which sends the whole repository (.venv included)
  as the build context.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fruits" / "docker-cli-plugins"
ENGINE_START_TIMEOUT = 120  # seconds for a dockerd started here to answer


@dataclass(frozen=True)
class GoTool:
    """A Docker CLI plugin built from its Go module at a pinned version."""

    module: str
    version: str
    package: str  # the main package inside the module
    binary: str  # the plugin's file name (docker-<command>)
    ldflags: str  # as the project's own release build sets them (the version is read back by Compose)

    @property
    def path(self) -> Path:
        return CACHE / f"{self.binary}-{self.version}"


COMPOSE = GoTool("github.com/docker/compose/v5", "v5.6.0", "./cmd", "docker-compose",
                 "-w -X github.com/docker/compose/v5/internal.Version=v5.6.0")
BUILDX = GoTool("github.com/docker/buildx", "v0.38.2", "./cmd/buildx", "docker-buildx",
                "-s -w -X github.com/docker/buildx/version.Version=v0.38.2"
                " -X github.com/docker/buildx/version.Package=github.com/docker/buildx")


class DockerUnavailable(RuntimeError):
    """No Docker Engine could be used or started here; the message says what is missing."""


@dataclass
class Docker:
    """A Docker Engine that answers, and the environment under which `docker compose` and
    `docker buildx` are the pinned plugins. The plugins may still be building (cold: minutes of
    Go, while the test makes its Debian base): run() waits for the one it calls."""

    env: dict[str, str]
    server_version: str
    plugins: dict[str, Future] = field(default_factory=dict)  # "compose", "buildx" -> its build

    def plugin_ready(self, name: str) -> None:
        """Wait for the plugin's build; its failure (DockerUnavailable) is raised here."""
        if name in self.plugins:
            self.plugins[name].result()

    def run(self, *args: str, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        self.plugin_ready(args[0])
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              **kwargs)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                               f"{done.stderr[-3000:]}")
        return done

    def has_image(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False, timeout=60).returncode == 0


def go_binary() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if not found:
        raise DockerUnavailable("Go not found: Docker Compose and buildx are built from their Go modules here"
                                " (install Go 1.26, or put a `docker compose` v2+ with buildx on the machine).")
    return found


def cli_plugin(tool: GoTool) -> Path:
    """The plugin's binary, built from `go mod download`'s copy of the module unless already cached
    (one build at a time: two tests asking at once wait for one build)."""
    if tool.path.is_file():
        return tool.path
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{tool.binary}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tool.path.is_file():
            _build_plugin(tool)
    return tool.path


def _build_plugin(tool: GoTool) -> None:
    """go mod download, then go build in a writable copy (the module cache is read-only)."""
    go = go_binary()
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    download = subprocess.run([go, "mod", "download", "-json", f"{tool.module}@{tool.version}"], env=env,
                              capture_output=True, text=True, timeout=900)
    if download.returncode != 0:
        raise DockerUnavailable(f"go mod download {tool.module}@{tool.version} failed:\n{download.stdout[-2000:]}"
                                f"{download.stderr[-2000:]}")
    source = Path(json.loads(download.stdout)["Dir"])
    with tempfile.TemporaryDirectory(prefix=f"{tool.binary}-", dir=CACHE) as work:
        tree = Path(work) / "src"
        shutil.copytree(source, tree)
        for folder, _, files in os.walk(tree):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(Path(folder) / name, 0o644)
        target = Path(work) / tool.binary
        build = subprocess.run([go, "build", "-trimpath", "-ldflags", tool.ldflags, "-o", str(target), tool.package],
                               cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
        if build.returncode != 0:
            raise DockerUnavailable(f"go build of {tool.module}@{tool.version} failed:\n{build.stderr[-3000:]}")
        target.replace(tool.path)


def _docker_config(folder: Path) -> dict[str, str]:
    """The environment of the docker CLI with the pinned plugins in folder/cli-plugins (links to
    the cache, whose files may not be built yet)."""
    plugins = folder / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    for tool in (COMPOSE, BUILDX):
        (plugins / tool.binary).symlink_to(tool.path)
    return {**os.environ, "DOCKER_CONFIG": str(folder), "DOCKER_CLI_HINTS": "false", "COMPOSE_PROGRESS": "plain"}


def _server_version(env: dict[str, str]) -> str | None:
    try:
        done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


@contextmanager
def _dockerd(log: Path) -> Iterator[subprocess.Popen]:
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).is_file():
        raise DockerUnavailable("dockerd not found: apt-get install docker.io (scripts/system-packages.sh does, as root)")
    with open(log, "ab") as handle:
        process = subprocess.Popen([dockerd], stdout=handle, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:  # dockerd stops its containers on SIGTERM
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


@contextmanager
def docker_engine() -> Iterator[Docker]:
    """The engine and CLI environment of the compose test; a dockerd started here stops afterwards.
    The plugins build in the background, buildx first (the stand-in images need it), then Compose."""
    if shutil.which("docker") is None:
        raise DockerUnavailable("the docker CLI is not installed: apt-get install docker.io"
                                " (scripts/system-packages.sh does, as root)")
    with tempfile.TemporaryDirectory(prefix="fruits-docker-") as work, ThreadPoolExecutor(1) as builder:
        env = _docker_config(Path(work) / "config")
        version = _server_version(env)
        if version is None and os.geteuid() != 0:
            raise DockerUnavailable("no Docker Engine answers and only root may start dockerd here")
        go_binary()  # fail now, not after starting dockerd
        plugins = {"buildx": builder.submit(cli_plugin, BUILDX), "compose": builder.submit(cli_plugin, COMPOSE)}
        try:
            if version is not None:
                yield Docker(env, version, plugins)
                return
            log = Path(work) / "dockerd.log"
            with _dockerd(log) as process:
                deadline = time.monotonic() + ENGINE_START_TIMEOUT
                while (version := _server_version(env)) is None:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise DockerUnavailable(f"dockerd did not start:\n{log.read_text(errors='replace')[-3000:]}")
                    time.sleep(1)
                yield Docker(env, version, plugins)
        finally:
            for future in plugins.values():
                future.cancel()  # a build under way finishes (and is cached for the next run)
