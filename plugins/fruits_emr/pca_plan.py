"""The plan_pca task: fit a new PCA model version or apply the current one, and the pca job's arguments."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fruits_emr import pca_pointer
from fruits_emr.layout import RunPaths, pca_fit_uri
from fruits_emr.settings import RunConfig, number_arg
from fruits_emr.task_records import CorpusDate, PcaPlan, RunSelection
from spark_jobs.contract.run_files import FEATURES

log = logging.getLogger(__name__)


def plan_pca(
    config: RunConfig, pointer: Mapping[str, Any] | None, committed: Mapping[str, str], paths: RunPaths
) -> PcaPlan:
    """Fit a new model version or apply the current one, and on what. committed: {run date: attempt
    folder} the pointer's corpus is made of (pca_pointer.committed_attempts).

    A fit happens when asked (refit_pca), on full_refresh, or when no model exists yet. It fits on
    every other date of the corpus plus this run's features (full_refresh: this run's alone, since it
    holds every image) and re-projects those dates into the new version's space, in the attempt's own
    model folder (layout.pca_fit_uri); the version number is the pointer's next.
    """
    pointer_number = int(pointer["number"]) if pointer else None
    reason = ("refit_pca" if config.refit_pca else "full_refresh" if config.full_refresh
              else None if pointer else "no model yet")
    if reason is None:
        return PcaPlan(fit=False, reason="apply the current model", number=pointer_number, version=pointer["version"],
                       model=pointer["model"], pointer_number=pointer_number)
    number = pointer_number + 1 if pointer_number is not None else 1
    corpus = () if config.full_refresh else tuple(
        CorpusDate(date, f"{output}/{FEATURES}") for date, output in sorted(committed.items()) if date != paths.run_date
    )
    return PcaPlan(fit=True, reason=reason, number=number, version=f"v{number:04d}",
                   model=pca_fit_uri(config, paths.attempt), pointer_number=pointer_number, corpus=corpus,
                   planned_on=dict(sorted(committed.items())))


def plan_run_pca(s3: Any, config: RunConfig, run: RunSelection) -> PcaPlan:
    """The plan of this run, from the committed PCA pointer and the attempts its corpus is made of."""
    pointer, _ = pca_pointer.read_pointer(s3, config)
    plan = plan_pca(config, pointer, pca_pointer.committed_attempts(s3, config, pointer), run.paths)
    if plan.fit:
        log.info("PCA: fit version %s (%s) on this run's features and %d committed run dates -> %s",
                 plan.version, plan.reason, len(plan.corpus), plan.model)
    else:
        log.info("PCA: apply the current model %s (%s), no fit", plan.version, plan.model)
    return plan


def pca_arguments(config: RunConfig, paths: RunPaths, plan: PcaPlan | None) -> list[str]:
    """The pca job's arguments: fit into the plan's new version folder, or apply the current model."""
    if plan is not None and not plan.fit:
        return ["--output", paths.output_uri, "--model", plan.model]
    target = ["--k", str(config.k)] if config.k is not None else ["--variance", number_arg(config.variance)]
    if plan is None:  # no lifecycle: the model is saved beside the outputs
        return ["--output", paths.output_uri, *target]
    corpus = [arg for entry in plan.corpus for arg in ("--corpus", entry.features)]
    return ["--output", paths.output_uri, *target, "--model-output", plan.model,
            "--model-version", plan.version, *corpus]
