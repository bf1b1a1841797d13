"""Measure what the EMR bootstrap spends installing the node packages: from the staged wheelhouse
(pip --no-index --find-links --require-hashes, as emr/bootstrap.sh does) against from PyPI.

Each run installs emr/hashed-requirements-emr.txt (every wheel pinned by sha256) into a fresh venv (venv
creation not timed); the PyPI runs use --no-cache-dir, so every run downloads, as a new node would.
Writes the figures to bench/results.json under `bootstrap_install_seconds` (other keys untouched).

    python -m bench.bootstrap_install [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from fruits_emr import wheelhouse

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results.json"
KEY = "bootstrap_install_seconds"


def timed_install(python: str, source: list[str], hashed_requirements: Path) -> float:
    """Seconds of one pip install into a fresh venv."""
    with tempfile.TemporaryDirectory(prefix="fruits-bootstrap-bench-") as tmp:
        subprocess.run([python, "-m", "venv", f"{tmp}/venv"], check=True)
        command = [f"{tmp}/venv/bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   *source, "--require-hashes", "-r", str(hashed_requirements)]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        return time.perf_counter() - started


def summary(runs: list[float]) -> dict[str, object]:
    return {"runs": [round(r, 1) for r in runs], "min": round(min(runs), 1),
            "median": round(statistics.median(runs), 1), "max": round(max(runs), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--python", default="python3.11", help="interpreter of the fresh venvs (the nodes run 3.11)")
    args = parser.parse_args(argv)
    hashed = REPO_ROOT / wheelhouse.HASHED_REQUIREMENTS[False]

    started = time.perf_counter()
    local = wheelhouse.build_wheelhouse(hashed)
    build_seconds = time.perf_counter() - started
    wheels = sorted(local.glob("*.whl"))
    from_wheelhouse, from_pypi = [], []
    for _ in range(args.runs):  # interleaved, so a busy spell on the machine hits both alike
        from_wheelhouse.append(timed_install(args.python, ["--no-index", "--find-links", str(local)], hashed))
        from_pypi.append(timed_install(args.python, ["--no-cache-dir"], hashed))
    figures = {
        "date": date.today().isoformat(),
        "packages": f"{hashed.relative_to(REPO_ROOT)}"
                    f" ({len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 2**20:.0f} MB)",
        "python": subprocess.run([args.python, "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True, check=True).stdout.strip(),
        "machine": f"{platform.machine()}, {platform.system()}",
        "wheelhouse": summary(from_wheelhouse),
        "pypi": summary(from_pypi),
        "wheelhouse_build_seconds": round(build_seconds, 1) if build_seconds > 1 else "cached",
        "note": "fresh venv per run, venv creation not timed; PyPI runs download every wheel (--no-cache-dir)."
                " A shared machine (other test suites running): compare medians, not single runs.",
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[KEY] = figures
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
