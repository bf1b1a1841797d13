"""The stage_artifacts task (plugins/fruits_emr/staging.py) and the preflight checks against moto."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fruits_emr import artifacts, emr_request, layout, preflight, s3_objects, settings, staging
from fruits_emr.settings import ConfigError
from tests.support import REPO_ROOT
from tests.support.wheels import PROBE, PROBE_VERSION, hashed_requirements, probe_builder

WEIGHTS = "models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


def make_repo(root: Path) -> Path:
    """A minimal deployable checkout: job package, EMR bootstrap and requirements."""
    (root / "spark_jobs" / "sub").mkdir(parents=True)
    (root / "spark_jobs" / "__init__.py").write_text("")
    (root / "spark_jobs" / "featurize.py").write_text("print('featurize')\n")
    (root / "spark_jobs" / "pca.py").write_text("print('pca')\n")
    (root / "spark_jobs" / "sub" / "__init__.py").write_text("")
    (root / "spark_jobs" / "sub" / "helpers.py").write_text("VALUE = 1\n")
    (root / "spark_jobs" / "__pycache__").mkdir()
    (root / "spark_jobs" / "__pycache__" / "junk.cpython-311.pyc").write_bytes(b"\0")
    (root / "emr").mkdir()
    for name in ("bootstrap.sh", "requirements-emr.txt", "requirements-emr-tensorflow.txt", "constraints-emr.txt",
                 "hashed-requirements-emr.txt", "hashed-requirements-emr-tensorflow.txt"):
        shutil.copy(REPO_ROOT / "emr" / name, root / "emr" / name)
    (root / "models").mkdir()
    (root / "models" / "w.h5").write_bytes(b"weights-v1")
    return root


def config(**overrides) -> settings.RunConfig:
    return settings.RunConfig(**{"bucket": "fruits-data", **overrides})


def keys(s3, bucket: str, prefix: str = "") -> list[str]:
    return sorted(obj["Key"] for obj in s3_objects.list_objects(s3, bucket, prefix))


def test_stage_uploads_once_per_content_hash(s3, tmp_path):
    """Engine tensorflow: the code bundle and the weights file, each under its content hash
    (the wheelhouse has its own test below)."""
    repo = make_repo(tmp_path)
    s3.create_bucket(Bucket="fruits-data")
    tf_config = config(weights="models/w.h5", engine="tensorflow")
    staged, uploaded = staging.stage_artifacts(s3, tf_config, repo, None)
    code_prefix = staged.code_uri.removeprefix("s3://fruits-data/")
    assert keys(s3, "fruits-data", code_prefix) == sorted(
        code_prefix + name for name in ("featurize.py", "pca.py", "spark_jobs.zip", "bootstrap.sh", "_STAGED"))
    assert staged.weights.startswith("s3://fruits-data/artifacts/weights/") and staged.weights.endswith("/w.h5")
    assert staged.model_artifact == "" and staged.wheelhouse == ""
    assert len(uploaded) == 5
    # every staged object is server-side encrypted (the bucket policy refuses unencrypted uploads)
    assert {s3.head_object(Bucket="fruits-data", Key=key).get("ServerSideEncryption")
            for key in keys(s3, "fruits-data", "artifacts/")} == {"AES256"}

    again, uploaded_again = staging.stage_artifacts(s3, tf_config, repo, None)
    assert (again, uploaded_again) == (staged, [])

    (repo / "spark_jobs" / "pca.py").write_text("print('pca v2')\n")
    (repo / "models" / "w.h5").write_bytes(b"weights-v2")
    changed, uploaded_changed = staging.stage_artifacts(s3, tf_config, repo, None)
    assert changed.code_uri != staged.code_uri and changed.weights != staged.weights
    assert len(uploaded_changed) == 5


@pytest.mark.tensorflow  # exports the model (once per machine: the model cache)
def test_stage_exports_the_onnx_model_once(s3):
    """Engine onnxruntime: the model is exported on the worker and staged under its hash; re-staging skips."""
    s3.create_bucket(Bucket="fruits-data")
    onnx_config = config(weights="random", alpha=0.35, image_size=96, kms_key_id="alias/fruits-outputs")
    staged, uploaded = staging.stage_artifacts(s3, onnx_config, REPO_ROOT, None)
    model = staged.model_artifact
    assert {(head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) for head in (
        s3.head_object(Bucket="fruits-data", Key=key) for key in keys(s3, "fruits-data", "artifacts/"))} == {
        ("aws:kms", "alias/fruits-outputs")}
    assert model.startswith("s3://fruits-data/artifacts/models/") and model.endswith("/model.onnx")
    model_key = model.removeprefix("s3://fruits-data/")
    assert keys(s3, "fruits-data", model_key.rsplit("/", 1)[0]) == [model_key, model_key + ".json"]
    assert {model, model + ".json"} <= set(uploaded)
    sidecar = json.loads(s3.get_object(Bucket="fruits-data", Key=model_key + ".json")["Body"].read())
    assert (sidecar["backbone"], sidecar["alpha"], sidecar["image_size"], sidecar["weights"]) == (
        "mobilenet_v2", 0.35, 96, "random")
    onnx_bytes = s3.get_object(Bucket="fruits-data", Key=model_key)["Body"].read()
    import onnx

    assert onnx.load_model_from_string(onnx_bytes).graph.input  # a loadable ONNX model

    again, uploaded_again = staging.stage_artifacts(s3, onnx_config, REPO_ROOT, None)
    assert (again, uploaded_again) == (staged, [])
    # other model settings: another artifact (here a setting the exporter rejects: one clear message)
    with pytest.raises(settings.ConfigError, match="cannot be exported.*alpha"):
        staging.stage_artifacts(s3, config(weights="random", model="vgg16", alpha=0.5), REPO_ROOT, None)


@pytest.mark.tensorflow  # exports the model (once per machine: the model cache)
def test_stage_int8_model_with_its_calibration_list(s3, tmp_path):
    """Engine onnxruntime-int8: a quantized model under its own hash (which covers the calibration
    images), its sidecar listing them; the featurize step asks for the int8 engine."""
    s3.create_bucket(Bucket="fruits-data")
    settings = {"weights": WEIGHTS, "alpha": 0.35}  # the int8 model the bench and the int8 tests share (model cache)
    int8_config = config(engine="onnxruntime-int8", **settings)
    staged, uploaded = staging.stage_artifacts(s3, int8_config, REPO_ROOT, None)
    fp32, _ = staging.stage_artifacts(s3, config(**settings), REPO_ROOT, None)
    model = staged.model_artifact
    assert model != fp32.model_artifact and {model, model + ".json"} <= set(uploaded)
    model_key = model.removeprefix("s3://fruits-data/")
    sidecar = json.loads(s3.get_object(Bucket="fruits-data", Key=model_key + ".json")["Body"].read())
    calibration = sorted(p for p in (REPO_ROOT / "data" / "sample").rglob("*.jpg"))
    assert sidecar["engine"] == "onnxruntime-int8" and sidecar["model_id"].endswith("+int8")
    assert [entry["image"] for entry in sidecar["calibration"]] == [
        p.relative_to(REPO_ROOT / "data" / "sample").as_posix() for p in calibration]
    featurize_args = emr_request.job_arguments(int8_config, layout.run_paths(int8_config, "2026-11-26", "a1"), "", model)["featurize"]
    assert featurize_args[featurize_args.index("--model-artifact"):][:4] == ["--model-artifact", model, "--engine", "onnxruntime-int8"]
    # a checkout without the calibration photos: one message naming the folder and the fix
    bare = make_repo(tmp_path / "repo")
    shutil.copy(REPO_ROOT / WEIGHTS, bare / WEIGHTS)
    with pytest.raises(ConfigError, match="no calibration images under .*data/sample"):
        staging.stage_artifacts(s3, int8_config, bare, None)


def test_stage_wheelhouse_once_per_hash_and_nodes_install_from_it_offline(s3, tmp_path):
    """The wheelhouse and its hash file go to S3 under the hash of that file (so under the wheels'
    sha256), encrypted, marker last; re-staging builds and uploads nothing; what was staged installs
    with pip --no-index --require-hashes, as bootstrap.sh does."""
    repo = make_repo(tmp_path / "repo")
    s3.create_bucket(Bucket="fruits-data")
    build, builds = probe_builder(tmp_path / "cache")
    onnx = config(weights="random", kms_key_id="alias/fruits-outputs")
    model = "s3://fruits-data/artifacts/models/0123/model.onnx"
    uri, uploaded = staging.stage_wheelhouse(s3, onnx, repo, artifacts.needs_tensorflow(onnx, model), build)
    assert uri.startswith("s3://fruits-data/artifacts/wheelhouse/") and uri.endswith("/")
    assert builds == [repo / "emr" / "hashed-requirements-emr.txt"]  # exported model: no TensorFlow add-on
    key = uri.removeprefix("s3://fruits-data/")
    wheel = f"{PROBE}-{PROBE_VERSION}-py3-none-any.whl"
    assert keys(s3, "fruits-data", key) == [key + "_STAGED", key + wheel, key + artifacts.HASHED_REQUIREMENTS_FILE]
    assert uploaded == [uri + wheel, uri + artifacts.HASHED_REQUIREMENTS_FILE]
    assert s3.get_object(Bucket="fruits-data", Key=key + artifacts.HASHED_REQUIREMENTS_FILE)["Body"].read() == (
        repo / "emr" / "hashed-requirements-emr.txt").read_bytes()
    assert {s3.head_object(Bucket="fruits-data", Key=k).get("SSEKMSKeyId") for k in keys(s3, "fruits-data", key)} == {
        "alias/fruits-outputs"}
    assert staging.stage_wheelhouse(s3, onnx, repo, False, build) == (uri, [])
    assert len(builds) == 1  # the marker in S3: no build at all

    # the TensorFlow add-on and any change of a wheel's hash are other wheelhouses
    tf_uri, _ = staging.stage_wheelhouse(s3, onnx, repo, True, build)
    hashed = repo / "emr" / "hashed-requirements-emr.txt"
    text = hashed.read_text()
    at = text.index("--hash=sha256:") + len("--hash=sha256:")
    hashed.write_text(text[:at] + ("1" if text[at] == "0" else "0") + text[at + 1:])  # one wheel's sha256 changed
    rehashed_uri, _ = staging.stage_wheelhouse(s3, onnx, repo, False, build)
    assert len({uri, tf_uri, rehashed_uri}) == 3 and len(builds) == 3

    # a node's install: the staged wheels and their hash file only, no index
    wheels = tmp_path / "node-wheels"
    wheels.mkdir()
    for wheel_key in keys(s3, "fruits-data", key):
        s3.download_file("fruits-data", wheel_key, str(wheels / wheel_key.rsplit("/", 1)[1]))
    hashed_requirements(wheels / "probe-hashed.txt", [wheels / wheel])  # the probe's own hash (not a node package)
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels),
                           "--require-hashes", "-r", str(wheels / "probe-hashed.txt"), "--target", str(target)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    probe = subprocess.run([sys.executable, "-c", f"import {PROBE}; print({PROBE}.VERSION)"], capture_output=True,
                           text=True, env={"PYTHONPATH": str(target)})
    assert probe.stdout.strip() == PROBE_VERSION


def test_stage_artifacts_stages_a_wheelhouse_for_the_cluster(s3, tmp_path):
    repo = make_repo(tmp_path / "repo")
    s3.create_bucket(Bucket="fruits-data")
    build, builds = probe_builder(tmp_path / "cache")
    tf_config = config(weights="models/w.h5", engine="tensorflow")
    staged, uploaded = staging.stage_artifacts(s3, tf_config, repo, build)
    assert staged.wheelhouse.startswith("s3://fruits-data/artifacts/wheelhouse/") and len(uploaded) == 7
    assert builds == [repo / "emr" / "hashed-requirements-emr-tensorflow.txt"]
    assert emr_request.bootstrap_args(tf_config, staged) == [staged.wheelhouse, "tensorflow"]


def test_package_zip_is_importable_and_reproducible(tmp_path):
    repo = make_repo(tmp_path)
    first_hash, files = staging.code_bundle(repo)
    second_hash, again = staging.code_bundle(repo)
    assert first_hash == second_hash and files["spark_jobs.zip"] == again["spark_jobs.zip"]
    names = zipfile.ZipFile(io.BytesIO(files["spark_jobs.zip"])).namelist()
    assert names == ["spark_jobs/__init__.py", "spark_jobs/featurize.py", "spark_jobs/pca.py",
                     "spark_jobs/sub/__init__.py", "spark_jobs/sub/helpers.py"]
    zip_path = tmp_path / "spark_jobs.zip"
    zip_path.write_bytes(files["spark_jobs.zip"])
    import subprocess
    import sys

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-c", "import spark_jobs.sub.helpers as h; print(h.VALUE)"],
                         env={"PYTHONPATH": str(zip_path)}, cwd=empty, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_real_repo_bundle_holds_the_job_entry_points():
    if not (REPO_ROOT / "spark_jobs" / "__init__.py").exists():
        pytest.skip("spark_jobs/ not in the repo yet")
    _, files = staging.code_bundle(REPO_ROOT)
    names = zipfile.ZipFile(io.BytesIO(files["spark_jobs.zip"])).namelist()
    assert {"spark_jobs/featurize.py", "spark_jobs/pca.py", "spark_jobs/__init__.py"} <= set(names)
    assert files["featurize.py"] == (REPO_ROOT / "spark_jobs" / "featurize.py").read_bytes()


@pytest.mark.parametrize(
    ("weights", "message"),
    [("models/nope.h5", "is not 'imagenet', 'random', an s3:// object under the artifacts prefix, or a file inside"),
     ("s3://fruits-data/missing.h5", "no such S3 object")],
)
def test_bad_weights_fail_with_one_message(s3, tmp_path, weights, message):
    s3.create_bucket(Bucket="fruits-data")
    for engine in ("onnxruntime", "tensorflow"):
        with pytest.raises(settings.ConfigError, match=message):
            staging.stage_artifacts(s3, config(weights=weights, engine=engine), make_repo(tmp_path / engine), None)


def test_missing_bucket_fails_with_one_message(s3):
    with pytest.raises(settings.ConfigError, match=r"s3://no-such-bucket does not exist"):
        preflight.check_bucket(s3, "no-such-bucket")


def test_security_configuration_must_exist(emr_client):
    with pytest.raises(settings.ConfigError, match="Param 'security_configuration' = 'fruits-at-rest': EMR cannot describe"
                                              " it .*Create it .*or leave the Param empty"):
        preflight.check_security_configuration(emr_client, "fruits-at-rest")
    emr_client.create_security_configuration(Name="fruits-at-rest", SecurityConfiguration=json.dumps(
        {"EncryptionConfiguration": {"EnableInTransitEncryption": False, "EnableAtRestEncryption": True,
                                     "AtRestEncryptionConfiguration": {
                                         "S3EncryptionConfiguration": {"EncryptionMode": "SSE-S3"}}}}))
    preflight.check_security_configuration(emr_client, "fruits-at-rest")
    # the cluster request then sends no S3 encryption keys, so the configuration must encrypt S3 itself
    emr_client.create_security_configuration(Name="transit-only", SecurityConfiguration=json.dumps(
        {"EncryptionConfiguration": {"EnableInTransitEncryption": True, "EnableAtRestEncryption": False}}))
    with pytest.raises(settings.ConfigError, match="'transit-only' does not encrypt S3 at rest"):
        preflight.check_security_configuration(emr_client, "transit-only")
