"""
### fruits_features: image features and PCA on a transient EMR cluster

Daily, for the images that landed in `s3://<bucket>/<raw_prefix>` during the run's data interval
(all images with `full_refresh`), and, with FRUITS_EVENTS_QUEUE_URL set, minutes after a burst of
uploads for the images its S3 events name (docs/events.md), runs the Spark jobs `featurize` and
`pca` on an EMR 7.x cluster created for the run and always terminated afterwards, then checks the
run's `report.json`.

`resolve_config` → `stage_artifacts` → `find_new_images` (no images: everything after it is
skipped, no cluster) → `plan_pca` (fit a new PCA model version, or apply the current one) → `emr_request` → `create_cluster` → `add_steps` → `watch_featurize` →
`watch_pca` → `terminate_cluster` (teardown: runs after success, failure, timeout or kill) →
`validate_outputs` → `commit_outputs`.

With `FRUITS_COMPUTE_MODE=local` (the docker-compose stack) `create_cluster` … `terminate_cluster`
are replaced by `run_steps_locally`: the same EMR steps, run by `spark-submit --master local[*,4]`
on the worker, reading and writing S3 through S3A (the server from FRUITS_S3_ENDPOINT).

Outputs: each attempt writes to `s3://<bucket>/<output_prefix>run_date=YYYY-MM-DD/_attempts/<id>/`,
which no reader looks at; `commit_outputs` then points `run_date=YYYY-MM-DD/_COMMITTED.json` at it
(one PUT: the run date's outputs change at once, and a failed run changes nothing readers see),
then the PCA pointer `<output_prefix>_pca_models/_CURRENT.json` (current model version, and per run
date its reduced rows in that model's space; docs/pca.md).
Every object is written with server-side encryption (SSE-S3, or SSE-KMS with `kms_key_id`).
Params, Variables, IAM and S3 layout: see the README.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator, EmrCreateJobFlowOperator
from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, Param, Variable, chain, dag, task
from airflow.sdk.exceptions import AirflowFailException

from fruits_emr import config as emr
from fruits_emr import events, storage
from fruits_emr.operators import EmrStepSensorWithLogs, EmrTerminateRunClusters

# Parse-time settings come from the environment only (no Variable or AWS calls while parsing).
COMPUTE_MODE = os.environ.get("FRUITS_COMPUTE_MODE", "emr").strip().lower()
if COMPUTE_MODE not in ("emr", "local"):
    raise ValueError(f"FRUITS_COMPUTE_MODE={COMPUTE_MODE!r}: use 'emr' (transient EMR cluster) or 'local'.")
LOCAL_MASTER = os.environ.get("FRUITS_LOCAL_MASTER", "local[*,4]")  # 4 attempts per task, as on EMR
LOCAL_DRIVER_MEMORY = os.environ.get("FRUITS_LOCAL_DRIVER_MEMORY", "2g")
LOCAL_WORKDIR = os.environ.get("FRUITS_LOCAL_WORKDIR") or None  # None: the system temp folder
REPO_ROOT = Path(os.environ.get("FRUITS_REPO_ROOT") or Path(__file__).resolve().parents[1])
AWS_CONN_ID = os.environ.get("FRUITS_AWS_CONN_ID", "aws_default")
DEFERRABLE = os.environ.get("FRUITS_DEFERRABLE", "false").strip().lower() in ("1", "true", "yes")
SENSOR_MODE = os.environ.get("FRUITS_SENSOR_MODE", "reschedule")
POKE_SECONDS = float(os.environ.get("FRUITS_POKE_SECONDS", "60"))
STEP_TIMEOUT = timedelta(hours=float(os.environ.get("FRUITS_STEP_TIMEOUT_HOURS", "4")))
RETRY_DELAY = timedelta(minutes=float(os.environ.get("FRUITS_RETRY_DELAY_MINUTES", "5")))
PARSE_DEFAULTS = emr.parse_time_defaults(os.environ)
EVENTS = events.EventSettings.from_environ(os.environ, AWS_CONN_ID)  # None: daily schedule only
DAILY = CronDataIntervalTimetable("@daily", timezone="UTC")

DEFAULT_ARGS = {
    "owner": "data-eng",
    "retries": 2,
    "retry_delay": RETRY_DELAY,
    "retry_exponential_backoff": True,
}
STEP_SENSOR_ARGS = {
    "aws_conn_id": AWS_CONN_ID,
    "deferrable": DEFERRABLE,
    "mode": SENSOR_MODE,
    "poke_interval": POKE_SECONDS,
    "timeout": STEP_TIMEOUT.total_seconds(),
    "max_attempts": max(1, int(STEP_TIMEOUT.total_seconds() // POKE_SECONDS)),
}


def _s3() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()


def _sqs() -> Any:
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook

    return SqsHook(aws_conn_id=AWS_CONN_ID).get_conn()


def _emr() -> Any:
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    return EmrHook(aws_conn_id=AWS_CONN_ID, emr_conn_id=None).get_conn()


def _json_variable(key: str) -> Any:
    try:
        return Variable.get(key, default=None, deserialize_json=True)
    except ValueError as exc:
        raise AirflowFailException(f"Variable {key} is not valid JSON ({exc}); fix it in Admin > Variables.") from None


@task
def resolve_config(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge Params over the defaults Variable and check them, before anything costs money."""
    try:
        config, sources = emr.resolve_run_config(params or {}, PARSE_DEFAULTS, _json_variable(emr.DEFAULTS_VARIABLE))
        storage.check_bucket(_s3(), config.bucket)
        if config.security_configuration and COMPUTE_MODE == "emr":
            storage.check_security_configuration(_emr(), config.security_configuration)
    except emr.ConfigError as exc:
        raise AirflowFailException(str(exc)) from None
    for name, value in config.to_dict().items():
        print(f"{name:22} {value!r:40} ({sources[name]})")
    return config.to_dict()


