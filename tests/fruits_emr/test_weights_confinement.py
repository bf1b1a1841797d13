"""A `weights` Param names a preset, an s3:// object under the artifacts prefix, or a file inside the
repo's models/ folder, checked on the resolved path (plugins/fruits_emr/weights_files.py): anything
else fails resolve_config with one message, before anything is uploaded, and staging refuses it too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fruits_emr import preflight, settings, staging
from fruits_emr.settings import ConfigError
from fruits_emr.weights_files import confined_weights_file
from tests.support import REPO_ROOT

BUCKET = "fruits-data"
BUNDLED = "models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
REFUSED = "is not 'imagenet', 'random', an s3:// object under the artifacts prefix, or a file inside the repo's models/"


@pytest.fixture
def repo(tmp_path) -> Path:
    """A deployable checkout with a weights file in models/, a file beside it and symlinks out of models/."""
    root = tmp_path / "repo"
    (root / "models" / "sub").mkdir(parents=True)
    (root / "models" / "w.h5").write_bytes(b"weights")
    (root / "models" / "sub" / "deep.h5").write_bytes(b"deeper weights")
    (root / "secret.txt").write_text("AWS_SECRET_ACCESS_KEY=not-for-the-cluster\n")
    (root / "models" / "passwd.h5").symlink_to("/etc/passwd")
    (root / "models" / "secret.h5").symlink_to(root / "secret.txt")
    (root / "models" / "inside.h5").symlink_to(root / "models" / "sub" / "deep.h5")
    (root / "models" / "loop.h5").symlink_to(root / "models" / "loop.h5")
    (root / "spark_jobs").mkdir()
    for name in ("__init__.py", "featurize.py", "pca.py"):
        (root / "spark_jobs" / name).write_text(f"# {name}\n")
    shutil.copytree(REPO_ROOT / "emr", root / "emr")
    return root


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        ("/etc/passwd", "it resolves to /etc/passwd, outside models/"),
        ("/proc/self/environ", "outside models/"),  # the worker's environment: connection secrets
        ("../etc/passwd", "'..' segment"),
        ("models/../secret.txt", "'..' segment"),
        ("models/sub/../../secret.txt", "'..' segment"),
        ("secret.txt", "secret.txt, outside models/"),  # in the repo, but not in models/
        ("models/passwd.h5", "it resolves to /etc/passwd, through a symlink, outside models/"),
        ("models/secret.h5", "secret.txt, through a symlink, outside models/"),
        ("models/loop.h5", "does not exist"),
        ("models/nope.h5", "does not exist"),
        ("models/sub", "is not a regular file"),
        ("models", "is not a regular file"),
        ("models/w.h5\0.png", "NUL byte"),
    ],
)
def test_anything_but_a_file_inside_models_is_refused(repo, weights, reason):
    with pytest.raises(ConfigError) as refused:
        confined_weights_file(weights, repo)
    message = str(refused.value)
    assert REFUSED in message and reason in message, message
    assert f"Param 'weights' = {weights!r}" in message and "set 'weights' to 'models/<file>'" in message


def test_files_inside_models_resolve_to_themselves(repo):
    assert confined_weights_file("models/w.h5", repo) == (repo / "models" / "w.h5").resolve()
    assert confined_weights_file("models/sub/deep.h5", repo) == (repo / "models" / "sub" / "deep.h5").resolve()
    # an absolute path inside models/ and a symlink that stays inside it are fine too
    assert confined_weights_file(str(repo / "models" / "w.h5"), repo) == (repo / "models" / "w.h5").resolve()
    assert confined_weights_file("models/inside.h5", repo) == (repo / "models" / "sub" / "deep.h5").resolve()
    # the bundled weights of the real checkout
    assert confined_weights_file(BUNDLED, REPO_ROOT).read_bytes()[:4] == b"\x89HDF"


def test_the_repo_itself_through_a_symlinked_root_is_still_confined(repo, tmp_path):
    """The DAG's REPO_ROOT may itself be a symlink (a deployed release folder): models/ is resolved too."""
    link = tmp_path / "current"
    link.symlink_to(repo)
    assert confined_weights_file("models/w.h5", link) == (repo / "models" / "w.h5").resolve()
    with pytest.raises(ConfigError, match="outside models/"):
        confined_weights_file(str(repo / "secret.txt"), link)


@pytest.mark.parametrize("weights", ["/etc/passwd", "/proc/self/environ", "../../etc/passwd", "models/passwd.h5"])
def test_resolve_config_refuses_before_anything_is_uploaded(s3, repo, weights):
    """The task a trigger runs first: one message, the bucket still empty; staging refuses on its own too."""
    s3.create_bucket(Bucket=BUCKET)
    defaults = settings.parse_time_defaults({})
    with pytest.raises(ConfigError, match=REFUSED):
        preflight.checked_run_config({"bucket": BUCKET, "weights": weights, "engine": "tensorflow"}, defaults, None, s3,
                             None, repo)
    config = settings.RunConfig(bucket=BUCKET, weights=weights, engine="tensorflow")
    with pytest.raises(ConfigError, match=REFUSED):
        staging.stage_artifacts(s3, config, repo, None)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_resolve_config_accepts_a_models_file_and_staging_uploads_only_it(s3, repo):
    s3.create_bucket(Bucket=BUCKET)
    defaults = settings.parse_time_defaults({})
    resolved = preflight.checked_run_config({"bucket": BUCKET, "weights": "models/w.h5", "engine": "tensorflow"}, defaults,
                                    None, s3, None, repo)
    staged, _ = staging.stage_artifacts(s3, resolved, repo, None)
    key = staged.weights.removeprefix(f"s3://{BUCKET}/")
    assert key.startswith("artifacts/weights/") and key.endswith("/w.h5")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"weights"


def test_a_symlink_swapped_after_resolve_config_is_refused_at_staging(s3, repo):
    """The check is repeated where the file is read: a models/ entry re-pointed between the two
    tasks does not get the worker's files uploaded."""
    s3.create_bucket(Bucket=BUCKET)
    swap = repo / "models" / "swap.h5"
    swap.symlink_to(repo / "models" / "w.h5")
    resolved = preflight.checked_run_config({"bucket": BUCKET, "weights": "models/swap.h5", "engine": "tensorflow"},
                                    settings.parse_time_defaults({}), None, s3, None, repo)
    os.remove(swap)
    swap.symlink_to("/etc/passwd")
    with pytest.raises(ConfigError, match="through a symlink, outside models/"):
        staging.stage_artifacts(s3, resolved, repo, None)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_the_defaults_variable_is_confined_too(s3, repo):
    """A user who may edit Variables sets weights for every later run: same check, same message."""
    s3.create_bucket(Bucket=BUCKET)
    with pytest.raises(ConfigError, match=REFUSED):
        preflight.checked_run_config({}, settings.parse_time_defaults({}), {"bucket": BUCKET, "weights": "/etc/passwd"}, s3,
                             None, repo)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
