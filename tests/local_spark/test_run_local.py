"""The local run (the product's main command) end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.support import LABELS, REPO_ROOT, SAMPLE, WEIGHTS, copy_sample
from tests.support.images import broken_images, write_files

pytestmark = pytest.mark.spark  # run_local in a child process


def run_local(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "local_spark.run_local", *args],
        cwd=REPO_ROOT,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    images = tmp_path_factory.mktemp("images")
    copy_sample(images, per_label=12, offset=30)
    photo = sorted((SAMPLE / "apple").iterdir())[0]
    write_files(images / "apple", {name: data for name, (data, _) in broken_images(photo).items() if name in ("truncated.jpg", "zero_bytes.jpg")})
    out = tmp_path_factory.mktemp("out")
    result = run_local("--images", str(images), "--output", str(out), "--weights", str(WEIGHTS), "--alpha", "0.35")
    return result, out


def test_run_succeeds_and_prints_a_summary(local_run):
    result, out = local_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "files seen       50  (50 photos by name)" in result.stdout and "ignored          0" in result.stdout
    assert "featurized       48" in result.stdout
    assert "quarantined      2" in result.stdout and "truncated image" in result.stdout
    assert f"outputs          {out}/" in result.stdout


def test_every_output_is_written(local_run):
    _, out = local_run
    for name in ("features", "quarantine", "pca"):
        assert list((out / name).glob("part-*.parquet")), name
        assert (out / name / "_SUCCESS").exists()
    assert (out / "pca_model" / "pipeline" / "metadata").is_dir()
    assert len(list((out / "pca_model" / "pipeline" / "stages").iterdir())) == 2  # scaler, first-k PCA
    assert json.loads((out / "pca_model" / "pca_model.json").read_text())["fit_rows"] == 48
    for plot in ("explained_variance.png", "pca_scatter.png"):
        with Image.open(out / plot) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 300
            assert len(image.convert("RGB").getcolors(1 << 20) or []) > 10  # something was drawn


def test_report_has_every_field_and_reconciles(local_run):
    _, out = local_run
    report = json.loads((out / "report.json").read_text())
    required = {
        "images_seen", "features_rows", "quarantined", "k", "variance_target", "explained_variance",
        "cumulative_explained_variance", "model", "weights", "image_size", "featurize_seconds", "pca_seconds",
    }
    assert required <= set(report)
    assert (report["images_seen"], report["features_rows"], report["quarantined"]) == (50, 48, 2)
    assert report["quarantine_reasons"] == {"empty file (0 bytes)": 1, "truncated image": 1}
    assert report["variance_target"] == 0.95 and report["cumulative_explained_variance"][report["k"] - 1] >= 0.95
    # the model came from the machine's model cache: its sidecar names the weights file
    assert report["weights"] == WEIGHTS.name and report["image_size"] == 224
    assert report["featurize_seconds"] > 0 and report["pca_seconds"] > 0


def test_pca_output_matches_report(local_run):
    import pyarrow.parquet as pq

    _, out = local_run
    report = json.loads((out / "report.json").read_text())
    table = pq.read_table(out / "pca").to_pandas()
    assert len(table) == report["features_rows"]
    assert set(table.label) == set(LABELS)
    assert {len(v) for v in table.pca} == {report["k"]}


def test_missing_java_is_one_clear_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(tmp_path)  # no java here
    result = run_local("--images", str(tmp_path), "--output", str(tmp_path / "out"), env=env)
    assert result.returncode == 2
    assert "Java not found" in result.stderr and "openjdk-17" in result.stderr
    assert "Traceback" not in result.stderr


def test_user_error_is_one_line_not_a_traceback(tmp_path):
    result = run_local("--images", str(tmp_path / "missing"), "--output", str(tmp_path / "out"), "--weights", str(WEIGHTS), "--alpha", "0.35")
    assert result.returncode == 2
    assert f"run_local: error: image root {tmp_path / 'missing'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_exported_model_run_never_imports_tensorflow(local_run, tmp_path):
    """With --model-artifact the driver never imports TensorFlow/Keras (executors on ONNX Runtime never do);
    --model applies the first run's saved PCA model (make run PCA_MODEL=...) instead of fitting."""
    _, first = local_run
    artifact = tmp_path / "model.onnx"
    export = subprocess.run(
        [sys.executable, "-m", "model_export.export_model", "--output", str(artifact), "--alpha", "0.35", "--weights", str(WEIGHTS)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert export.returncode == 0, export.stderr[-2000:]
    assert json.loads((tmp_path / "model.onnx.json").read_text())["feature_dim"] == 1280
    copy_sample(tmp_path / "imgs", per_label=3, offset=90)
    probe = (
        "import sys; from local_spark import run_local; "
        f"code = run_local.main(['--images', {str(tmp_path / 'imgs')!r}, '--output', {str(tmp_path / 'out')!r}, "
        f"'--model-artifact', {str(artifact)!r}, '--pca-model', {str(first / 'pca_model')!r}]); "
        "print('heavy modules:', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)); sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "heavy modules: []" in result.stdout
    assert "featurized       12" in result.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    fitted = json.loads((first / "report.json").read_text())
    assert (report["pca_fitted"], report["pca_model"], report["k"]) == (False, fitted["pca_model"], fitted["k"])
    assert f"PCA model        {fitted['pca_model']}  (applied from {first / 'pca_model'})" in result.stdout
    assert not (tmp_path / "out" / "pca_model").exists()
