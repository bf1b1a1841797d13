"""One table (plugins/fruits_emr/releases.py) holds release label -> Spark -> node pins; these tests
keep the default release, the tests' pyspark and the node requirements in step with it."""

from __future__ import annotations

from importlib.metadata import version

from fruits_emr import params, settings
from fruits_emr.releases import DEFAULT_RELEASE, EMR_SPARK, SPARK_BOUND_PACKAGES, spark_version
from fruits_emr.wheelhouse import read_pins
from tests.support import REPO_ROOT


def test_default_release_is_the_table_default_and_a_spark_3_5_release():
    assert settings.RunConfig().release_label == DEFAULT_RELEASE
    assert params.param_specs(settings.parse_time_defaults({}))["release_label"]["enum"] == list(EMR_SPARK)
    assert all(spark.startswith("3.5.") for spark in EMR_SPARK.values())
    # the newest release listed is the default (labels compare as version tuples)
    newest = max(EMR_SPARK, key=lambda label: tuple(int(part) for part in label.removeprefix("emr-").split(".")))
    assert DEFAULT_RELEASE == newest


def test_tests_run_the_default_release_spark():
    """requirements.txt, constraints.txt and the venv the tests run in hold the default release's Spark."""
    expected = spark_version(DEFAULT_RELEASE)
    assert read_pins(REPO_ROOT / "requirements.txt")["pyspark"] == expected
    assert read_pins(REPO_ROOT / "constraints.txt")["pyspark"] == expected
    assert version("pyspark") == expected, (
        f"the test venv runs pyspark {version('pyspark')}, the default release {DEFAULT_RELEASE} runs Spark"
        f" {expected}: reinstall with pip install -r requirements.txt -c constraints.txt")


def test_node_packages_are_the_ones_the_jobs_are_tested_with():
    """numpy, pandas and pyarrow cross the JVM/Python boundary in the pandas UDFs: the nodes get the
    versions the featurize and pca tests ran with on the pinned pyspark."""
    nodes = read_pins(REPO_ROOT / "emr" / "requirements-emr.txt")
    tested = read_pins(REPO_ROOT / "requirements.txt")
    node_constraints = read_pins(REPO_ROOT / "emr" / "constraints-emr.txt")
    for package in SPARK_BOUND_PACKAGES:
        assert nodes[package] == tested[package] == node_constraints[package] == version(package), package
