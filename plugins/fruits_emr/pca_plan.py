"""The run's PCA plan: fit a new model version or apply the current one, and the pca job's arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fruits_emr.layout import RunPaths, pca_version_uri
from fruits_emr.settings import RunConfig, number_arg


def plan_pca(
    config: RunConfig, pointer: Mapping[str, Any] | None, committed_features: Mapping[str, str], run_date: str
) -> dict[str, Any]:
    """Fit a new model version or apply the current one, and on what.

    A fit happens when asked (refit_pca), on full_refresh, or when no model exists yet. It fits on
    every other committed run date's features plus this run's (full_refresh: this run's alone, since it
    holds every image) and re-projects those dates into the new version's space.
    """
    reason = ("refit_pca" if config.refit_pca else "full_refresh" if config.full_refresh
              else None if pointer else "no model yet")
    if reason is None:
        return {"fit": False, "reason": "apply the current model", "number": int(pointer["number"]),
                "version": pointer["version"], "model": pointer["model"], "corpus": []}
    number = int(pointer["number"]) + 1 if pointer else 1
    corpus = [] if config.full_refresh else [
        [date, uri] for date, uri in sorted(committed_features.items()) if date != run_date
    ]
    return {"fit": True, "reason": reason, "number": number, "version": f"v{number:04d}",
            "model": pca_version_uri(config, number), "corpus": corpus,
            "previous_number": int(pointer["number"]) if pointer else None}


def pca_arguments(config: RunConfig, paths: RunPaths, plan: Mapping[str, Any] | None) -> list[str]:
    """The pca job's arguments: fit into the plan's new version folder, or apply the current model."""
    if plan is not None and not plan["fit"]:
        return ["--output", paths.output_uri, "--model", plan["model"]]
    target = ["--k", str(config.k)] if config.k is not None else ["--variance", number_arg(config.variance)]
    if plan is None:  # no lifecycle: the model is saved beside the outputs
        return ["--output", paths.output_uri, *target]
    corpus = [arg for _, uri in plan["corpus"] for arg in ("--corpus", uri)]
    return ["--output", paths.output_uri, *target, "--model-output", plan["model"],
            "--model-version", plan["version"], *corpus]
