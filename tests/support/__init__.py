"""What the tests share: the bundled real images and weights, and small helpers.

Fixtures live in tests/conftest.py; image files in `images`, the moto server in `moto`, the node
wheelhouse probe in `wheels`, the isolated Airflow environment (and its fixtures) in `airflow`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "tests" / "data" / "fruits-360"  # 480 real images bundled with the repo (NOTICE.md)
WEIGHTS = REPO_ROOT / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
LABELS = ("apple", "lemon", "mango", "raspberry")
S3_KMS_KEY = "alias/fruits-test"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account

# Makes netlib fall back to its pure-Java F2J LAPACK even where a native liblapack is installed, so
# every machine runs the tests against the fallback that gave Spark ML's PCA wrong spectra (issue 12).
FORCE_F2J_LAPACK = {"spark.driver.extraJavaOptions": "-Ddev.ludovic.netlib.lapack.nativeLib=none-such.so"}


def copy_sample(target: Path, per_label: int, offset: int = 0) -> list[Path]:
    """Copy `per_label` real images of each fruit into target/<label>/ and return them."""
    copied = []
    for label in LABELS:
        (target / label).mkdir(parents=True, exist_ok=True)
        for source in sorted((SAMPLE / label).iterdir())[offset : offset + per_label]:
            copied.append(Path(shutil.copy(source, target / label / source.name)))
    return copied


def s3_client_of(endpoint: str):
    """A boto3 S3 client of a moto server started by `moto.running_moto_server`."""
    import boto3

    from .moto import certificate_of

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, verify=certificate_of(endpoint),
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


def run_summary(**fields):
    """A validated run's summary (fruits_emr.task_records.RunSummary) with plain defaults, for tests of
    what a commit writes."""
    from fruits_emr.task_records import RunSummary

    defaults = dict(output="s3://fruits-data/features/run", files=2, images=2, features_rows=2, quarantined=0,
                    quarantine_reasons={}, ignored=0, ignored_kinds={}, k=1, variance_target=0.95, pca_model="v0001",
                    pca_fitted=True, pca_fit_rows=2)
    return RunSummary(**{**defaults, **fields})
