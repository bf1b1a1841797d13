"""The files one run passes between the DAG (plugins/fruits_emr) and the Spark jobs: the manifest's
format and the names of the outputs in a run's output folder.

Pure Python (no Spark), so the Airflow worker imports it as well as the jobs.
"""

from __future__ import annotations

from collections.abc import Iterable

MANIFEST_FILE = "manifest.txt"
FEATURES = "features"  # featurize: one Parquet row per decoded image
QUARANTINE = "quarantine"  # featurize: the rows that could not be used, with a reason
FEATURIZE_SUMMARY = "featurize.json"
PCA = "pca"  # pca: the reduced rows
REPORT = "report.json"  # pca, written last: the run's counts
PCA_MODEL = "pca_model"  # pca without a model lifecycle: the fitted model beside the outputs
PCA_MODEL_INFO = "pca_model.json"  # written last into a model folder: the model is complete
PCA_CORPUS_PART = "corpus/part-{index:05d}"  # where a fit re-projects its index-th --corpus input
MODEL_FILE = "model.onnx"  # an exported model (model_export), as staged and cached
MODEL_SIDECAR_SUFFIX = ".json"  # an exported model's description sits beside it: model.onnx.json
# what a finished run's output folder must hold (a folder name ends in '/')
REQUIRED_OUTPUTS = (f"{FEATURES}/", f"{PCA}/", REPORT)


def parse_manifest(text: str) -> list[str]:
    """The entries of a manifest: one image path or URI per line, in order.

    Each line is stripped of surrounding white space; blank lines, comment lines (starting with
    '#' once stripped) and repeats of an earlier entry are dropped.
    """
    entries = (line.strip() for line in text.splitlines())
    return list(dict.fromkeys(entry for entry in entries if entry and not entry.startswith("#")))


def format_manifest(entries: Iterable[str]) -> str:
    """A manifest listing the entries, one per line (parse_manifest reads it back)."""
    return "".join(f"{entry}\n" for entry in entries)
