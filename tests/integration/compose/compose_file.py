"""Reading docker-compose.yaml, .env.example and docker/Dockerfile the way Compose and BuildKit do,
for the static checks (test_compose.py, test_dockerfile.py) and the compose test: PyYAML resolves
the `<<` merge keys as Compose does, `${VAR:-default}` is interpolated with the file's own defaults.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

from tests.support import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
REQUIREMENTS = REPO_ROOT / "requirements.txt"
ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
PINNED_IMAGE = re.compile(r"^[a-z0-9./_-]+(:[A-Za-z0-9._-]+)@sha256:[0-9a-f]{64}$")


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
