"""pca job: CNN features -> StandardScaler + PCA (pyspark.ml), k from a variance target.

    spark-submit --py-files spark_jobs.zip spark_jobs/pca.py --output OUT \
        [--features URI] [--variance 0.95 | --k K]

One fit with every component gives the whole explained-variance spectrum; k is read off it
and the saved PipelineModel keeps the first k components (a VectorSlicer stage), so new images
are transformed without refitting. Writes OUT/pca, OUT/pca_model, OUT/report.json and the plots.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import PCA, StandardScaler, VectorSlicer
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs import storage

SCATTER_SAMPLE = 20_000  # points drawn in pca_scatter.png at most


class PcaInputError(ValueError):
    """The features cannot be reduced as asked; the message says why."""


def add_pca_options(parser: argparse.ArgumentParser) -> None:
    pca = parser.add_argument_group("pca")
    target = pca.add_mutually_exclusive_group()
    target.add_argument(
        "--variance", type=float, default=0.95, help="smallest k whose cumulative explained variance reaches this"
    )
    target.add_argument("--k", type=int, default=None, help="fixed number of components (overrides --variance)")


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pca", description=__doc__.split("\n\n")[0], add_help=add_help)
    parser.add_argument("--output", required=True, help="output root (same as featurize's)")
    parser.add_argument("--features", default=None, help="features Parquet to fit on (default OUTPUT/features)")
    add_pca_options(parser)
    return parser


def choose_k(cumulative: np.ndarray, variance: float) -> int:
    """Smallest k with cumulative explained variance >= the target."""
    reached = np.nonzero(cumulative >= variance - 1e-12)[0]
    return int(reached[0]) + 1 if reached.size else len(cumulative)


def fit_pca(features: DataFrame, variance: float | None, k: int | None) -> tuple[PipelineModel, np.ndarray, int]:
    """Fit scaler + full PCA once; return the k-component model, the spectrum and k."""
    dims = features.select(F.size("features").alias("d")).distinct().collect()
    if len(dims) != 1:
        raise PcaInputError(f"feature vectors have mixed lengths {sorted(r['d'] for r in dims)}; mixed models?")
    dim = dims[0]["d"]
    if k is not None and not 1 <= k <= dim:
        raise PcaInputError(f"--k {k} must be between 1 and the feature length {dim}")
    vectors = features.select(array_to_vector("features").alias("vector"))
    full = Pipeline(
        stages=[
            StandardScaler(inputCol="vector", outputCol="scaled", withMean=True, withStd=True),
            PCA(k=dim, inputCol="scaled", outputCol="components"),
        ]
    ).fit(vectors)
    scaler, pca = full.stages
    spectrum = np.asarray(pca.explainedVariance.toArray(), dtype=np.float64)
    chosen = k if k is not None else choose_k(np.cumsum(spectrum), variance)
    slicer = VectorSlicer(inputCol="components", outputCol="pca_vector", indices=list(range(chosen)))
    return PipelineModel(stages=[scaler, pca, slicer]), spectrum, chosen


def reduce_features(model: PipelineModel, features: DataFrame) -> DataFrame:
    """path, label, pca (array<float> of length k) for every feature row."""
    return model.transform(features.withColumn("vector", array_to_vector("features"))).select(
        "path", "label", vector_to_array("pca_vector", "float32").alias("pca")
    )


def plot_explained_variance(spectrum: np.ndarray, k: int, variance: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cumulative = np.cumsum(spectrum)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(np.arange(1, len(cumulative) + 1), cumulative, color="tab:blue", label="cumulative explained variance")
    if variance is not None:
        ax.axhline(variance, color="tab:red", linestyle="--", label=f"target {variance:g}")
    ax.axvline(k, color="tab:green", linestyle=":", label=f"k = {k} ({cumulative[k - 1]:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("number of components")
    ax.set_ylabel("cumulative explained variance ratio")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("PCA on CNN features")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scatter(points: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5))
    labels = sorted({row["label"] for row in points})
    for label in labels:
        xy = np.array([row["pc"] for row in points if row["label"] == label], dtype=np.float64)
        ys = xy[:, 1] if xy.shape[1] > 1 else np.zeros(len(xy))
        ax.scatter(xy[:, 0], ys, s=9, alpha=0.7, label=label)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(title="label", markerscale=2)
    ax.set_title("Images on the first two principal components")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    """Fit, save the model, write the reduced features, report.json and the plots."""
    started = time.monotonic()
    if args.k is None and not 0 < args.variance <= 1:
        raise PcaInputError(f"--variance {args.variance} must be in (0, 1]")
    features_uri = getattr(args, "features", None) or storage.join(args.output, "features")
    try:
        features = spark.read.parquet(features_uri).where(F.col("features").isNotNull())
    except Exception as exc:  # AnalysisException for a missing path
        raise PcaInputError(f"cannot read features at {features_uri}: {str(exc).splitlines()[0]}") from None
    rows = features.count()
    if rows < 2:
        raise PcaInputError(f"PCA needs at least 2 feature rows, {features_uri} has {rows}")
    features = features.select("path", "label", "features").persist()
    try:
        model, spectrum, k = fit_pca(features, None if args.k is not None else args.variance, args.k)
        model.write().overwrite().save(storage.join(args.output, "pca_model"))
        reduced = reduce_features(model, features)
        reduced.write.mode("overwrite").parquet(storage.join(args.output, "pca"))
        fraction = min(1.0, SCATTER_SAMPLE / rows)
        sample = spark.read.parquet(storage.join(args.output, "pca"))
        if fraction < 1.0:
            sample = sample.sample(fraction=fraction, seed=7)
        points = sample.select("label", F.slice("pca", 1, 2).alias("pc")).collect()
    finally:
        features.unpersist()
    cumulative = np.cumsum(spectrum)
    report = {}
    featurize_summary = storage.join(args.output, "featurize.json")
    if storage.exists(spark, featurize_summary):
        report.update(storage.read_json(spark, featurize_summary))
    report.update(
        {
            "features_input": features_uri,
            "pca_rows": rows,
            "k": k,
            "variance_target": None if args.k is not None else args.variance,
            "variance_reached": float(cumulative[k - 1]),
            "explained_variance": [float(v) for v in spectrum],
            "cumulative_explained_variance": [float(v) for v in cumulative],
            "pca_seconds": round(time.monotonic() - started, 3),
        }
    )
    with tempfile.TemporaryDirectory(prefix="fruits-plots-") as tmp:
        curve, scatter = Path(tmp) / "explained_variance.png", Path(tmp) / "pca_scatter.png"
        plot_explained_variance(spectrum, k, report["variance_target"], curve)
        plot_scatter(points, scatter)
        storage.upload_file(spark, curve, storage.join(args.output, curve.name))
        storage.upload_file(spark, scatter, storage.join(args.output, scatter.name))
    storage.write_json(spark, storage.join(args.output, "report.json"), report)
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spark = SparkSession.builder.appName("fruits-pca").getOrCreate()
    try:
        report = run(spark, args)
    except PcaInputError as exc:
        print(f"pca: error: {exc}", file=sys.stderr)
        return 2
    print(f"pca: k={report['k']} reaches {report['variance_reached']:.4f} of the variance -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
