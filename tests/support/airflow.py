"""Fixtures of the DAG and plugin tests: an isolated Airflow home and metadata DB, and a moto server (S3 + EMR).

Airflow reads its configuration when first imported, so the environment is set here, at
collection time, before any test module imports Airflow.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile

import pytest

from . import REGION, REPO_ROOT
from .moto import certificate_of, running_moto_server

PLUGINS = REPO_ROOT / "plugins"
DAGS = REPO_ROOT / "dags"

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="fruits-airflow-")
atexit.register(shutil.rmtree, _AIRFLOW_HOME, True)
os.environ.update(
    {
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
)
# the DAG's parse-time settings, for fast runs (override from the shell to try others)
for name, value in {
    "FRUITS_POKE_SECONDS": "1",
    "FRUITS_STEP_TIMEOUT_HOURS": "0.25",
    "FRUITS_RETRY_DELAY_MINUTES": "0.02",
}.items():
    os.environ.setdefault(name, value)
for leaked in ("FRUITS_BUCKET", "AWS_PROFILE", "AIRFLOW_VAR_FRUITS_FEATURES_DEFAULTS", "AIRFLOW_VAR_FRUITS_EMR_PRICES"):
    os.environ.pop(leaked, None)


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto server in this process (so tests can drive EMR step states), shared by the session.
    Over TLS: the local compute mode's Spark writes SSE-KMS objects to it, which S3A sends only over HTTPS."""
    with running_moto_server(tls=True) as endpoint:
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": endpoint, "region_name": REGION, "verify": certificate_of(endpoint)},
            }
        )
        yield endpoint


@pytest.fixture
def moto(moto_endpoint):
    """A clean moto state for one test."""
    import requests

    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10, verify=certificate_of(moto_endpoint)).raise_for_status()
    return moto_endpoint


@pytest.fixture
def s3(moto):
    import boto3

    return boto3.client("s3", endpoint_url=moto, region_name=REGION, verify=certificate_of(moto))


@pytest.fixture
def emr_client(moto):
    import boto3

    return boto3.client("emr", endpoint_url=moto, region_name=REGION, verify=certificate_of(moto))


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh metadata DB in the session's AIRFLOW_HOME."""
    from airflow.utils.db import initdb

    initdb()
    return _AIRFLOW_HOME
