"""fruits_emr.lineage without a running stack: off by default, the run's datasets, the Spark listener's
settings in the steps (they still pass botocore's EMR request model), the jar staged once by content.
The events themselves, Airflow's and Spark's, are checked with real processes in
tests/integration/ui/test_downstream_stack.py."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from fruits_emr import artifacts, emr_request, layout, lineage, pca_plan, settings, staging
from tests.support import REPO_ROOT

BUCKET = "fruits-lineage"
CONFIG = settings.RunConfig(bucket=BUCKET)
PATHS = layout.run_paths(CONFIG, "2024-06-01", "a1")
FIT = pca_plan.plan_pca(replace(CONFIG, refit_pca=True), {"version": "v0001", "number": 1, "corpus": {},
                                                          "model": f"s3://{BUCKET}/features/_pca_models/_attempts/a0"},
                        {}, PATHS)
APPLY = pca_plan.plan_pca(CONFIG, {"version": "v0001", "number": 1, "corpus": {},
                                   "model": f"s3://{BUCKET}/features/_pca_models/_attempts/a0"}, {}, PATHS)


def test_lineage_is_off_without_a_transport():
    """The test process configures no OpenLineage transport: no listener settings, steps unchanged."""
    assert not lineage.enabled()
    assert lineage.spark_settings(context=None) == {}
    steps = [{"HadoopJarStep": {"Args": ["spark-submit", "x.py"]}}]
    assert lineage.with_parent_job(steps, context=None) == steps


def test_run_datasets_name_raw_inputs_and_the_written_folders():
    output = PATHS.output_uri
    assert lineage.run_datasets(CONFIG, PATHS, FIT) == {
        "inputs": [f"s3://{BUCKET}/raw"],
        "outputs": [f"{output}/features", f"{output}/pca", FIT.model],
    }
    # an applied model is read, not written
    assert lineage.run_datasets(CONFIG, PATHS, APPLY) == {
        "inputs": [f"s3://{BUCKET}/raw", APPLY.model], "outputs": [f"{output}/features", f"{output}/pca"]}


@pytest.mark.parametrize(("transport", "expected"), [
    ({"type": "file", "log_file_path": "/var/ol/events"},
     {"spark.openlineage.transport.type": "file", "spark.openlineage.transport.location": "/var/ol/events.spark"}),
    ({"type": "console"}, {"spark.openlineage.transport.type": "console"}),
    ({"type": "kafka", "topic": "x"}, {}),
])
def test_file_and_console_transports_have_spark_settings(transport, expected):
    assert lineage.spark_transport(transport, context=None) == expected


def test_steps_load_the_listener_from_the_staged_jar_and_stay_valid_requests():
    import botocore.session
    from botocore.validate import validate_parameters

    jar = f"s3://{BUCKET}/artifacts/jars/0123456789abcdef/openlineage-spark_2.12-1.53.0.jar"
    unstaged = artifacts.code_layout(BUCKET, "artifacts/", "0" * 16, "imagenet")
    staged = replace(unstaged, lineage_jar=jar)
    conf = {"spark.extraListeners": lineage.SPARK_LISTENER, "spark.openlineage.transport.type": "console"}
    plain = emr_request.spark_steps(CONFIG, PATHS, staged, FIT)
    with_listener = emr_request.spark_steps(CONFIG, PATHS, staged, FIT, conf)
    for before, after in zip(plain, with_listener, strict=True):
        args = after["HadoopJarStep"]["Args"]
        at = args.index("--jars")
        assert args[at:at + 6] == ["--jars", jar, "--conf", f"spark.extraListeners={lineage.SPARK_LISTENER}",
                                   "--conf", "spark.openlineage.transport.type=console"]
        assert [a for i, a in enumerate(args) if not at <= i < at + 6] == before["HadoopJarStep"]["Args"]
    model = botocore.session.get_session().get_service_model("emr")
    validate_parameters({"JobFlowId": "j-1", "Steps": with_listener}, model.operation_model("AddJobFlowSteps").input_shape)
    # no listener without a staged jar (lineage was off when the artifacts were staged)
    assert emr_request.spark_steps(CONFIG, PATHS, unstaged, FIT, conf) == plain


def test_the_listener_jar_is_staged_once_under_its_content_hash(s3):
    s3.create_bucket(Bucket=BUCKET)
    jar = lineage.listener_jar(REPO_ROOT)
    uri, uploaded = staging.stage_jar(s3, CONFIG, jar)
    digest = hashlib.sha256(jar.read_bytes()).hexdigest()[:16]
    assert (uri, uploaded) == (f"s3://{BUCKET}/artifacts/jars/{digest}/{jar.name}", True)
    assert staging.stage_jar(s3, CONFIG, jar) == (uri, False)
    head = s3.head_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"))
    assert head["ContentLength"] == jar.stat().st_size and head["ServerSideEncryption"] == "AES256"


def test_a_missing_listener_jar_is_one_clear_error(tmp_path):
    with pytest.raises(settings.ConfigError, match="scripts/fetch_s3a_jars.py"):
        lineage.listener_jar(tmp_path)
