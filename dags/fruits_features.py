"""
### fruits_features: image features and PCA on a transient EMR cluster

Daily, for every image under `s3://<bucket>/<raw_prefix>` that no committed run processed and that is
stamped before the end of the run's data interval (all images with `full_refresh`; every image exactly
once whatever happens: docs/reliability.md), and, with FRUITS_EVENTS_QUEUE_URL set, minutes after a
burst of uploads for the images its S3 events name (docs/events.md), runs the Spark jobs `featurize` and
`pca` on an EMR 7.x cluster created for the run and always terminated afterwards, then checks the
run's `report.json`.

`resolve_config` → `stage_artifacts` → `find_new_images` (no images: everything after it is
skipped, no cluster) → `plan_pca` (fit a new PCA model version, or apply the current one) → `emr_request`
(the cluster's shape from the day's image count, `cluster_shape`; docs/cost.md) → `create_cluster` → `add_steps` → `watch_featurize` →
`watch_pca` → `terminate_cluster` (teardown: runs after success, failure, timeout or kill, also of
`create_cluster`, and ends every cluster tagged with the run) → `validate_outputs` → `commit_outputs`.
A retry of `create_cluster` or `add_steps` first looks for the cluster or steps an earlier try made
(lost response, killed worker): one cluster and one featurize/pca pair per run. The step sensors
are deferrable with Airflow's `[operators] default_deferrable` (they then wait in the triggerer).

With `FRUITS_COMPUTE_MODE=local` (the docker-compose stack) `create_cluster` … `terminate_cluster`
are replaced by `run_steps_locally`: the same EMR steps, run by `spark-submit --master local[*,4]`
on the worker, reading and writing S3 through S3A (the server from FRUITS_S3_ENDPOINT).

Outputs: each attempt writes to `s3://<bucket>/<output_prefix>run_date=YYYY-MM-DD/_attempts/<id>/`,
which no reader looks at; `commit_outputs` then points the PCA pointer
`<output_prefix>_pca_models/_CURRENT.json` (current model version, and per run date its attempt and
reduced rows in that model's space; docs/pca.md) at it, then `run_date=YYYY-MM-DD/_COMMITTED.json`,
each with one S3 conditional write (the outputs change at once, a failed run changes nothing readers
see, and two runs committing at once merge or the later fails with what to do). Its success is an event of the asset
`fruits_reduced_corpus`, which downstream DAGs are scheduled on (docs/downstream.md; example:
`fruits_corpus_check`). A failed run sends one alert (docs/dag.md#failure-alerts).
Every object is written with server-side encryption (SSE-S3, or SSE-KMS with `kms_key_id`).
Params, Variables and S3 layout: docs/dag.md in the repository; IAM: docs/security.md.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import (
    AssetOrTimeSchedule,
    CronDataIntervalTimetable,
    Param,
    TriggerRule,
    Variable,
    chain,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowFailException

from fruits_emr import (
    alerts,
    commits,
    corpus,
    emr_request,
    events,
    lineage,
    local_steps,
    pca_plan,
    preflight,
    selection,
    settings,
    staging,
    validation,
    wheelhouse,
)
from fruits_emr.artifacts import StagedArtifacts
from fruits_emr.cost import PRICES_VARIABLE
from fruits_emr.operators import EmrAddRunSteps, EmrCreateRunCluster, EmrStepSensorWithLogs, EmrTerminateRunClusters
from fruits_emr.params import param_specs
from fruits_emr.settings import RunConfig
from fruits_emr.task_io import task_body
from fruits_emr.task_records import EmrRequest, PcaPlan, RunCommit, RunSelection, RunSummary

# Parse-time settings come from the environment only (no Variable or AWS calls while parsing).
COMPUTE_MODE = os.environ.get("FRUITS_COMPUTE_MODE", "emr").strip().lower()
if COMPUTE_MODE not in ("emr", "local"):
    raise ValueError(f"FRUITS_COMPUTE_MODE={COMPUTE_MODE!r}: use 'emr' (transient EMR cluster) or 'local'.")
LOCAL_MASTER = os.environ.get("FRUITS_LOCAL_MASTER", "local[*,4]")  # 4 attempts per task, as on EMR
LOCAL_DRIVER_MEMORY = os.environ.get("FRUITS_LOCAL_DRIVER_MEMORY", "2g")
LOCAL_WORKDIR = os.environ.get("FRUITS_LOCAL_WORKDIR") or None  # None: the system temp folder
REPO_ROOT = Path(os.environ.get("FRUITS_REPO_ROOT") or Path(__file__).resolve().parents[1])
AWS_CONN_ID = os.environ.get("FRUITS_AWS_CONN_ID", "aws_default")
# Airflow's switch for every operator that can defer; FRUITS_DEFERRABLE, if set, for this DAG's sensors only
DEFERRABLE = (os.environ["FRUITS_DEFERRABLE"].strip().lower() in ("1", "true", "yes") if "FRUITS_DEFERRABLE" in os.environ
              else conf.getboolean("operators", "default_deferrable", fallback=False))
SENSOR_MODE = os.environ.get("FRUITS_SENSOR_MODE", "reschedule")
POKE_SECONDS = float(os.environ.get("FRUITS_POKE_SECONDS", "60"))
STEP_TIMEOUT = timedelta(hours=float(os.environ.get("FRUITS_STEP_TIMEOUT_HOURS", "4")))
RETRY_DELAY = timedelta(minutes=float(os.environ.get("FRUITS_RETRY_DELAY_MINUTES", "5")))
PARSE_DEFAULTS = settings.parse_time_defaults(os.environ)
EVENTS = events.EventSettings.from_environ(os.environ, AWS_CONN_ID)  # None: daily schedule only
LINEAGE = lineage.enabled()  # the openlineage provider has a transport (docs/lineage.md)
DAILY = CronDataIntervalTimetable("@daily", timezone="UTC")

DEFAULT_ARGS = {
    "owner": "data-eng",
    "retries": 2,
    "retry_delay": RETRY_DELAY,
    "retry_exponential_backoff": True,
    "on_failure_callback": alerts.record_failure_reason,  # the reason the run's failure alert names
}
STEP_SENSOR_ARGS = {
    "aws_conn_id": AWS_CONN_ID,
    "deferrable": DEFERRABLE,
    "mode": SENSOR_MODE,
    "poke_interval": POKE_SECONDS,
    "timeout": STEP_TIMEOUT.total_seconds(),
    "max_attempts": max(1, int(STEP_TIMEOUT.total_seconds() // POKE_SECONDS)),
}


def _s3_hook() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=AWS_CONN_ID)


def _s3() -> Any:
    return _s3_hook().get_conn()


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


def _prices_variable() -> Any:
    return _json_variable(PRICES_VARIABLE)


@task
@task_body
def resolve_config(params: dict[str, Any] | None = None) -> RunConfig:
    """Merge Params over the defaults Variable and check them, before anything costs money."""
    return preflight.checked_run_config(params or {}, PARSE_DEFAULTS, _json_variable(settings.DEFAULTS_VARIABLE),
                                        _s3(), _emr() if COMPUTE_MODE == "emr" else None,
                                        REPO_ROOT)


@task
@task_body
def stage_artifacts(config: RunConfig) -> StagedArtifacts:
    """Job code, bootstrap and weights in S3 under content hashes; unchanged content is not uploaded again."""
    # the local compute mode installs nothing on nodes: no wheelhouse
    wheels = wheelhouse.build_wheelhouse if COMPUTE_MODE == "emr" else None
    listener = lineage.listener_jar(REPO_ROOT) if LINEAGE else None
    staged, _ = staging.stage_artifacts(_s3(), config, REPO_ROOT, wheels, listener)
    return staged


@task.short_circuit
@task_body
def find_new_images(
    config: RunConfig,
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
    dag_run: Any = None,
    params: dict[str, Any] | None = None,
    triggering_asset_events: Any = None,
) -> RunSelection | None:
    """Write the manifest of the run's images into a new attempt folder: those its S3 events name (a run
    on the asset), else every image no committed run processed that is stamped before the end of its
    data interval (earlier intervals' too: paused days, failed runs, late stamps); logs the coverage
    of the raw prefix by state first. None means the rest of the run is skipped (no cluster)."""
    run_after = getattr(dag_run, "run_after", None) or datetime.now(UTC)
    batch = None
    if events.is_event_run(dag_run):
        batch = events.EventBatch(events.message_bodies(triggering_asset_events), events.event_max_images(params),
                                  EVENTS.queue_url)
    return selection.find_new_images(_s3(), config, data_interval_start, data_interval_end, run_after, batch,
                                     _sqs() if batch else None, getattr(dag_run, "run_id", ""))


@task
@task_body
def plan_pca(config: RunConfig, run: RunSelection) -> PcaPlan:
    """Fit a new PCA model version (refit_pca, full_refresh, or no model yet) or apply the current one."""
    return pca_plan.plan_run_pca(_s3(), config, run)


@task(task_id="emr_request", multiple_outputs=True)
@task_body
def build_emr_request(
    config: RunConfig, staged: StagedArtifacts, run: RunSelection, pca: PcaPlan, dag_run: Any = None
) -> EmrRequest:
    """The RunJobFlow body (EMR mode: the local mode starts no cluster and stages no wheelhouse)
    and the steps, built from this run's config and PCA plan."""
    commits.ensure_uncommitted(_s3(), config, run.paths)  # a committed attempt is never written again
    cluster_for = (dag_run.dag_id, dag_run.run_id) if COMPUTE_MODE == "emr" else None
    return emr_request.build_request(config, staged, run, pca, cluster_for, _prices_variable(), REPO_ROOT,
                                     lineage.spark_settings(get_current_context()))


@task
@task_body
def run_steps_locally(
    config: RunConfig, run: RunSelection, steps: list[dict[str, Any]], datasets: dict[str, list[str]]
) -> dict[str, Any]:
    """Local compute mode: the EMR steps themselves, arguments unchanged, by spark-submit
    --master local[*,4] on this worker; Spark reads and writes S3 itself (S3A, FRUITS_S3_ENDPOINT).
    With lineage on, this task is the Spark applications' parent job and reports the run's datasets."""
    commits.ensure_uncommitted(_s3(), config, run.paths)  # a retry after the commit must not rewrite it
    steps = lineage.with_parent_job(steps, get_current_context())
    done = local_steps.run_steps_locally(config, steps, LOCAL_MASTER, LOCAL_DRIVER_MEMORY, LOCAL_WORKDIR)
    lineage.report_datasets(datasets, _s3_hook())
    return done


@task
@task_body
def validate_outputs(
    config: RunConfig, run: RunSelection, pca: PcaPlan, cluster_id: str | None = None,
    cluster_shape: str | None = None,
) -> RunSummary:
    """Fail unless manifest images = features + quarantined, all outputs exist and the PCA step did what
    the plan said (fit: the new model folder is complete); log counts and cost."""
    return validation.validate_outputs(_s3(), config, run, pca, _prices_variable(), cluster_id,
                                       _emr() if cluster_id else None, cluster_shape)


@task(outlets=[corpus.REDUCED_CORPUS])
@task_body
def commit_outputs(
    config: RunConfig, run: RunSelection, pca: PcaPlan, summary: RunSummary, dag_run: Any = None,
    outlet_events: Any = None,
) -> RunCommit:
    """Publish the validated attempt: the PCA pointer (conditional write: this run's rows join the corpus,
    merged with any other run's commit), then the run date's _COMMITTED.json, then delete the date's
    finished older attempts. Its success is an event of the asset fruits_reduced_corpus: DAGs
    scheduled on it start now."""
    record = commits.commit_outputs(_s3(), config, run, pca, summary, dag_run.run_id if dag_run else "")
    # only reached after both pointers were written; a failed commit emits no event
    outlet_events[corpus.REDUCED_CORPUS].extra = corpus.event_extra(config, record, pca)
    return record


@dag(
    dag_id=settings.DAG_ID,
    schedule=AssetOrTimeSchedule(timetable=DAILY, assets=events.asset(EVENTS)) if EVENTS else DAILY,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    on_failure_callback=alerts.RunFailureAlert(AWS_CONN_ID),  # one SNS message per failed run (docs/dag.md)
    tags=["fruits", "emr", "spark", "features"],
    doc_md=__doc__,
    params={name: Param(**spec) for name, spec in {**param_specs(PARSE_DEFAULTS), **events.param_specs(EVENTS)}.items()},
)
def fruits_features() -> None:
    config = resolve_config()
    staged = stage_artifacts(config)
    run = find_new_images(config)
    pca = plan_pca(config, run)
    request = build_emr_request(config, staged, run, pca)
    if COMPUTE_MODE == "local":
        validate = validate_outputs(config, run, pca)
        chain(staged, run, pca, request, run_steps_locally(config, run, request["steps"], request["lineage"]), validate,
              commit_outputs(config, run, pca, validate))
        return

    # deferrable=False: nothing to wait for in these three, and the provider's triggers need aiobotocore
    create_cluster = EmrCreateRunCluster(
        task_id="create_cluster",
        job_flow_overrides=request["job_flow_overrides"],
        aws_conn_id=AWS_CONN_ID,
        emr_conn_id=None,
        deferrable=False,
    )
    add_steps = EmrAddRunSteps(
        task_id="add_steps",
        job_flow_id=create_cluster.output,
        steps=request["steps"],
        datasets=request["lineage"],
        aws_conn_id=AWS_CONN_ID,
        deferrable=False,
        openlineage_inject_parent_job_info=LINEAGE,  # the Spark applications' parent job: this task
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
        deferrable=False,
    ).as_teardown(setups=create_cluster)
    # A teardown's own rule skips it when its setup failed, and a create_cluster that failed after
    # RunJobFlow made a cluster would leave that up until its idle timeout. This rule runs the sweep by
    # the run's tags once everything before it is done, whatever the states; skipped only when
    # find_new_images found nothing (no cluster).
    terminate_cluster.trigger_rule = TriggerRule.NONE_SKIPPED
    validate = validate_outputs(config, run, pca, create_cluster.output, request["cluster_shape"])

    chain(staged, run, pca, request, create_cluster, add_steps, watch_featurize, watch_pca, terminate_cluster, validate,
          commit_outputs(config, run, pca, validate))
    # the teardown succeeding must not let validate run after a failed step
    watch_pca >> validate


fruits_features()
