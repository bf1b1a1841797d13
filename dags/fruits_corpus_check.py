"""
### fruits_corpus_check: a first look at the features, after every commit

An example of a DAG downstream of `fruits_features`, and a template for the classifier team: it
is scheduled on the asset `fruits_reduced_corpus`, so it runs once for each commit of
`fruits_features` (several commits before it starts: one run for all of them). It reads the current
reduced corpus through `fruits_emr.commits.reduced_corpus` (the reader docs/dag.md names), the
event's extra saying where, and logs and returns per-label and per-run-date row counts and the
accuracy of a nearest-centroid classifier on a stratified held-out split: a check that the features
separate fruits, training nothing heavy. Details: docs/downstream.md.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pendulum
from airflow.sdk import dag, task

from fruits_emr import alerts, commits, corpus
from fruits_emr.s3_objects import RunOutputError
from fruits_emr.settings import RunConfig

AWS_CONN_ID = os.environ.get("FRUITS_AWS_CONN_ID", "aws_default")
log = logging.getLogger(__name__)


@task
def check_corpus(triggering_asset_events: Any = None) -> dict[str, Any]:
    """Read the corpus the latest commit points at; counts and a nearest-centroid accuracy."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    events = list((triggering_asset_events or {}).get(corpus.REDUCED_CORPUS, []))
    if not events:
        raise ValueError("no fruits_reduced_corpus event: this DAG runs on commits of fruits_features")
    latest = events[-1].extra
    s3 = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
    current = commits.reduced_corpus(s3, RunConfig(bucket=latest["bucket"], output_prefix=latest["output_prefix"]))
    if current is None:
        raise RunOutputError(f"{latest['pointer']} is gone: nothing to read")
    report = corpus.check(corpus.read_rows(s3, current), current["version"])
    report["events"] = [{key: event.extra.get(key) for key in ("run_date", "features_rows", "pca_model_version")}
                        for event in events]
    log.info("corpus %s: %d rows, per label %s, per run date %s; nearest-centroid %s",
             report["pca_model_version"], report["rows"], report["rows_per_label"], report["rows_per_run_date"],
             report["nearest_centroid"])
    return report


@dag(
    dag_id="fruits_corpus_check",
    schedule=[corpus.REDUCED_CORPUS],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "data-eng", "retries": 1, "on_failure_callback": alerts.record_failure_reason},
    on_failure_callback=alerts.RunFailureAlert(AWS_CONN_ID),
    tags=["fruits", "features", "downstream"],
    doc_md=__doc__,
)
def fruits_corpus_check() -> None:
    check_corpus()


fruits_corpus_check()
