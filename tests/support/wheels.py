"""Real, tiny wheels for the tests of the node wheelhouse (staging, pip --no-index --require-hashes installs).

The real node wheelhouse is ~150 MB from PyPI (bench/bootstrap_install.py builds and measures
it); tests stage a wheelhouse of one small pure-Python wheel built here, offline.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path

PROBE = "fruits_probe"
PROBE_VERSION = "1.0"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(directory: Path, name: str = PROBE, version: str = PROBE_VERSION, payload: str = "") -> Path:
    """A valid py3-none-any wheel of a one-module package `name` whose VERSION is `version`;
    payload: extra module code (a wheel of the same name and version with other bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n{payload}".encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(path, data) for path, data in files.items()] + [f"{dist_info}/RECORD,,"]
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return path


def hashed_requirements(path: Path, wheels: list[Path]) -> Path:
    """A hash file (as emr/hashed-requirements-emr*.txt) pinning these wheels by version and sha256."""
    lines = []
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        lines.append(f"{name}=={version} --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}\n")
    path.write_text("".join(lines))
    return path


def probe_builder(root: Path) -> tuple[Callable[[Path], Path], list[Path]]:
    """A wheelhouse builder for storage.stage_wheelhouse that writes the probe wheel, and the
    list of the hash files it was called with (one entry per build)."""
    calls: list[Path] = []

    def build(hashed: Path) -> Path:
        calls.append(hashed)
        target = root / f"build-{len(calls)}"
        write_wheel(target)
        return target

    return build, calls


def prebuilt_cache(cache_root: Path, repo_root: Path) -> Path:
    """A wheelhouse cache (FRUITS_WHEELHOUSE_CACHE) holding the probe wheel under the hashes of the
    repo's node package sets, so a DAG run against moto stages it without downloading from PyPI."""
    from fruits_emr import wheelhouse

    for hashed in wheelhouse.HASHED_REQUIREMENTS.values():
        target = cache_root / wheelhouse.wheelhouse_hash([repo_root / hashed])
        write_wheel(target)
        (target / wheelhouse.COMPLETE_MARKER).write_text(f"{PROBE}-{PROBE_VERSION}-py3-none-any.whl\n")
    return cache_root
