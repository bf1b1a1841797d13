"""Stand-ins for the images docker-compose.yaml pulls, for a machine that reaches no image registry
(CI): PostgreSQL, the moto server, and the Python base of docker/Dockerfile, built from a
debootstrap'd Debian, Debian's packages and PyPI (Dockerfiles in standins/). The compose test
substitutes them through standins.compose.yaml.

Each image is tagged by a hash of what it is made of (its Dockerfile and files, its build args, its
base's tag), so a machine builds each once and a change to any input builds a new one: a run finds
them in the engine's image store, or builds them (a few minutes, cold).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.support import REPO_ROOT

from .docker_engine import Docker

STANDINS = Path(__file__).resolve().parent / "standins"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DEBIAN_SUITE = "bookworm"  # the Debian of python:3.11-slim-bookworm, and of this machine
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SOURCES = f"""deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main
deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main
deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main
"""
BUILD_TIMEOUT = 1800


class StandInError(RuntimeError):
    """A stand-in image could not be made; the message holds the end of the build's output."""


def file_mode(name: str) -> int:
    """The mode of a file in a stand-in's build context (COPY keeps it): scripts are executable."""
    return 0o755 if name.endswith(".sh") else 0o644


@dataclass
class StandIn:
    """One image: its Dockerfile in standins/, the other files of its context, its build args."""

    name: str
    dockerfile: str
    files: dict[str, bytes] = field(default_factory=dict)  # context path -> content
    args: dict[str, str] = field(default_factory=dict)

    def tag(self, identity: str = "") -> str:
        digest = hashlib.sha256((STANDINS / self.dockerfile).read_bytes())
        for name, content in sorted(self.files.items()):
            digest.update(f"{name}\0{file_mode(name):o}\0".encode() + content)
        for name, value in sorted(self.args.items()):
            digest.update(f"{name}={value}".encode() + b"\0")
        digest.update(identity.encode())
        return f"fruits-standin/{self.name}:{digest.hexdigest()[:16]}"


def compose_image(service: str) -> str:
    """The image docker-compose.yaml pins for a service (name:tag@sha256:...)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"][service]["image"]


def image_version(image: str) -> str:
    """The tag of name:tag@digest."""
    return re.fullmatch(r"[^:@]+:([^@]+)@sha256:[0-9a-f]{64}", image).group(1)


def pip_ca_bundle() -> bytes:
    """The CA bundle pip is configured with here (`pip config list`: global.cert, PIP_CERT), which
    the containers need to reach PyPI and Maven Central; else certifi's."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            timeout=60).stdout
    for line in listed.splitlines():
        match = re.match(r"[^=]*\.cert='?([^']+)'?$", line.strip())
        if match and Path(match.group(1)).is_file():
            return Path(match.group(1)).read_bytes()
    import certifi

    return Path(certifi.where()).read_bytes()


