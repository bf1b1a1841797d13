"""Which local weights file a `weights` Param may name: only a file inside the repo's models/ folder.

The DAG uploads the file it names to the artifacts prefix, where the cluster role reads it, so a
user who may trigger runs must not be able to name any other file the worker can read
(/etc/passwd, /proc/self/environ, a `..` escape, a symlink pointing out of models/). The check
runs on the resolved path (symlinks followed), once in resolve_config before anything costs
money and again where the file is read for staging.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from fruits_emr.settings import ConfigError

MODELS_DIR = "models"  # relative to the repo root (FRUITS_REPO_ROOT in the DAG)


def confined_weights_file(weights: str, repo_root: Path) -> Path:
    """The resolved weights file a repo-path Param names, or ConfigError with one message.

    weights: a path relative to the repo root ('models/<file>') or an absolute path that resolves
    inside <repo_root>/models/. Nothing is opened: the path is only resolved and stat'ed.
    """
    models = (repo_root / MODELS_DIR).resolve()
    refusal = (
        f"Param 'weights' = {weights!r} is not 'imagenet', 'random', an s3:// object under the artifacts"
        f" prefix, or a file inside the repo's {MODELS_DIR}/ folder ({models}): {{reason}}. Put the weights"
        f" file in {MODELS_DIR}/ and set 'weights' to '{MODELS_DIR}/<file>', or upload it to S3."
    )
    if "\0" in weights:
        raise ConfigError(refusal.format(reason="the path holds a NUL byte"))
    if ".." in PurePath(weights).parts:
        raise ConfigError(refusal.format(reason="the path has a '..' segment"))
    named = Path(weights) if Path(weights).is_absolute() else repo_root / weights
    try:
        resolved = named.resolve(strict=True)  # follows every symlink, the last one included
    except (OSError, RuntimeError):  # missing, a symlink loop, a name too long
        raise ConfigError(refusal.format(reason=f"{named} does not exist")) from None
    if not resolved.is_relative_to(models):
        reason = f"it resolves to {resolved}" + (", through a symlink" if resolved != named.absolute() else "")
        raise ConfigError(refusal.format(reason=f"{reason}, outside {MODELS_DIR}/"))
    if not resolved.is_file():
        raise ConfigError(refusal.format(reason=f"{resolved} is not a regular file"))
    return resolved
