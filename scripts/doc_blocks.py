"""Generated blocks of the docs: the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`.

One home for reading and replacing them, used by `scripts/params_table.py` (the Params table of
docs/dag.md) and the bench scripts (the tables of docs/performance.md).
"""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _split(text: str, path: Path, name: str) -> tuple[str, str, str]:
    start, end = markers(name)
    if start not in text or end not in text.split(start, 1)[1]:
        raise ValueError(f"{path} has no {start} ... {end} markers: add them where the generated text belongs.")
    head, rest = text.split(start, 1)
    body, tail = rest.split(end, 1)
    return head, body, tail


def read_block(path: Path, name: str) -> str:
    """The generated text now in `path` between the markers of `name`, without the surrounding newlines."""
    return _split(Path(path).read_text(), path, name)[1].strip("\n")


def write_block(path: Path, name: str, body: str) -> None:
    """Replace the text between the markers of `name` in `path` with `body`."""
    path = Path(path)
    head, _, tail = _split(path.read_text(), path, name)
    start, end = markers(name)
    path.write_text(f"{head}{start}\n{body.strip(chr(10))}\n{end}{tail}")
