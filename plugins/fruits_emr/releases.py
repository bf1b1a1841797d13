"""The EMR releases the pipeline runs on: release label -> the Spark it ships -> the node packages.

One table, kept in step by tests/fruits_emr/test_releases.py with requirements.txt (the tests' pyspark
pin is the default release's Spark), emr/requirements-emr.txt (the node pins) and RunConfig's
default release_label. Spark versions: AWS "Spark release history" (docs/deploy-aws.md cites it).
"""

from __future__ import annotations

# release label -> Apache Spark version it ships (EMR's build is <version>-amzn-<n>).
# Only releases with Python 3.11 on the nodes and Spark 3.5 (emr-7.1.0 and later); the pipeline
# refuses a label not listed here, so a new release is added after its Spark version is checked.
EMR_SPARK = {
    "emr-7.8.0": "3.5.4",
    "emr-7.9.0": "3.5.5",
    "emr-7.10.0": "3.5.5",  # from here on s3:// is S3A, not EMRFS
    "emr-7.11.0": "3.5.6",
    "emr-7.12.0": "3.5.6",
}
# The newest release in the table: the tests run pyspark at its Spark version (3.5.6).
DEFAULT_RELEASE = "emr-7.12.0"

# The node packages that cross the Spark/Python boundary (Arrow batches into pandas UDFs) and so
# must be what the tests ran the jobs with; their versions live in emr/requirements-emr.txt.
SPARK_BOUND_PACKAGES = ("numpy", "pandas", "pyarrow")


def spark_version(release_label: str) -> str:
    return EMR_SPARK[release_label]
