"""The soak's reconciliation: every way a run's counts and outputs can disagree with what was planted."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse


def parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in folder.glob("part-*.parquet"))


def quarantined_paths(folder: Path) -> dict[Path, str]:
    import pyarrow.parquet as pq

    table = pq.read_table(folder, columns=["path", "reason"]).to_pylist()
    return {Path(urlparse(row["path"]).path): row["reason"] for row in table}


def reconcile(report: dict, output: Path, expected_images: int, good: int, planted: dict[Path, str]) -> list[str]:
    """Every way the run's counts can disagree with what was planted, as readable problems."""
    problems = []
    seen, rows, quarantined = report["images_seen"], report["features_rows"], report["quarantined"]
    if seen != expected_images:
        problems.append(f"images_seen {seen} != {expected_images} expected ({good} replicas + {len(planted)} broken)")
    if rows + quarantined != seen:
        problems.append(f"features_rows {rows} + quarantined {quarantined} != images_seen {seen}")
    if rows != good:
        problems.append(f"features_rows {rows} != {good} good images")
    if quarantined != len(planted):
        problems.append(f"quarantined {quarantined} != {len(planted)} planted broken files")
    # the planted notes.txt is ignored and listed (so is the replicas' own .complete stamp file)
    ignored = [Path(urlparse(uri).path).name for uri in report.get("ignored_files", [])]
    if "notes.txt" not in ignored or report.get("files_seen") != seen + len(ignored) or any(
            name.lower().endswith((".jpg", ".jpeg", ".png")) for name in ignored):
        problems.append(f"ignored {ignored} (files_seen {report.get('files_seen')}), expected the planted notes.txt")
    written = parquet_rows(output / "features")
    if written != rows:
        problems.append(f"features Parquet holds {written} rows, report says {rows}")
    reduced = parquet_rows(output / "pca")
    if reduced != rows or report.get("pca_rows") != rows:
        problems.append(f"pca Parquet holds {reduced} rows (report pca_rows {report.get('pca_rows')}), expected {rows}")
    found = quarantined_paths(output / "quarantine")
    if set(found) != set(planted):
        unexpected = sorted(map(str, set(found) - set(planted)))[:5]
        missed = sorted(map(str, set(planted) - set(found)))[:5]
        problems.append(f"quarantine differs from the planted files: unexpected {unexpected}, missed {missed}")
    for path, reason in planted.items():
        if path in found and not found[path].startswith(reason):
            problems.append(f"{path} quarantined as {found[path]!r}, expected {reason!r}")
    return problems

