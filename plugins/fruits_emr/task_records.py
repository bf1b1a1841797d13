"""What the fruits_features DAG's tasks hand each other about a run, as typed records (frozen
dataclasses; task_io converts them to and from XCom). The run's settings (settings.RunConfig) and
its staged artifacts (artifacts.StagedArtifacts) travel the same way.

    find_new_images -> RunSelection -> plan_pca -> PcaPlan -> emr_request -> EmrRequest
    validate_outputs -> RunSummary -> commit_outputs -> RunCommit

A field means the same whatever the Params: e.g. PcaPlan.pointer_number is always the pointer
version the plan was made on, for a fit and for an apply alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fruits_emr.layout import RunPaths


@dataclass(frozen=True)
class RunSelection:
    """The attempt's paths, how many images its manifest lists, and what selected them (window: the
    LastModified [start, end) of a scheduled or manual run, ISO strings; None for an event run)."""

    paths: RunPaths
    images: int
    scope: str
    window: tuple[str, str] | None = None


@dataclass(frozen=True)
class CorpusDate:
    """A committed run date whose features a fit re-projects into the new model's space."""

    run_date: str
    features: str  # its committed features/ URI


@dataclass(frozen=True)
class PcaPlan:
    """What the pca step does: fit a new model version (on this run's features and the corpus) or
    apply the current one. version/number/model: the model the run's reduced rows are in."""

    fit: bool
    reason: str
    number: int
    version: str
    model: str  # the model folder's URI
    pointer_number: int | None  # the pointer's version when planned; None: no model committed yet
    corpus: tuple[CorpusDate, ...] = ()  # a fit's committed dates (an apply: none)


@dataclass(frozen=True)
class EmrRequest:
    """The RunJobFlow body of the run's cluster (None in local mode: no cluster), its shape, the steps,
    and the run's datasets as lineage names them ({"inputs": [...], "outputs": [...]} S3 URIs)."""

    steps: list[dict[str, Any]]
    job_flow_overrides: dict[str, Any] | None = None
    cluster_shape: str | None = None
    lineage: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    """A validated run: its counts, its PCA model and what its cluster cost."""

    output: str
    images: int
    features_rows: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    k: int
    variance_target: float | None
    pca_model: str
    pca_fitted: bool
    pca_fit_rows: int | None
    pca_corpus: list[dict[str, str]] = field(default_factory=list)
    cluster_id: str | None = None
    cluster_shape: str | None = None
    cluster_hours: float = 0.0
    estimated_cost_usd: float = 0.0
    unpriced_instance_types: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunCommit:
    """A committed run: the commit pointer's content (what readers of the run date read)."""

    run_date: str
    attempt: str
    output: str
    features: str
    pca: str
    report: str
    images: int
    features_rows: int
    quarantined: int
    k: int
    pca_model: str
    dag_run_id: str
    committed_at: str
