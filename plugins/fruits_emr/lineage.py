"""OpenLineage of the fruits_features DAG (docs/lineage.md), through Airflow's openlineage provider.

- The task that runs the Spark steps (add_steps on EMR, run_steps_locally in local compute mode)
  reports the run's datasets to Airflow's hook-lineage collector: the raw images as input (and the
  applied PCA model), the attempt's features and pca folders and a newly fitted PCA model version as
  outputs. The provider puts them in that task's OpenLineage events.
- The Spark steps load the OpenLineage Spark listener (openlineage-spark, staged from jars/ by
  stage_artifacts) with the provider's transport translated to Spark settings, and the identity of
  the Airflow task as the parent job: on EMR the amazon provider's EmrAddStepsOperator injects it
  (openlineage_inject_parent_job_info), locally `with_parent_job` does the same.

Off unless the provider has a transport ([openlineage] transport / OPENLINEAGE_URL...): then no
listener, no jar staged, nothing reported.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fruits_emr.layout import RunPaths
from fruits_emr.settings import ConfigError, RunConfig
from fruits_emr.task_records import PcaPlan
from spark_jobs.contract.run_files import FEATURES, PCA
from spark_jobs.contract.s3_uri import key_prefix

SPARK_LISTENER = "io.openlineage.spark.agent.OpenLineageSparkListener"
LISTENER_JAR_GLOB = "openlineage-spark_2.12-*.jar"  # version and checksum: scripts/fetch_s3a_jars.py
SPARK_EVENTS_SUFFIX = ".spark"  # a file transport's Spark events go beside the Airflow ones, not into them

log = logging.getLogger(__name__)


def enabled() -> bool:
    """True when the openlineage provider is installed and has a transport configured."""
    try:
        from airflow.providers.openlineage.conf import is_disabled
    except ImportError:
        return False
    return not is_disabled()


def listener_jar(repo_root: Path) -> Path:
    """The openlineage-spark jar in <repo>/jars (fetched by `make setup`); ConfigError when it is missing."""
    found = sorted((repo_root / "jars").glob(LISTENER_JAR_GLOB))
    if not found:
        raise ConfigError(
            f"OpenLineage is configured but the Spark listener jar is not in {repo_root / 'jars'}: run"
            " python scripts/fetch_s3a_jars.py there, or unset the [openlineage] transport."
        )
    return found[-1]


def run_datasets(config: RunConfig, paths: RunPaths, plan: PcaPlan) -> dict[str, list[str]]:
    """The S3 URIs of a run's inputs and outputs (folders, as Spark's own lineage names them)."""
    raw = f"s3://{config.bucket}/{key_prefix(config.raw_prefix).rstrip('/')}"
    outputs = [f"{paths.output_uri}/{FEATURES}", f"{paths.output_uri}/{PCA}"]
    model = plan.model.rstrip("/")
    return {"inputs": [raw] if plan.fit else [raw, model], "outputs": outputs + ([model] if plan.fit else [])}


def report_datasets(datasets: Mapping[str, list[str]], hook: Any) -> None:
    """Hand the datasets to Airflow's hook-lineage collector, from which the openlineage provider
    builds the running task's inputs and outputs. hook: the hook the task works through."""
    if not enabled():
        return
    from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

    collector = get_hook_lineage_collector()
    for uri in datasets["inputs"]:
        collector.add_input_asset(context=hook, uri=uri)
    for uri in datasets["outputs"]:
        collector.add_output_asset(context=hook, uri=uri)


def spark_transport(transport: Mapping[str, Any], context: Any) -> dict[str, str]:
    """The provider's transport as the Spark listener's settings: http (and composite of http) as the
    provider translates them; file (Spark writes `<log_file_path>.spark`) and console here; {} for
    other kinds, whose Spark events are then not sent (logged)."""
    kind = transport.get("type")
    if kind in ("http", "composite"):
        from airflow.providers.openlineage.utils.spark import inject_transport_information_into_spark_properties

        return inject_transport_information_into_spark_properties({}, context)
    if kind == "file":
        return {"spark.openlineage.transport.type": "file",
                "spark.openlineage.transport.location": f"{transport['log_file_path']}{SPARK_EVENTS_SUFFIX}"}
    if kind == "console":
        return {"spark.openlineage.transport.type": "console"}
    log.warning("OpenLineage transport %r has no Spark equivalent here: the Spark steps emit no lineage", kind)
    return {}


def spark_settings(context: Any) -> dict[str, str]:
    """The Spark listener's settings for the steps (empty when lineage is off)."""
    if not enabled():
        return {}
    from airflow.providers.openlineage import conf

    transport = spark_transport(conf.transport(), context)
    if not transport:
        return {}
    return {"spark.extraListeners": SPARK_LISTENER, "spark.openlineage.namespace": conf.namespace(), **transport}


def with_parent_job(steps: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
    """The steps with the running task as the OpenLineage parent job of their Spark applications, as
    EmrAddStepsOperator(openlineage_inject_parent_job_info=True) adds it on EMR (local compute mode)."""
    if not enabled():
        return steps
    from airflow.providers.openlineage.utils.spark import inject_parent_job_information_into_spark_properties

    parent = inject_parent_job_information_into_spark_properties({}, context)
    settings = [argument for key, value in parent.items() for argument in ("--conf", f"{key}={value}")]
    result = copy.deepcopy(steps)
    for step in result:
        args = step["HadoopJarStep"]["Args"]
        step["HadoopJarStep"]["Args"] = [args[0], *settings, *args[1:]]
    return result
