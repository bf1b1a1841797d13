"""A DAG run played in this process by the functions the DAG's tasks call, in the DAG's order, with a fast
stand-in for the two Spark jobs that writes the same outputs (tests of the selection, the commit
protocol and the reliability state machine; the real jobs are tested in tests/spark_jobs and by the
DAG and stack tests).

The stand-in reads the manifest and the images from S3 as featurize does, quarantines an image whose
bytes start with BROKEN, and writes features/, quarantine/ (Parquet, the jobs' columns), featurize.json,
then, as pca does with the arguments pca_plan.pca_arguments gives it, pca/, report.json and, for a fit,
the model folder (pca_model.json last, corpus/part-NNNNN re-projections).

And what a reader sees: `committed_view` (every row of the corpus the PCA pointer names, features and
quarantine, less its retired rows) and `raw_versions` (the raw prefix), which the invariant compares.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fruits_emr import commits, ledger, pca_plan, pca_pointer, selection, validation
from fruits_emr.settings import RunConfig
from fruits_emr.task_records import PcaPlan, RunCommit, RunSelection, RunSummary
from spark_jobs.contract.run_files import FEATURES, PCA, PCA_CORPUS_PART, PCA_MODEL_INFO, QUARANTINE, REPORT
from spark_jobs.contract.s3_uri import split_s3_uri

BROKEN = b"broken"  # an upload starting with these bytes cannot be decoded: quarantined
K = 2


def _put_parquet(s3, uri: str, rows: list[dict[str, Any]], schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    bucket, key = split_s3_uri(f"{uri}/part-00000.parquet")
    s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())


def _read_parquet(s3, uri: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    bucket, key = split_s3_uri(uri.rstrip("/") + "/")
    rows: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                rows += pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())).to_pylist()
    return rows


def _put_json(s3, uri: str, record: Any) -> None:
    bucket, key = split_s3_uri(uri)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode())


def _label(uri: str) -> str:
    return uri.rsplit("/", 2)[-2]


def featurize(s3, output: str, manifest: str) -> None:
    import pyarrow as pa

    from spark_jobs.contract.model_choices import has_image_extension

    features, quarantine, ignored = [], [], []
    for uri in selection.read_manifest(s3, *split_s3_uri(manifest)):
        if not has_image_extension(uri):
            ignored.append(uri)  # not a photo by name: featurize lists it and makes no row
            continue
        try:
            body = s3.get_object(Bucket=split_s3_uri(uri)[0], Key=split_s3_uri(uri)[1])["Body"].read()
        except s3.exceptions.NoSuchKey:  # deleted since the selection: the real job's reason (image_listing.py)
            quarantine.append({"path": uri, "label": _label(uri), "reason": "listed in the manifest but not found"})
            continue
        if body.startswith(BROKEN):
            quarantine.append({"path": uri, "label": _label(uri), "reason": "not an image"})
        else:
            digest = hashlib.md5(body).digest()
            features.append({"path": uri, "label": _label(uri), "features": [b / 255 for b in digest[:4]]})
    _put_parquet(s3, f"{output}/{FEATURES}", features, pa.schema(
        [("path", pa.string()), ("label", pa.string()), ("features", pa.list_(pa.float32()))]))
    _put_parquet(s3, f"{output}/{QUARANTINE}", quarantine, pa.schema(
        [("path", pa.string()), ("label", pa.string()), ("reason", pa.string())]))
    _put_json(s3, f"{output}/featurize.json", {
        "files_seen": len(features) + len(quarantine) + len(ignored), "images_seen": len(features) + len(quarantine),
        "features_rows": len(features), "quarantined": len(quarantine), "ignored": len(ignored),
        "ignored_kinds": dict(Counter(uri.rsplit(".", 1)[-1].lower() for uri in ignored))})


def _reduce(s3, features_uri: str, version: str) -> list[dict[str, Any]]:
    return [{"path": row["path"], "label": row["label"], "pca": row["features"][:K], "pca_model": version}
            for row in _read_parquet(s3, features_uri)]


def pca(s3, args: list[str]) -> None:
    import pyarrow as pa

    value = {flag: args[i + 1] for i, flag in enumerate(args) if flag.startswith("--") and i + 1 < len(args)}
    output, corpus = value["--output"], [args[i + 1] for i, flag in enumerate(args) if flag == "--corpus"]
    schema = pa.schema([("path", pa.string()), ("label", pa.string()), ("pca", pa.list_(pa.float32())),
                        ("pca_model", pa.string())])
    if "--model" in value:
        info = json.loads(s3.get_object(**dict(zip(("Bucket", "Key"), split_s3_uri(
            f"{value['--model']}/{PCA_MODEL_INFO}"), strict=True)))["Body"].read())
        version, fitted = info["version"], False
    else:
        version, fitted, model = value["--model-version"], True, value["--model-output"]
        for index, uri in enumerate(corpus):
            _put_parquet(s3, f"{model}/{PCA_CORPUS_PART.format(index=index)}", _reduce(s3, uri, version), schema)
        _put_json(s3, f"{model}/{PCA_MODEL_INFO}", {"version": version, "k": K})
    rows = _reduce(s3, f"{output}/{FEATURES}", version)
    _put_parquet(s3, f"{output}/{PCA}", rows, schema)
    summary = json.loads(s3.get_object(**dict(zip(("Bucket", "Key"), split_s3_uri(f"{output}/featurize.json"),
                                                  strict=True)))["Body"].read())
    _put_json(s3, f"{output}/{REPORT}", {
        **summary, "quarantine_reasons": {"not an image": summary["quarantined"]} if summary["quarantined"] else {},
        "k": K, "variance_target": 0.95, "pca_model": version, "pca_fitted": fitted,
        "pca_fit_rows": len(rows) if fitted else None,
        "pca_corpus": [{"features": uri, "pca": f"{value['--model-output']}/{PCA_CORPUS_PART.format(index=i)}"}
                       for i, uri in enumerate(corpus)]})


TASKS = ("find_new_images", "plan_pca", "run_steps", "validate_outputs", "commit_outputs")


@dataclass
class PipelineRun:
    """One DAG run: the task functions the DAG calls, one `step()` per task, their results kept as XCom
    would (a failed task can be retried: `step()` runs it again with the same inputs)."""

    s3: Any
    config: RunConfig
    run_id: str
    start: datetime | None
    end: datetime | None
    run_after: datetime
    done: list[str] = field(default_factory=list)
    selection: RunSelection | None = None
    plan: PcaPlan | None = None
    summary: RunSummary | None = None
    commit: RunCommit | None = None
    skipped: bool = False
    failed: bool = False  # the last task failed (a retry or a clear may follow)
    cluster_s3: Any = None  # the client the stand-in jobs use (the cluster's role); None: s3

    @property
    def finished(self) -> bool:
        return self.skipped or len(self.done) == len(TASKS)

    @property
    def next_task(self) -> str:
        return TASKS[len(self.done)]

    def step(self) -> str:
        """Run the next task; on an exception the task stays next (Airflow's retry runs it again)."""
        task = self.next_task
        getattr(self, task)()
        self.done.append(task)
        return task

    def run(self, until: Callable[[str], bool] = lambda task: False) -> PipelineRun:
        while not self.finished and not until(self.next_task):
            self.step()
        return self

    def find_new_images(self) -> None:
        self.selection = selection.find_new_images(self.s3, self.config, self.start, self.end, self.run_after,
                                                   run_id=self.run_id)
        self.skipped = self.selection is None

    def plan_pca(self) -> None:
        self.plan = pca_plan.plan_run_pca(self.s3, self.config, self.selection)

    def run_steps(self) -> None:
        commits.ensure_uncommitted(self.s3, self.config, self.selection.paths)
        paths, jobs_s3 = self.selection.paths, self.cluster_s3 or self.s3
        featurize(jobs_s3, paths.output_uri, paths.manifest_uri)
        pca(jobs_s3, pca_plan.pca_arguments(self.config, paths, self.plan))

    def validate_outputs(self) -> None:
        self.summary = validation.validate_outputs(self.s3, self.config, self.selection, self.plan, None)

    def commit_outputs(self) -> None:
        self.commit = commits.commit_outputs(self.s3, self.config, self.selection, self.plan, self.summary, self.run_id)


def daily_run(s3, config: RunConfig, day: datetime, run_id: str | None = None) -> PipelineRun:
    """The scheduled run of the UTC day `day` (its interval [day, day + 1 day)), run after it ended."""
    from datetime import timedelta

    end = day + timedelta(days=1)
    return PipelineRun(s3, config, run_id or f"scheduled__{day.date().isoformat()}", day, end, end + timedelta(minutes=5))


def commit_candidates(s3, config: RunConfig, found: selection.Candidates, run_id: str = "test") -> PipelineRun:
    """Start an attempt for candidates a test selected (selection.event_images / interval_images) and
    play the rest of the run: plan, the stand-in jobs, validation, commit."""
    run = PipelineRun(s3, config, run_id, None, None, now_utc())
    run.selection = selection.start_attempt(s3, config, found, ledger.read_ledger(s3, config), run_id)
    run.skipped = run.selection is None
    run.done.append("find_new_images")
    return run.run()


# --- what a reader sees ---------------------------------------------------------------------------

def raw_versions(s3, config: RunConfig) -> dict[str, str]:
    """{image URI: current ETag} of the photos under the raw prefix."""
    from fruits_emr import coverage
    from spark_jobs.contract.model_choices import has_image_extension

    return {uri: raw.etag for uri, raw in coverage.raw_files(s3, config).items() if has_image_extension(uri)}


def committed_view(s3, config: RunConfig) -> list[tuple[str, str | None, str]]:
    """(image URI, ETag, 'features' | 'quarantine') of every row a reader of the corpus gets: the rows
    of the attempts the PCA pointer names, less the rows it retired; the ETag from the attempt's images.json."""
    pointer, _ = pca_pointer.read_pointer(s3, config)
    retired = pca_pointer.retired_rows(pointer)
    rows = []
    for date, output in sorted(pca_pointer.committed_attempts(s3, config, pointer).items()):
        versions = ledger.attempt_versions(s3, output)
        for kind in (FEATURES, QUARANTINE):
            for row in _read_parquet(s3, f"{output}/{kind}"):
                if row["path"] not in retired.get(date, {}):
                    rows.append((row["path"], versions.get(row["path"]), kind))
    return rows


def corpus_paths(s3, config: RunConfig) -> list[str]:
    """The image URIs of the reduced corpus as corpus.read_rows gives it to a downstream DAG."""
    from fruits_emr import corpus

    current = commits.reduced_corpus(s3, config)
    return sorted(corpus.read_rows(s3, current)["path"]) if current else []


def now_utc() -> datetime:
    return datetime.now(UTC)
