"""The validate_outputs task: a finished run's counts reconcile with its manifest, its outputs exist,
the PCA step did what the plan said, and what its cluster cost; the run's summary."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from fruits_emr import cost
from fruits_emr.layout import RunPaths
from fruits_emr.s3_objects import RunOutputError, list_objects, object_exists
from fruits_emr.settings import RunConfig
from fruits_emr.task_records import PcaPlan, RunSelection, RunSummary
from spark_jobs.contract.run_files import PCA_MODEL_INFO, QUARANTINE, REQUIRED_OUTPUTS
from spark_jobs.contract.s3_uri import is_not_found, split_s3_uri

log = logging.getLogger(__name__)


def reconcile(report: Mapping[str, Any], manifest_files: int, manifest_images: int, present_keys: set[str]) -> list[str]:
    """Problems with a run's outputs: counts that do not add up (every manifest entry featurized,
    quarantined or ignored; every photo by name featurized or quarantined), missing outputs. Empty
    when all is well."""
    problems = [f"output {name} is missing" for name in REQUIRED_OUTPUTS if name not in present_keys]
    names = ("files_seen", "images_seen", "features_rows", "quarantined", "ignored")
    try:
        files, seen, rows, quarantined, ignored = (int(report[k]) for k in names)
    except (KeyError, TypeError, ValueError) as exc:
        return [*problems, f"report.json lacks a count ({exc!r})"]
    if files != manifest_files:
        problems.append(f"report says {files} files seen, the manifest lists {manifest_files}")
    if seen != manifest_images:
        problems.append(f"report says {seen} images seen, the manifest lists {manifest_images} photos by name")
    if rows + quarantined + ignored != manifest_files:
        problems.append(
            f"features ({rows}) + quarantined ({quarantined}) + ignored ({ignored}) = {rows + quarantined + ignored},"
            f" not the {manifest_files} files of the manifest"
        )
    if rows + quarantined != manifest_images:
        problems.append(
            f"features ({rows}) + quarantined ({quarantined}) = {rows + quarantined},"
            f" not the {manifest_images} photos of the manifest"
        )
    return problems


def pca_problems(report: Mapping[str, Any], plan: PcaPlan) -> list[str]:
    """What in the report contradicts the run's PCA plan. Empty when all is well."""
    problems = []
    if report.get("pca_fitted") is not plan.fit:
        problems.append(f"report says pca_fitted={report.get('pca_fitted')}, the run planned fit={plan.fit}")
    if report.get("pca_model") != plan.version:
        problems.append(f"report names PCA model {report.get('pca_model')!r}, the run planned {plan.version!r}")
    if plan.fit and len(report.get("pca_corpus") or []) != len(plan.corpus):
        problems.append(f"{len(report.get('pca_corpus') or [])} corpus dates re-projected, {len(plan.corpus)} planned")
    return problems


# --- what the run wrote ----------------------------------------------------------------------------

def attempt_entries(s3: Any, paths: RunPaths) -> set[str]:
    """Top-level names in the attempt's folder: 'features/', 'report.json', ..."""
    entries = set()
    for obj in list_objects(s3, paths.bucket, paths.attempt_key):
        relative = obj["Key"][len(paths.attempt_key):]
        head, slash, _ = relative.partition("/")
        entries.add(head + slash)
    return entries


def read_report(s3: Any, paths: RunPaths) -> dict[str, Any]:
    try:
        body = s3.get_object(Bucket=paths.bucket, Key=paths.report_key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            raise RunOutputError(f"{paths.report_uri} is missing: the pca step wrote no report.") from None
        raise
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise RunOutputError(f"{paths.report_uri} is not JSON ({exc}).") from None


def quarantine_paths(s3: Any, output_uri: str) -> list[str]:
    """The `path` column of an attempt's quarantine/ Parquet files (small: broken inputs only)."""
    import pyarrow.parquet as pq

    bucket, key = split_s3_uri(f"{output_uri.rstrip('/')}/{QUARANTINE}/")
    paths: list[str] = []
    for obj in list_objects(s3, bucket, key):
        if obj["Key"].endswith(".parquet"):
            table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()),
                                  columns=["path"])
            paths += [str(path) for path in table.column("path").to_pylist()]
    return paths


def pca_model_written(s3: Any, model_uri: str) -> bool:
    """True when a fit finished writing the model folder (its info file is written last)."""
    bucket, key = split_s3_uri(f"{model_uri.rstrip('/')}/{PCA_MODEL_INFO}")
    return object_exists(s3, bucket, key)


# --- the task --------------------------------------------------------------------------------------

def validate_outputs(
    s3: Any, config: RunConfig, run: RunSelection, plan: PcaPlan, prices: Mapping[str, Any] | None,
    cluster_id: str | None = None, emr: Any = None, shape: str | None = None,
) -> RunSummary:
    """The run's summary (counts, PCA model, cluster hours and cost); RunOutputError unless the
    outputs reconcile with the manifest and the PCA plan. prices: the price Variable's overrides;
    cluster_id and emr: the run's cluster and an EMR client (None in local mode)."""
    paths = run.paths
    report = read_report(s3, paths)
    problems = reconcile(report, run.files, run.images, attempt_entries(s3, paths)) + pca_problems(report, plan)
    if plan.fit and not pca_model_written(s3, plan.model):
        problems.append(f"the fitted PCA model {plan.model} is incomplete (no {PCA_MODEL_INFO})")

    if cluster_id:
        timeline = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["Timeline"]
        ended = timeline.get("EndDateTime") or datetime.now(UTC)
        estimate = cost.estimate_cost(config, timeline["CreationDateTime"], ended, cost.merge_prices(prices),
                                      shape or cost.CLUSTER)
    else:
        estimate = cost.CostEstimate(hours=0.0, usd=0.0, lines=["local Spark, no cluster"])
    log.info(
        "run %s: %d files -> %s featurized, %s quarantined %s, %s ignored (not photos: %s, listed in report.json),"
        " PCA k=%s (%s model %s) | cluster %s %.2f h, estimated $%.2f (%s)%s", paths.run_date, run.files,
        report.get("features_rows"), report.get("quarantined"), report.get("quarantine_reasons", {}),
        report.get("ignored"), report.get("ignored_kinds", {}), report.get("k"),
        "fitted" if report.get("pca_fitted") else "applied",
        report.get("pca_model"), cluster_id, estimate.hours, estimate.usd, "; ".join(estimate.lines),
        f" | no price for {estimate.unpriced}: set Variable {cost.PRICES_VARIABLE}" if estimate.unpriced else "",
    )
    if problems:
        raise RunOutputError(f"Outputs in {paths.output_uri} do not reconcile: " + "; ".join(problems))
    summary = RunSummary(
        output=paths.output_uri,
        files=run.files,
        images=run.images,
        features_rows=int(report["features_rows"]),
        quarantined=int(report["quarantined"]),
        quarantine_reasons=dict(report.get("quarantine_reasons") or {}),
        ignored=int(report["ignored"]),
        ignored_kinds=dict(report.get("ignored_kinds") or {}),
        k=int(report["k"]),
        variance_target=report.get("variance_target"),
        pca_model=str(report["pca_model"]),
        pca_fitted=bool(report["pca_fitted"]),
        pca_fit_rows=report.get("pca_fit_rows"),
        pca_corpus=list(report.get("pca_corpus") or []),
        cluster_id=cluster_id,
        cluster_shape=shape,
        cluster_hours=round(estimate.hours, 4),
        estimated_cost_usd=estimate.usd,
        unpriced_instance_types=list(estimate.unpriced),
    )
    return summary