@task
def stage_artifacts(config: dict[str, Any]) -> dict[str, str]:
    """Job code, bootstrap and weights in S3 under content hashes; unchanged content is not uploaded again."""
    try:
        # the local compute mode installs nothing on nodes: no wheelhouse
        wheels = storage.wheelhouse.build_wheelhouse if COMPUTE_MODE == "emr" else None
        staged, uploaded = storage.stage_artifacts(_s3(), emr.RunConfig.from_dict(config), REPO_ROOT, wheels)
    except emr.ConfigError as exc:
        raise AirflowFailException(str(exc)) from None
    print(f"code bundle {staged.code_uri}; model {staged.model_artifact or staged.weights}: "
          + (f"uploaded {uploaded}" if uploaded else "already staged"))
    return staged.to_dict()


@task.short_circuit
def find_new_images(
    config: dict[str, Any],
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
    dag_run: Any = None,
    params: dict[str, Any] | None = None,
    triggering_asset_events: Any = None,
) -> dict[str, Any] | None:
    """Write the manifest of the run's new images into a new attempt folder: those its S3 events name
    (a run on the asset), else those of its data interval; images a committed run already processed
    are left out. None means the rest of the run is skipped (no cluster)."""
    run_config = emr.RunConfig.from_dict(config)
    run_after = getattr(dag_run, "run_after", None) or datetime.now(timezone.utc)
    start, end, run_date = emr.run_window(data_interval_start, data_interval_end, run_after)
    s3 = _s3()
    if events.is_event_run(dag_run):
        bodies = events.message_bodies(triggering_asset_events)
        found = events.event_images(s3, run_config, bodies, int((params or {})["event_max_images"]), run_after)
        if found.requeue:
            events.requeue(_sqs(), EVENTS.queue_url, found.requeue)
    else:
        found = events.interval_images(s3, run_config, start, end, run_date)
    if found.skipped or found.requeue:
        print(f"left out: {found.skipped}; sent back to the queue: {len(found.requeue)}")
    if not found.images:
        print(f"No images under s3://{run_config.bucket}/{emr.prefix(run_config.raw_prefix)} with {found.scope}: no cluster.")
        return None
    paths = emr.run_paths(run_config, found.run_date, emr.new_attempt_id(datetime.now(timezone.utc)))
    storage.write_manifest(s3, paths, sorted(found.images), emr.sse_arguments(run_config))
    events.write_images(s3, paths, found.images, emr.sse_arguments(run_config))
    print(f"{len(found.images)} images with {found.scope} -> {paths.manifest_uri}")
    window = None if events.is_event_run(dag_run) else [start.isoformat(), end.isoformat()]
    return {"paths": paths.to_dict(), "images": len(found.images), "window": window}


