"""Shared fixtures: real sample images, the bundled real weights, one local Spark session."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = REPO_ROOT / "tests" / "data" / "fruits-360"  # 480 real images bundled with the repo (NOTICE.md)
WEIGHTS = REPO_ROOT / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
LABELS = ("apple", "lemon", "mango", "raspberry")


def pytest_configure(config):
    # py4j logs "closing connection" from finalizers after pytest closed its streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def copy_sample(target: Path, per_label: int, offset: int = 0) -> list[Path]:
    """Copy `per_label` real images of each fruit into target/<label>/ and return them."""
    copied = []
    for label in LABELS:
        (target / label).mkdir(parents=True, exist_ok=True)
        for source in sorted((SAMPLE / label).iterdir())[offset : offset + per_label]:
            copied.append(Path(shutil.copy(source, target / label / source.name)))
    return copied


# Makes netlib fall back to its pure-Java F2J LAPACK even where a native liblapack is installed, so
# every machine runs the tests against the fallback that gave Spark ML's PCA wrong spectra (issue 12).
FORCE_F2J_LAPACK = {"spark.driver.extraJavaOptions": "-Ddev.ludovic.netlib.lapack.nativeLib=none-such.so"}


@pytest.fixture(scope="session")
def spark():
    from spark_jobs.run_local import local_spark

    session = local_spark("local[2]", "4g", FORCE_F2J_LAPACK)
    yield session
    session.stop()
