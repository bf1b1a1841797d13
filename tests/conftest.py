"""Shared fixtures: one local Spark session, a moto S3 server it reads and writes through S3A, and
(tests.support.airflow) an isolated Airflow home with a moto server for the DAG and plugin tests."""

from __future__ import annotations

import logging

import pytest

from tests.support import FORCE_F2J_LAPACK, S3_KMS_KEY, s3_client_of

pytest_plugins = ["tests.support.airflow"]


# fixture -> the marker a test using it gets (the lanes of docs/testing.md)
MARKED_BY_FIXTURE = {"spark": "spark", "s3_server": "spark", "s3_client": "spark", "airflow_db": "airflow",
                     "ui_stack": "ui"}


def pytest_configure(config):
    # py4j logs "closing connection" from finalizers after pytest closed its streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    share_botocore_loader()


def share_botocore_loader():
    """One botocore data loader for every boto3 session of the process, as one session's clients
    already share it. Airflow's AWS hooks make a new session for each client, and each new session
    parses botocore's endpoint and service JSON again (0.32 s of CPU for an S3 and an EMR client,
    0.06 s shared): in-process DAG runs and the plugin tests make thousands of them."""
    import functools

    import botocore.loaders
    import botocore.session

    botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in set(item.fixturenames) & set(MARKED_BY_FIXTURE):
            item.add_marker(MARKED_BY_FIXTURE[fixture])
        if item.get_closest_marker("ui"):
            item.add_marker("airflow")
        # Tests sharing a module-scoped fixture (one stack, one featurize run, one export) run in one
        # xdist worker, in file order, so the fixture is made once (needs pytest 9.1, see
        # requirements.txt; tests/test_suite_grouping.py fails if the group stops reaching xdist).
        scopes = {definition.scope for definitions in item._fixtureinfo.name2fixturedefs.values()
                  for definition in definitions}
        if "module" in scopes or "class" in scopes:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def pytest_terminal_summary(terminalreporter):
    """The wall times a test records with record_property("timings", {step: seconds}) (the compose
    test: image builds, make up, the run), after the results; with pytest-xdist too (the reports
    carry their properties to the controller)."""
    for outcome in ("passed", "failed"):
        for report in terminalreporter.getreports(outcome):
            for name, timings in report.user_properties:
                if name == "timings" and timings:
                    steps = ", ".join(f"{step} {seconds:.0f} s" for step, seconds in timings.items())
                    terminalreporter.write_line(f"timings of {report.nodeid} ({outcome}): {steps}")


@pytest.fixture(scope="session")
def spark():
    from local_spark.session import local_spark

    session = local_spark("local[2]", "4g", FORCE_F2J_LAPACK)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3_server(spark):
    """A moto S3 server, with the session's Spark reading and writing s3:// and s3a:// on it
    through S3A (local_spark.s3a, as run_local does) and SSE-KMS on every object it writes."""
    from local_spark.s3a import require_s3a_jars, s3a_conf
    from tests.support.moto import JAVA_TRUST_ANY_CERT, running_moto_server

    require_s3a_jars()
    name, value = JAVA_TRUST_ANY_CERT.removeprefix("-D").split("=")
    spark.sparkContext._jvm.java.lang.System.setProperty(name, value)  # read when S3A makes its client
    with running_moto_server(tls=True) as endpoint:
        settings = {"FRUITS_S3_ENDPOINT": endpoint, "FRUITS_S3_SSE": "SSE-KMS", "FRUITS_S3_KMS_KEY": S3_KMS_KEY}
        hadoop = spark.sparkContext._jsc.hadoopConfiguration()
        for name, value in s3a_conf(settings).items():
            if name.startswith("spark.hadoop."):
                hadoop.set(name.removeprefix("spark.hadoop."), value)
        for name in ("access.key", "secret.key"):  # the JVM's environment was fixed at its start
            hadoop.set(f"fs.s3a.{name}", "testing")
        yield endpoint


@pytest.fixture
def s3_client(s3_server):
    return s3_client_of(s3_server)