@task
def plan_pca(config: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Fit a new PCA model version (refit_pca, full_refresh, or no model yet) or apply the current one."""
    run_config = emr.RunConfig.from_dict(config)
    s3 = _s3()
    pointer = storage.read_pca_pointer(s3, run_config)
    committed = storage.committed_features(s3, run_config) if (run_config.refit_pca or not pointer) else {}
    plan = emr.plan_pca(run_config, pointer, committed, run["paths"]["run_date"])
    if plan["fit"]:
        print(f"PCA: fit version {plan['version']} ({plan['reason']}) on this run's features and"
              f" {len(plan['corpus'])} committed run dates -> {plan['model']}")
    else:
        print(f"PCA: apply the current model {plan['version']} ({plan['model']}), no fit")
    return plan


@task(multiple_outputs=True)
def emr_request(
    config: dict[str, Any], staged: dict[str, str], run: dict[str, Any], pca: dict[str, Any], dag_run: Any = None
) -> dict[str, Any]:
    """The RunJobFlow body (EMR mode: the local mode starts no cluster and stages no wheelhouse)
    and the steps, built from this run's config and PCA plan."""
    run_config = emr.RunConfig.from_dict(config)
    paths = emr.RunPaths(**run["paths"])
    artifacts = emr.StagedArtifacts.from_dict(staged)
    overrides = None
    if COMPUTE_MODE == "emr":
        overrides = emr.job_flow_overrides(run_config, paths, artifacts, dag_run.dag_id, dag_run.run_id)
    return {"job_flow_overrides": overrides, "steps": emr.spark_steps(run_config, paths, artifacts, pca)}


@task
def run_steps_locally(config: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Local compute mode: the EMR steps themselves, arguments unchanged, by spark-submit
    --master local[*,4] on this worker; Spark reads and writes S3 itself (S3A, FRUITS_S3_ENDPOINT)."""
    from fruits_emr import local
    from spark_jobs.s3a import S3ConfigError

    try:
        s3_conf = local.step_s3_conf(emr.sse_arguments(emr.RunConfig.from_dict(config)))
    except S3ConfigError as exc:
        raise AirflowFailException(str(exc)) from None
    spark_submit, env = local.spark_submit_path(), local.spark_env()
    workdir = tempfile.mkdtemp(prefix="fruits-local-", dir=LOCAL_WORKDIR)  # Spark's scratch files
    try:
        for step in steps:
            name, args = step["Name"], step["HadoopJarStep"]["Args"]
            command = emr.local_step_command(args, spark_submit, s3_conf, LOCAL_MASTER, LOCAL_DRIVER_MEMORY)
            print(f"$ {shlex.join(command)}", flush=True)
            returncode, _ = local.run_streaming(command, env, cwd=workdir)
            if returncode == 2:  # the jobs' exit code for unusable input: retrying cannot help
                raise AirflowFailException(f"step {name} rejected its input (exit 2); its message is above.")
            if returncode != 0:
                raise RuntimeError(f"step {name} failed with exit code {returncode}; its output is above.")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"steps": [step["Name"] for step in steps]}


@task
def validate_outputs(
    config: dict[str, Any], run: dict[str, Any], pca: dict[str, Any], cluster_id: str | None = None
) -> dict[str, Any]:
    """Fail unless manifest images = features + quarantined, all outputs exist and the PCA step did what
    the plan said (fit: the new model folder is complete); log counts and cost."""
    run_config = emr.RunConfig.from_dict(config)
    paths = emr.RunPaths(**run["paths"])
    s3 = _s3()
    try:
        report = storage.read_report(s3, paths)
    except storage.RunOutputError as exc:
        raise AirflowFailException(str(exc)) from None
    problems = emr.reconcile(report, run["images"], storage.attempt_entries(s3, paths)) + emr.pca_problems(report, pca)
    if pca["fit"] and not storage.pca_model_written(s3, pca["model"]):
        problems.append(f"the fitted PCA model {pca['model']} is incomplete (no {emr.PCA_MODEL_INFO})")

    if cluster_id:
        timeline = _emr().describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["Timeline"]
        ended = timeline.get("EndDateTime") or datetime.now(timezone.utc)
        try:
            prices = emr.merge_prices(_json_variable(emr.PRICES_VARIABLE))
        except emr.ConfigError as exc:
            raise AirflowFailException(str(exc)) from None
        cost = emr.estimate_cost(run_config, timeline["CreationDateTime"], ended, prices)
    else:
        cost = emr.CostEstimate(hours=0.0, usd=0.0, lines=["local Spark, no cluster"])

    summary = {
        "output": paths.output_uri,
        "images": run["images"],
        "features_rows": report.get("features_rows"),
        "quarantined": report.get("quarantined"),
        "quarantine_reasons": report.get("quarantine_reasons", {}),
        "k": report.get("k"),
        "variance_target": report.get("variance_target"),
        "pca_model": report.get("pca_model"),
        "pca_fitted": report.get("pca_fitted"),
        "pca_fit_rows": report.get("pca_fit_rows"),
        "pca_corpus": report.get("pca_corpus") or [],
        "cluster_id": cluster_id,
        "cluster_hours": round(cost.hours, 4),
        "estimated_cost_usd": cost.usd,
        "unpriced_instance_types": cost.unpriced,
    }
    print(
        f"run {paths.run_date}: {run['images']} images -> {summary['features_rows']} featurized,"
        f" {summary['quarantined']} quarantined {summary['quarantine_reasons']}, PCA k={summary['k']}"
        f" ({'fitted' if summary['pca_fitted'] else 'applied'} model {summary['pca_model']})"
        f" | cluster {cluster_id} {cost.hours:.2f} h, estimated ${cost.usd:.2f} ({'; '.join(cost.lines)})"
        + (f" | no price for {cost.unpriced}: set Variable {emr.PRICES_VARIABLE}" if cost.unpriced else "")
    )
    if problems:
        raise AirflowFailException(f"Outputs in {paths.output_uri} do not reconcile: " + "; ".join(problems))
    return summary


@task
def commit_outputs(
    config: dict[str, Any], run: dict[str, Any], pca: dict[str, Any], summary: dict[str, Any], dag_run: Any = None
) -> dict[str, Any]:
    """Publish the validated attempt: replace the run date's commit pointer, drop attempts nobody reads,
    then point the PCA pointer at this run's reduced rows (and, after a fit, at the new version)."""
    run_config = emr.RunConfig.from_dict(config)
    paths = emr.RunPaths(**run["paths"])
    run_id, now = (dag_run.run_id if dag_run else ""), datetime.now(timezone.utc)
    record = emr.commit_record(paths, summary, run_id, now)
    s3, sse = _s3(), emr.sse_arguments(run_config)
    try:
        previous, deleted = storage.commit_run(s3, paths, record, sse)
        pointer = storage.read_pca_pointer(s3, run_config)
        storage.commit_pca(s3, run_config, emr.pca_pointer_record(pointer, pca, paths, summary, run_id, now),
                           pca["previous_number"] if pca["fit"] else pca["number"], sse)
    except storage.RunOutputError as exc:
        raise AirflowFailException(str(exc)) from None
    print(f"committed {paths.output_uri} as run {paths.run_date} ({paths.commit_uri});"
          f" previous attempt {previous or 'none'}, deleted {deleted} objects of older attempts;"
          f" PCA model {pca['version']} is current")
    return record


@dag(
    dag_id=emr.DAG_ID,
    schedule=AssetOrTimeSchedule(timetable=DAILY, assets=events.asset(EVENTS)) if EVENTS else DAILY,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["fruits", "emr", "spark", "features"],
    doc_md=__doc__,
    params={name: Param(**spec) for name, spec in {**emr.param_specs(PARSE_DEFAULTS), **events.param_specs(EVENTS)}.items()},
)
def fruits_features() -> None:
    config = resolve_config()
    staged = stage_artifacts(config)
    run = find_new_images(config)
    pca = plan_pca(config, run)
    request = emr_request(config, staged, run, pca)
    if COMPUTE_MODE == "local":
        validate = validate_outputs(config, run, pca)
        chain(staged, run, pca, request, run_steps_locally(config, request["steps"]), validate,
              commit_outputs(config, run, pca, validate))
        return

    create_cluster = EmrCreateJobFlowOperator(
        task_id="create_cluster",
        job_flow_overrides=request["job_flow_overrides"],
        aws_conn_id=AWS_CONN_ID,
        emr_conn_id=None,
    )
    add_steps = EmrAddStepsOperator(
        task_id="add_steps",
        job_flow_id=create_cluster.output,
        steps=request["steps"],
        aws_conn_id=AWS_CONN_ID,
    )
    watch_featurize = EmrStepSensorWithLogs(
        task_id="watch_featurize",
        job_flow_id=create_cluster.output,
        step_id="{{ ti.xcom_pull(task_ids='add_steps')[0] }}",
        **STEP_SENSOR_ARGS,
    )
    watch_pca = EmrStepSensorWithLogs(
        task_id="watch_pca",
        job_flow_id=create_cluster.output,
        step_id="{{ ti.xcom_pull(task_ids='add_steps')[1] }}",
        **STEP_SENSOR_ARGS,
    )
    terminate_cluster = EmrTerminateRunClusters(
        task_id="terminate_cluster",
        job_flow_id=create_cluster.output,
        aws_conn_id=AWS_CONN_ID,
    ).as_teardown(setups=create_cluster)
    validate = validate_outputs(config, run, pca, create_cluster.output)

    chain(staged, run, pca, request, create_cluster, add_steps, watch_featurize, watch_pca, terminate_cluster, validate,
          commit_outputs(config, run, pca, validate))
    # the teardown succeeding must not let validate run after a failed step
    watch_pca >> validate


fruits_features()
