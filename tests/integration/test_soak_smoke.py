"""The soak script on a handful of images, so it cannot rot: counts reconcile, broken files are
quarantined, a failed run fails the script. Never looks at a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyspark
import pytest

from tests.support import REPO_ROOT

pytestmark = pytest.mark.spark  # run_local in child processes


def soak(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.soak", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soak")
    done = soak("--smoke", "--results", str(tmp / "soak.json"), "--workdir", str(tmp / "work"))
    assert done.returncode == 0, done.stderr[-4000:]
    return done, json.loads((tmp / "soak.json").read_text()), tmp / "work"


def test_smoke_run_reconciles_and_quarantines_exactly_the_planted_files(smoke):
    done, results, _ = smoke
    full = results["runs"]["full"]
    assert results["smoke"] is True and results["passed"] is True and results["problems"] == []
    assert (full["images_expected"], full["images_seen"], full["features_rows"], full["quarantined"]) == (29, 29, 24, 5)
    assert full["quarantine_reasons"] == {
        "truncated image": 3, "empty file (0 bytes)": 1, "not a JPEG, PNG, WebP, AVIF, HEIF/HEIC, TIFF, BMP or GIF image (cannot identify image data)": 1,
    }
    assert full["reconciled"] is True and full["pca_rows"] == 24 and 1 <= full["k"] <= 24
    assert full["peak_rss_bytes"] > 0 and set(full["peak_rss_by_kind_bytes"]) == {"driver", "jvm", "python_workers"}
    assert all(full["peak_rss_by_kind_bytes"].values()) and len(full["peak_rss_by_quarter_bytes"]) == 4
    assert max(full["rss_series_bytes"]["max_total"]) == full["peak_rss_bytes"]
    assert results["rss_ratio"] is None and results["versions"]["pyspark"] == pyspark.__version__
    assert "| counts reconciled | yes |" in done.stdout and "SMOKE RUN" in done.stdout


def test_reconcile_reports_counts_that_disagree(smoke):
    from bench.sample_images import BUNDLED_IMAGES, sample_files
    from bench.soak_checks import reconcile
    from bench.soak_inputs import plant_broken_files

    _, _, work = smoke
    output = work / "out-full"
    report = json.loads((output / "report.json").read_text())
    planted = plant_broken_files(work / "images-12x2" / "broken", sample_files(BUNDLED_IMAGES, 3))
    assert len(planted) == 5 and reconcile(report, output, 29, 24, planted) == []
    fewer = dict(list(planted.items())[:4])
    problems = reconcile(report, output, 30, 25, fewer)
    assert any("images_seen 29 != 30 expected" in p for p in problems)
    assert any("features_rows 24 != 25 good images" in p for p in problems)
    assert any("quarantined 5 != 4 planted" in p for p in problems)
    assert any("quarantine differs from the planted files" in p for p in problems)
    wrong_reason = {**planted, next(iter(planted)): "decompression bomb"}
    assert [p for p in reconcile(report, output, 29, 24, wrong_reason) if "expected 'decompression bomb'" in p]


def test_a_failed_run_fails_the_soak_with_its_log(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"} | {"PATH": str(tmp_path)}  # run_local finds no Java
    done = soak("--smoke", "--results", str(tmp_path / "soak.json"), "--workdir", str(tmp_path / "work"), env=env)
    assert done.returncode == 1
    assert "soak: error: the run on" in done.stderr and "Java not found" in done.stderr
    assert str(tmp_path / "work" / "run-full.log") in done.stderr
    assert not (tmp_path / "soak.json").exists()
