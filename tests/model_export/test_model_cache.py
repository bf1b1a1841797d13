"""The machine's model cache (model_export.model_cache) and the model identity it is keyed by
(model_export.model_identity): a second ask gets the cached files without exporting, a changed input
exports again, and processes asking at once export once."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from model_export import model_cache, model_identity
from model_export.model_identity import ExportSettings
from spark_jobs.cnn.exported_model import sidecar_path
from tests.support import REPO_ROOT

SMALL = ExportSettings(model="mobilenet_v2", alpha=0.35, image_size=96, weights="random")


def test_the_identity_changes_with_every_input_and_only_then(tmp_path):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"weights v1")
    named = model_identity.model_hash(SMALL)
    assert named == model_identity.model_hash(ExportSettings(**vars(SMALL)))
    others = {
        "settings": model_identity.model_hash(replace(SMALL, image_size=128)),
        "engine": model_identity.model_hash(replace(SMALL, engine="onnxruntime-int8")),
        "file": model_identity.model_hash(replace(SMALL, weights=str(weights))),
    }
    weights.write_bytes(b"weights v2")
    others["file content"] = model_identity.model_hash(replace(SMALL, weights=str(weights)))
    copy = tmp_path / "elsewhere.h5"
    copy.write_bytes(b"weights v2")
    assert model_identity.model_hash(replace(SMALL, weights=str(copy))) == others["file content"]  # bytes, not path
    assert len({named, *others.values()}) == 5
    # the export code is part of it: a checkout whose exporter differs names another model
    checkout = tmp_path / "checkout"
    for relative in model_identity.EXPORT_SOURCES:
        (checkout / relative).parent.mkdir(parents=True, exist_ok=True)
        (checkout / relative).write_bytes((REPO_ROOT / relative).read_bytes())
    assert model_identity.model_hash(SMALL, checkout) == named
    (checkout / "model_export" / "quantize.py").write_text("# changed\n")
    assert model_identity.model_hash(SMALL, checkout) != named


def test_the_exporter_versions_are_part_of_the_identity(monkeypatch):
    before = model_identity.model_hash(SMALL)
    versions = {**model_identity.exporter_versions(), "tf2onnx": "0.0.1"}
    monkeypatch.setattr(model_identity, "exporter_versions", lambda: versions)
    assert model_identity.model_hash(SMALL) != before


ASK = textwrap.dedent("""
    import json, logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from model_export.model_cache import exported_model
    from model_export.model_identity import ExportSettings
    print(json.dumps(str(exported_model(ExportSettings(**json.loads(sys.argv[1]))))))
""")


@pytest.mark.tensorflow
def test_asked_at_once_exported_once_then_read_from_the_cache(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path / "cache"))
    env = {**__import__("os").environ, model_cache.CACHE_ENV: str(tmp_path / "cache")}
    asks = [subprocess.Popen([sys.executable, "-c", ASK, json.dumps(vars(SMALL))], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    answers = [ask.communicate(timeout=900) for ask in asks]
    assert [ask.returncode for ask in asks] == [0, 0], [err[-2000:] for _, err in answers]
    paths = {json.loads(out) for out, _ in answers}
    assert len(paths) == 1 and sum("into the model cache" in err for _, err in answers) == 1
    model = model_cache.cache_root() / model_identity.model_hash(SMALL) / "model.onnx"
    assert paths == {str(model)} and json.loads(open(sidecar_path(str(model))).read())["image_size"] == 96
    assert sorted(p.name for p in model_cache.cache_root().iterdir() if not p.name.endswith(".lock")) == [model.parent.name]

    stamp = model.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="model_export.model_cache"):
        assert model_cache.exported_model(SMALL) == model  # in this process: the cached files, no export
    assert "into the model cache" not in caplog.text and model.stat().st_mtime_ns == stamp

    changed = replace(SMALL, image_size=128)
    with caplog.at_level(logging.INFO, logger="model_export.model_cache"):
        other = model_cache.exported_model(changed)
    assert other != model and "into the model cache" in caplog.text
    assert json.loads(open(sidecar_path(str(other))).read())["image_size"] == 128


def test_settings_the_exporter_rejects_fail_with_its_message(tmp_path, monkeypatch):
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path))
    missing = replace(SMALL, weights=str(tmp_path / "no-such.h5"))
    with pytest.raises(FileNotFoundError):
        model_identity.model_hash(missing)
    with pytest.raises(model_cache.ModelExportRefused, match="--alpha applies to mobilenet_v2 only"):
        model_cache.exported_model(ExportSettings(model="vgg16", alpha=0.5, image_size=96, weights="random"))
    assert [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # nothing half-written left


@pytest.mark.tensorflow  # builds the backbone, whose weights Keras then fails to download
def test_named_weights_keras_cannot_download_fail_with_the_fix(tmp_path, monkeypatch):
    """weights=imagenet with no route to Keras' download (a proxy nothing listens on, whatever this
    machine's network): the exporter's message names the failed download and the bundled weights,
    and `make run`'s runner prints it as one error, not Keras' traceback."""
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no cached download either
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(model_cache.ModelExportRefused, match="must be downloaded by Keras.*bundled") as refused:
        model_cache.exported_model(ExportSettings(model="mobilenet_v2", alpha=1.0, image_size=96, weights="imagenet"))
    assert "Traceback" not in str(refused.value)
