"""What each Python task of the fruits_features DAG does, one function per task.

The DAG file holds the wiring only: its task bodies pass the clients of the Airflow connection
and call one function here. `with_run_config` hands a body the run's RunConfig and turns the
errors a user can fix into one failed task (no retries) with the message naming the fix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowFailException

from fruits_emr import cost, events, layout, pca_plan, reconcile, storage
from fruits_emr.artifacts import StagedArtifacts
from fruits_emr.emr_request import job_flow_overrides, spark_steps
from fruits_emr.local import StepRejectedInput
from fruits_emr.settings import ConfigError, RunConfig, resolve_run_config, sse_arguments
from spark_jobs.run_files import PCA_MODEL_INFO
from spark_jobs.s3_uri import key_prefix
from spark_jobs.s3a import S3ConfigError

# errors whose message names the input to fix: a retry would fail the same way
USER_ERRORS = (ConfigError, storage.RunOutputError, S3ConfigError, StepRejectedInput)
Body = TypeVar("Body", bound=Callable[..., Any])


@contextmanager
def user_errors_fail_the_task() -> Iterator[None]:
    """A user error fails the task at once (AirflowFailException: no retries), with its message only."""
    try:
        yield
    except USER_ERRORS as exc:
        raise AirflowFailException(str(exc)) from None


def with_run_config(body: Body) -> Body:
    """Decorator of a task body whose first argument is resolve_config's XCom: the body receives
    it as a RunConfig, and a user error fails the task at once."""

    @functools.wraps(body)
    def run(config: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        with user_errors_fail_the_task():
            return body(RunConfig.from_dict(config), *args, **kwargs)

    return run  # type: ignore[return-value]


def resolve_config(
    params: Mapping[str, Any],
    parse_defaults: Mapping[str, Any],
    variable_defaults: Mapping[str, Any] | None,
    s3: Any,
    emr: Callable[[], Any] | None,
) -> dict[str, Any]:
    """Merge Params over the defaults Variable and check them, before anything costs money.

    emr: makes an EMR client to check the security configuration (None: local mode, no cluster)."""
    config, sources = resolve_run_config(params, parse_defaults, variable_defaults)
    storage.check_bucket(s3, config.bucket)
    if config.security_configuration and emr is not None:
        storage.check_security_configuration(emr(), config.security_configuration)
    for name, value in config.to_dict().items():
        print(f"{name:22} {value!r:40} ({sources[name]})")
    return config.to_dict()


def stage_artifacts(
    s3: Any, config: RunConfig, repo_root: Path, build_wheelhouse: storage.Builder | None
) -> dict[str, str]:
    """Job code, bootstrap, model or weights and node wheels in S3 under content hashes."""
    staged, uploaded = storage.stage_artifacts(s3, config, repo_root, build_wheelhouse)
    print(f"code bundle {staged.code_uri}; model {staged.model_artifact or staged.weights}: "
          + (f"uploaded {uploaded}" if uploaded else "already staged"))
    return staged.to_dict()


def find_new_images(
    s3: Any, config: RunConfig, data_interval_start: datetime | None, data_interval_end: datetime | None,
    run_after: datetime, event_batch: events.EventBatch | None = None,
) -> dict[str, Any] | None:
    """Write the manifest of the run's new files (and their versions, images.json) into a new attempt
    folder: those its S3 events name (event_batch: a run on the asset), else those of its data
    interval, less what a committed run already processed. Photos by name are featurized or
    quarantined, the other files ignored and listed in the report. The run's paths, file and photo
    counts, the photos' median size and the window, or None when there is no photo (no cluster for
    files that would all be ignored: the log names them)."""
    start, end, run_date = layout.run_window(data_interval_start, data_interval_end, run_after)
    if event_batch is None:
        found = events.interval_images(s3, config, start, end, run_date)
    else:
        found = events.event_images(s3, config, event_batch.bodies, event_batch.max_images, run_after)
        if found.requeue:
            event_batch.requeue(found.requeue)
    if found.skipped or found.requeue:
        print(f"left out: {found.skipped}; sent back to the queue: {len(found.requeue)}")
    photos = [uri for uri in found.images if layout.is_image_key(uri)]
    ignored = sorted(set(found.images) - set(photos))
    if not photos:
        print(f"No images under s3://{config.bucket}/{key_prefix(config.raw_prefix)} with {found.scope}: no cluster."
              + (f" {len(ignored)} files that are not photos, not processed: {ignored[:20]}" if ignored else ""))
        return None
    paths = layout.run_paths(config, found.run_date, layout.new_attempt_id(datetime.now(UTC)))
    storage.write_manifest(s3, paths, sorted(found.images), sse_arguments(config))
    events.write_images(s3, paths, found.images, sse_arguments(config))
    sizes = sorted(found.sizes[uri] for uri in photos if uri in found.sizes)
    median_bytes = sizes[len(sizes) // 2] if sizes else None
    print(f"{len(found.images)} files with {found.scope} -> {paths.manifest_uri}: {len(photos)} photos by name"
          f" (median {median_bytes} bytes), {len(ignored)} not photos (featurize lists them as ignored)")
    window = [start.isoformat(), end.isoformat()] if event_batch is None else None
    return {"paths": paths.to_dict(), "files": len(found.images), "images": len(photos), "median_bytes": median_bytes,
            "window": window}


def plan_pca(s3: Any, config: RunConfig, run: Mapping[str, Any]) -> dict[str, Any]:
    """Fit a new PCA model version (refit_pca, full_refresh, or no model yet) or apply the current one."""
    pointer = storage.read_pca_pointer(s3, config)
    committed = storage.committed_features(s3, config) if (config.refit_pca or not pointer) else {}
    plan = pca_plan.plan_pca(config, pointer, committed, run["paths"]["run_date"])
    if plan["fit"]:
        print(f"PCA: fit version {plan['version']} ({plan['reason']}) on this run's features and"
              f" {len(plan['corpus'])} committed run dates -> {plan['model']}")
    else:
        print(f"PCA: apply the current model {plan['version']} ({plan['model']}), no fit")
    return plan


def build_emr_request(
    config: RunConfig, staged: Mapping[str, str], run: Mapping[str, Any], pca: Mapping[str, Any],
    cluster_for: tuple[str, str] | None, price_overrides: Callable[[], Mapping[str, Any] | None],
    repo_root: Path,
) -> dict[str, Any]:
    """The RunJobFlow body, its cluster shape (chosen from the run's image count) and the steps of
    this run; cluster_for: (dag_id, run_id) of the cluster to request, None in local mode (no
    cluster: no overrides, no shape)."""
    paths = layout.RunPaths(**run["paths"])
    artifacts = StagedArtifacts.from_dict(staged)
    steps = spark_steps(config, paths, artifacts, pca)
    if cluster_for is None:
        return {"job_flow_overrides": None, "steps": steps, "cluster_shape": None}
    shape, reason = cost.choose_shape(config, run["images"], cost.merge_prices(price_overrides()),
                                      lambda: cost.load_cost_model(repo_root / cost.BENCH_RESULTS, run.get("median_bytes")))
    print(f"cluster shape {shape}: {reason}")
    overrides = job_flow_overrides(config, paths, artifacts, *cluster_for, shape)
    return {"job_flow_overrides": overrides, "steps": steps, "cluster_shape": shape}


def validate_outputs(
    s3: Any, config: RunConfig, run: Mapping[str, Any], pca: Mapping[str, Any], cluster_id: str | None,
    emr: Callable[[], Any], price_overrides: Callable[[], Mapping[str, Any] | None], shape: str | None = None,
) -> dict[str, Any]:
    """The run's summary (counts, PCA model, cluster hours and cost); RunOutputError unless the
    outputs reconcile with the manifest and the PCA plan."""
    paths = layout.RunPaths(**run["paths"])
    report = storage.read_report(s3, paths)
    problems = (reconcile.reconcile(report, run["files"], run["images"], storage.attempt_entries(s3, paths))
                + reconcile.pca_problems(report, pca))
    if pca["fit"] and not storage.pca_model_written(s3, pca["model"]):
        problems.append(f"the fitted PCA model {pca['model']} is incomplete (no {PCA_MODEL_INFO})")

    if cluster_id:
        timeline = emr().describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["Timeline"]
        ended = timeline.get("EndDateTime") or datetime.now(UTC)
        prices = cost.merge_prices(price_overrides())
        estimate = cost.estimate_cost(config, timeline["CreationDateTime"], ended, prices, shape or cost.CLUSTER)
    else:
        estimate = cost.CostEstimate(hours=0.0, usd=0.0, lines=["local Spark, no cluster"])

    summary = {
        "output": paths.output_uri,
        "files": run["files"],
        "images": run["images"],
        "features_rows": report.get("features_rows"),
        "quarantined": report.get("quarantined"),
        "quarantine_reasons": report.get("quarantine_reasons", {}),
        "ignored": report.get("ignored"),
        "ignored_kinds": report.get("ignored_kinds", {}),
        "k": report.get("k"),
        "variance_target": report.get("variance_target"),
        "pca_model": report.get("pca_model"),
        "pca_fitted": report.get("pca_fitted"),
        "pca_fit_rows": report.get("pca_fit_rows"),
        "pca_corpus": report.get("pca_corpus") or [],
        "cluster_id": cluster_id,
        "cluster_shape": shape,
        "cluster_hours": round(estimate.hours, 4),
        "estimated_cost_usd": estimate.usd,
        "unpriced_instance_types": estimate.unpriced,
    }
    print(
        f"run {paths.run_date}: {run['files']} files -> {summary['features_rows']} featurized,"
        f" {summary['quarantined']} quarantined {summary['quarantine_reasons']}, {summary['ignored']} ignored"
        f" (not photos: {summary['ignored_kinds']}, listed in report.json), PCA k={summary['k']}"
        f" ({'fitted' if summary['pca_fitted'] else 'applied'} model {summary['pca_model']})"
        f" | cluster {cluster_id} {estimate.hours:.2f} h, estimated ${estimate.usd:.2f} ({'; '.join(estimate.lines)})"
        + (f" | no price for {estimate.unpriced}: set Variable {cost.PRICES_VARIABLE}" if estimate.unpriced else "")
    )
    if problems:
        raise storage.RunOutputError(f"Outputs in {paths.output_uri} do not reconcile: " + "; ".join(problems))
    return summary


def commit_outputs(
    s3: Any, config: RunConfig, run: Mapping[str, Any], pca: Mapping[str, Any], summary: Mapping[str, Any],
    run_id: str,
) -> dict[str, Any]:
    """Publish the validated attempt: replace the run date's commit pointer, drop attempts nobody reads,
    then point the PCA pointer at this run's reduced rows (and, after a fit, at the new version)."""
    paths = layout.RunPaths(**run["paths"])
    now = datetime.now(UTC)
    record = layout.commit_record(paths, summary, run_id, now)
    sse = sse_arguments(config)
    previous, deleted = storage.commit_run(s3, paths, record, sse)
    pointer = storage.read_pca_pointer(s3, config)
    storage.commit_pca(s3, config, layout.pca_pointer_record(pointer, pca, paths, summary, run_id, now),
                       pca["previous_number"] if pca["fit"] else pca["number"], sse)
    print(f"committed {paths.output_uri} as run {paths.run_date} ({paths.commit_uri});"
          f" previous attempt {previous or 'none'}, deleted {deleted} objects of older attempts;"
          f" PCA model {pca['version']} is current")
    return record
