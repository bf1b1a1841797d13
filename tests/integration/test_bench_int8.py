"""bench/int8.py on a few images, so it cannot rot: the figures it writes and what they rest on,
never how fast anything was."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

pytestmark = [pytest.mark.spark, pytest.mark.tensorflow]  # exports and fine-tunes the int8 model


def test_int8_bench_writes_its_figures(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"kept": 1}))
    done = subprocess.run(
        [sys.executable, "-m", "bench.int8", "--per-label", "4", "--runs", "3", "--results", str(results),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(results.read_text())
    assert figures["kept"] == 1  # merged into the results, not replacing them
    detail = figures["int8"]
    assert detail["images"] == 16 and detail["runs"] == 3 and detail["threads"] == 1
    assert (detail["probe"]["train"], detail["probe"]["test"]) == (12, 4)  # index 0 of every 4 per label
    assert detail["speedup"]["min"] <= figures["int8_speedup"] <= detail["speedup"]["max"]
    assert 0.9 < figures["int8_cosine_min"] <= detail["cosine"]["median"] <= 1.0
    accuracy = detail["probe"]
    assert figures["int8_probe_accuracy_delta"] == round(100 * (accuracy["accuracy_fp32"] - accuracy["accuracy_int8"]), 2)
