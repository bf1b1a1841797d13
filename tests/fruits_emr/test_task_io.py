"""What tasks hand each other (fruits_emr.task_records, settings.RunConfig, artifacts.StagedArtifacts)
crosses XCom as JSON and comes back as the same typed record (fruits_emr.task_io)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from fruits_emr import artifacts, layout, pca_plan
from fruits_emr.settings import ConfigError, RunConfig
from fruits_emr.task_io import from_xcom, task_body, to_xcom
from fruits_emr.task_records import EmrRequest, PcaPlan, RunCommit, RunSelection, RunSummary
from tests.support import run_summary

CONFIG = RunConfig(bucket="fruits-data", k=7, core_instance_types=("m5.xlarge", "r5.large"))
PATHS = layout.run_paths(CONFIG, "2024-06-01", "20240602T010203000004Z")
SELECTION = RunSelection(paths=PATHS, files=43, images=41, scope="LastModified in [a, b)", window=("2024-06-01", "2024-06-02"),
                         median_bytes=2_400_000)
FIT = pca_plan.plan_pca(dataclasses.replace(CONFIG, refit_pca=True), {"version": "v0003", "number": 3, "model": "s3://m/v3", "corpus": {}},
                        {"2024-05-31": "s3://f/31", "2024-05-30": "s3://f/30"}, PATHS)
RECORDS = [
    CONFIG,
    artifacts.code_layout("fruits-data", "artifacts/", "0123", "imagenet", "s3://m/model.onnx", "s3://w/"),
    SELECTION,
    dataclasses.replace(SELECTION, window=None, median_bytes=None),
    FIT,
    pca_plan.plan_pca(RunConfig(bucket="b1x"), None, {}, PATHS),
    EmrRequest(steps=[{"Name": "featurize 2024-06-01", "HadoopJarStep": {"Args": ["spark-submit"]}}]),
    run_summary(quarantine_reasons={"corrupt image": 1}, ignored=1, ignored_kinds={".mov": 1}, cluster_id="j-1"),
    RunCommit(run_date="2024-06-01", attempt="a", output="s3://o", features="s3://o/features", pca="s3://o/pca",
              report="s3://o/report.json", files=3, images=2, features_rows=2, quarantined=0, ignored=1, k=1, pca_model="v0001",
              dag_run_id="manual__1", committed_at="2024-06-02T00:00:00+00:00"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda record: type(record).__name__)
def test_every_record_survives_xcom(record):
    sent = json.loads(json.dumps(to_xcom(record)))  # what XCom stores: JSON
    assert from_xcom(type(record), sent) == record


def test_nested_records_come_back_typed():
    back = from_xcom(PcaPlan, json.loads(json.dumps(to_xcom(FIT))))
    assert (back.fit, back.pointer_number, back.number) == (True, 3, 4)
    assert [entry.run_date for entry in back.corpus] == ["2024-05-30", "2024-05-31"]
    assert isinstance(back.corpus, tuple) and isinstance(from_xcom(RunSelection, to_xcom(SELECTION)).paths, layout.RunPaths)


def test_a_task_body_gets_records_and_hands_on_xcom():
    seen = {}

    @task_body
    def body(config: RunConfig, run: RunSelection, plan: PcaPlan | None = None, note: str = "") -> RunSummary:
        seen.update(config=config, run=run, plan=plan, note=note)
        return run_summary(images=run.images)

    handed = body(to_xcom(CONFIG), to_xcom(SELECTION), plan=None, note="x")
    assert seen == {"config": CONFIG, "run": SELECTION, "plan": None, "note": "x"}
    assert handed == to_xcom(run_summary(images=41)) and isinstance(handed, dict)


def test_a_user_error_fails_the_task_with_its_message_only():
    @task_body
    def body(config: RunConfig) -> None:
        raise ConfigError("Param 'bucket' is empty. Set it in the trigger form.")

    with pytest.raises(AirflowFailException, match="^Param 'bucket' is empty. Set it in the trigger form.$"):
        body(to_xcom(CONFIG))


def test_any_other_error_is_left_to_the_task_retries():
    @task_body
    def body(config: RunConfig) -> None:
        raise ConnectionError("S3 reset the connection")

    with pytest.raises(ConnectionError):
        body(to_xcom(CONFIG))

