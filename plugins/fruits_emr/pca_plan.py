"""The plan_pca task: fit a new PCA model version or apply the current one, and the pca job's arguments."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fruits_emr import commits
from fruits_emr.layout import RunPaths, pca_version_uri
from fruits_emr.settings import RunConfig, number_arg
from fruits_emr.task_records import CorpusDate, PcaPlan, RunSelection

log = logging.getLogger(__name__)


def plan_pca(
    config: RunConfig, pointer: Mapping[str, Any] | None, committed_features: Mapping[str, str], run_date: str
) -> PcaPlan:
    """Fit a new model version or apply the current one, and on what.

    A fit happens when asked (refit_pca), on full_refresh, or when no model exists yet. It fits on
    every other committed run date's features plus this run's (full_refresh: this run's alone, since it
    holds every image) and re-projects those dates into the new version's space.
    """
    pointer_number = int(pointer["number"]) if pointer else None
    reason = ("refit_pca" if config.refit_pca else "full_refresh" if config.full_refresh
              else None if pointer else "no model yet")
    if reason is None:
        return PcaPlan(fit=False, reason="apply the current model", number=pointer_number, version=pointer["version"],
                       model=pointer["model"], pointer_number=pointer_number)
    number = pointer_number + 1 if pointer_number is not None else 1
    corpus = () if config.full_refresh else tuple(
        CorpusDate(date, uri) for date, uri in sorted(committed_features.items()) if date != run_date
    )
    return PcaPlan(fit=True, reason=reason, number=number, version=f"v{number:04d}",
                   model=pca_version_uri(config, number), pointer_number=pointer_number, corpus=corpus)


def plan_run_pca(s3: Any, config: RunConfig, run: RunSelection) -> PcaPlan:
    """The plan of this run, from the committed PCA pointer (and, for a fit, every committed date's features)."""
    pointer = commits.read_pca_pointer(s3, config)
    committed = commits.committed_features(s3, config) if (config.refit_pca or not pointer) else {}
    plan = plan_pca(config, pointer, committed, run.paths.run_date)
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
