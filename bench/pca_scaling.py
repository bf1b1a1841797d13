"""The pca job's fit path at growing corpus sizes: synthetic feature rows drawn around real ones,
one fresh process per size (pca_fit_seconds_by_rows, pca_fit_peak_rss_by_rows)."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from bench.peak_rss import PeakRss
from bench.spark_probes import run_probe

PCA_FIT_SIZES = [20_000, 200_000, 1_000_000]  # feature rows in the corpus the pca job fits on
PCA_FIT_SIZES_SMOKE = [1_000]


def make_fit_rows(source: Path, target: Path, rows: int, chunk: int = 20_000) -> Path:
    """`rows` feature rows drawn around real ones (a random real row + Gaussian noise of 5 % of each
    feature's spread), written as Parquet files of `chunk` rows; reused when already complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamp = target / f".complete-{rows}"
    if stamp.exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    real = np.stack(pq.read_table(source, columns=["features"]).column("features").to_numpy(zero_copy_only=False))
    real = real.astype(np.float32)
    noise = 0.05 * real.std(axis=0) + 1e-6
    rng = np.random.default_rng(11)
    for first in range(0, rows, chunk):
        n = min(chunk, rows - first)
        drawn = real[rng.integers(0, len(real), n)] + rng.normal(size=(n, real.shape[1])).astype(np.float32) * noise
        offsets = pa.array(np.arange(0, (n + 1) * real.shape[1], real.shape[1], dtype=np.int32))
        column = pa.ListArray.from_arrays(offsets, pa.array(drawn.astype(np.float32).ravel()))
        table = pa.table({"path": [f"synthetic/{first + i}.jpg" for i in range(n)], "label": ["synthetic"] * n,
                          "features": column})
        pq.write_table(table, target / f"part-{first // chunk:05d}.parquet")
    stamp.touch()
    return target


def probe_pca_fit(args: argparse.Namespace) -> dict:
    """The pca job's fit path on a features dataset: count, bounded sample, moments, eigh."""
    from local_spark.session import local_spark
    from spark_jobs import pca

    spark = local_spark("local[2]", "4g")
    with PeakRss() as rss:
        started = time.perf_counter()
        features = pca.read_features(spark, [args.features])
        rows = features.count()
        model = pca.fit_pca(spark, pca.fit_sample(features, rows, pca.MAX_FIT_ROWS), 0.95, None)
        wall = time.perf_counter() - started
    spark.stop()
    return {"rows": rows, "fit_rows": model.info["fit_rows"], "k": model.k, "seconds": wall,
            "peak_rss_bytes": rss.peak, "peak_rss_jvm_bytes": rss.peak_by_kind["jvm"],
            "peak_rss_python_workers_bytes": rss.peak_by_kind["python"]}


def pca_fit_scaling(source: Path, work: Path, sizes: list[int]) -> dict:
    """pca_fit_seconds_by_rows and pca_fit_peak_rss_by_rows: one fresh process per corpus size."""
    runs = {}
    for rows in sizes:
        runs[str(rows)] = run_probe("pca_fit", features=make_fit_rows(source, work / f"fit-rows-{rows}", rows))
    return {"pca_fit_seconds_by_rows": {rows: run["seconds"] for rows, run in runs.items()},
            "pca_fit_peak_rss_by_rows": {rows: run["peak_rss_bytes"] for rows, run in runs.items()},
            "pca_fit_runs": runs}

