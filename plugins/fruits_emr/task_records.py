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

FROM_EARLIER_INTERVALS = "from earlier intervals"  # a RunSelection.taken reason: paused days, missed runs, late stamps


@dataclass(frozen=True)
class RunSelection:
    """The attempt's paths, how many files its manifest lists and how many of them are photos by
    name (the rest featurize ignores and lists), the photos' median size in bytes (None: unknown;
    the cost model's throughput figure, cost.matching_throughput), and what selected them (window:
    the LastModified [start, end) of a scheduled or manual run, ISO strings; None for an event run).
    replaces: the attempt folder the PCA pointer named for this run date when the run selected (None:
    none); taken: why the files were taken ({"in the interval": n, "from earlier intervals": n, ...})."""

    paths: RunPaths
    files: int
    images: int
    scope: str
    window: tuple[str, str] | None = None
    median_bytes: int | None = None
    replaces: str | None = None
    taken: dict[str, int] = field(default_factory=dict)

    @property
    def from_earlier_intervals(self) -> int:
        return self.taken.get(FROM_EARLIER_INTERVALS, 0)


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
    # a fit: {run date: attempt folder} the pointer named when planned (a full refresh drops them all);
    # the commit fails if another run changed them since
    planned_on: dict[str, str] = field(default_factory=dict)


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
    files: int
    images: int
    features_rows: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    ignored: int
    ignored_kinds: dict[str, int]
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
    files: int
    images: int
    features_rows: int
    quarantined: int
    ignored: int
    k: int
    pca_model: str
    dag_run_id: str
    committed_at: str
    from_earlier_intervals: int = 0  # images stamped before the run's interval (docs/reliability.md)
    previous_attempt: str | None = None  # the attempt this commit replaced (kept for readers mid-way)