def python_tree(work: Path) -> Path:
    """The CPython running the tests as the stand-in installs it in /usr/local: interpreter, shared
    library, headers and standard library, without site-packages, tests, IDLE or tkinter."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    tree = work / "python"
    (tree / "bin").mkdir(parents=True)
    shutil.copy2(base / "bin" / version, tree / "bin" / version)
    (tree / "lib").mkdir()
    for library in base.glob(f"lib/lib{version}*.so*"):
        shutil.copy2(library, tree / "lib" / library.name, follow_symlinks=False)
    if (base / "include").is_dir():
        shutil.copytree(base / "include", tree / "include", symlinks=True)
    skipped = {"site-packages", "test", "idlelib", "tkinter", "turtledemo"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in skipped or n.endswith(".a")} if Path(folder).is_relative_to(base / "lib") else set()

    shutil.copytree(base / "lib" / version, tree / "lib" / version, symlinks=True, ignore=ignore)
    (tree / "lib" / version / "site-packages").mkdir(exist_ok=True)
    return tree


def python_identity() -> str:
    """What the Python stand-in's interpreter is: version, build and the bytes of its library."""
    base = Path(sys.base_prefix)
    digest = hashlib.sha256(sys.version.encode())
    for path in sorted(base.glob("lib/libpython*.so*")) + [base / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"]:
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _build(docker: Docker, standin: StandIn, tag: str, log: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=f"fruits-standin-{standin.name}-") as work:
        context = Path(work)
        shutil.copy(STANDINS / standin.dockerfile, context / "Dockerfile")
        for name, content in standin.files.items():
            (context / name).write_bytes(content)
            (context / name).chmod(file_mode(name))
        if standin.name == "python":
            python_tree(context)
        args = [arg for name, value in standin.args.items() for arg in ("--build-arg", f"{name}={value}")]
        done = docker.run("buildx", "build", "--progress=plain", *args, "-t", tag, str(context), check=False,
                          timeout=BUILD_TIMEOUT)
        log.write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise StandInError(f"building {tag} failed:\n{(done.stdout + done.stderr)[-4000:]}")


def debian_base(docker: Docker, work: Path) -> str:
    """A minimal Debian (debootstrap --variant=minbase) imported as an image, with the suite's
    updates and security sources, as Debian's official images have them."""
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"], capture_output=True, text=True).stdout
    digest = hashlib.sha256(f"{DEBIAN_SUITE}\0minbase\0{DEBIAN_MIRROR}\0{DEBIAN_SOURCES}\0{version}".encode())
    tag = f"fruits-standin/debian:{DEBIAN_SUITE}-{digest.hexdigest()[:16]}"
    if docker.has_image(tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise StandInError("debootstrap not found: apt-get install debootstrap (scripts/system-packages.sh does)")
    root = work / "rootfs"
    done = subprocess.run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(root), DEBIAN_MIRROR],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if done.returncode != 0:
        raise StandInError(f"debootstrap {DEBIAN_SUITE} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    (root / "etc/apt/sources.list").write_text(DEBIAN_SOURCES)
    for leftover in [*(root / "var/lib/apt/lists").glob("*_*"), *(root / "var/cache/apt/archives").glob("*.deb")]:
        leftover.unlink()
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(["docker", "import", "-c", 'CMD ["bash"]', "-", tag], stdin=tar.stdout, env=docker.env,
                              capture_output=True, text=True, timeout=600)
    tar.stdout.close()
    tar.wait()
    if imported.returncode != 0 or tar.returncode != 0:
        raise StandInError(f"docker import of the Debian base failed:\n{imported.stderr[-2000:]}")
    shutil.rmtree(root, ignore_errors=True)
    return tag


def standin_images(docker: Docker, logs: Path) -> dict[str, str]:
    """The stand-ins' tags as standins.compose.yaml reads them (FRUITS_STANDIN_*), each built
    unless the engine has it already."""
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fruits-debian-", dir="/var/tmp") as work:
        debian = debian_base(docker, Path(work))
    postgres_major = image_version(compose_image("postgres")).split(".")[0]
    python = StandIn("python", "python.Dockerfile", {"ca-bundle.pem": pip_ca_bundle()}, args={"DEBIAN_BASE": debian})
    postgres = StandIn("postgres", "postgres.Dockerfile",
                       {"postgres-entrypoint.sh": (STANDINS / "postgres-entrypoint.sh").read_bytes()},
                       args={"DEBIAN_BASE": debian, "PG_MAJOR": postgres_major})
    python_tag = python.tag(python_identity())
    moto = StandIn("moto", "moto.Dockerfile",
                   args={"PYTHON_BASE": python_tag, "MOTO_VERSION": image_version(compose_image("s3"))})
    tags = {python.name: python_tag, postgres.name: postgres.tag(), moto.name: moto.tag()}

    def ensure(*chain: StandIn) -> None:
        for standin in chain:
            if not docker.has_image(tags[standin.name]):
                _build(docker, standin, tags[standin.name], logs / f"{standin.name}.log")

    with ThreadPoolExecutor(2) as pool:  # Postgres beside the Python chain: both mostly wait on downloads
        for future in [pool.submit(ensure, postgres), pool.submit(ensure, python, moto)]:
            future.result()
    return {f"FRUITS_STANDIN_{name.upper()}": tag for name, tag in tags.items()}
