"""Checks of a finished run: its counts reconcile with the manifest, its outputs exist and the PCA
step did what the plan said."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spark_jobs.run_files import REQUIRED_OUTPUTS


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


def pca_problems(report: Mapping[str, Any], plan: Mapping[str, Any]) -> list[str]:
    """What in the report contradicts the run's PCA plan. Empty when all is well."""
    problems = []
    if report.get("pca_fitted") is not plan["fit"]:
        problems.append(f"report says pca_fitted={report.get('pca_fitted')}, the run planned fit={plan['fit']}")
    if report.get("pca_model") != plan["version"]:
        problems.append(f"report names PCA model {report.get('pca_model')!r}, the run planned {plan['version']!r}")
    if plan["fit"] and len(report.get("pca_corpus") or []) != len(plan["corpus"]):
        problems.append(f"{len(report.get('pca_corpus') or [])} corpus dates re-projected, {len(plan['corpus'])} planned")
    return problems
