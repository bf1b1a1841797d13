"""pca job: CNN features -> standardised PCA (k from a variance target), fitted or applied.

    spark-submit --py-files spark_jobs.zip spark_jobs/pca.py --output OUT \
        [--features URI ...] [--variance 0.95 | --k K] [--max-fit-rows N] \
        [--model-output URI] [--model-version NAME] [--corpus URI ...]
    spark-submit --py-files spark_jobs.zip spark_jobs/pca.py --output OUT --model MODEL [--features URI ...]

Fit (no --model): one fit on the features inputs and the --corpus inputs (a bounded uniform sample
when they hold more than --max-fit-rows rows) gives the whole explained-variance spectrum; k is
read off it and the saved model (default OUT/pca_model) keeps the first k components. Each --corpus
input is re-projected to MODEL_OUTPUT/corpus/part-NNNNN. Apply (--model): the saved model reduces the
features, nothing is fitted. Either way writes OUT/pca (each row names the model version),
OUT/report.json and the plots. The model math is in spark_jobs/pca_model.py (docs/pca.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs import hadoop_fs, pca_model
from spark_jobs.contract.run_files import FEATURES, FEATURIZE_SUMMARY, PCA, PCA_CORPUS_PART, PCA_MODEL, REPORT

SCATTER_SAMPLE = 20_000  # points drawn in pca_scatter.png at most
MAX_FIT_ROWS = 200_000  # a uniform sample of this many rows fixes a 1,280-d correlation matrix well
FIT_SAMPLE_SEED = 7


class PcaInputError(ValueError):
    """The features cannot be reduced as asked; the message says why."""


def add_pca_options(parser: argparse.ArgumentParser, model_flags: tuple[str, ...] = ("--pca-model",)) -> None:
    """The options run_local shares; there --model names the CNN, so the saved PCA model is --pca-model."""
    pca = parser.add_argument_group("pca")
    target = pca.add_mutually_exclusive_group()
    target.add_argument(
        "--variance", type=float, default=0.95, help="smallest k whose cumulative explained variance reaches this"
    )
    target.add_argument("--k", type=int, default=None, help="fixed number of components (overrides --variance)")
    pca.add_argument(
        *model_flags, dest="pca_model", default=None,
        help="apply this saved PCA model folder instead of fitting one (--k/--variance are then the model's)",
    )
    pca.add_argument(
        "--max-fit-rows", type=int, default=MAX_FIT_ROWS,
        help="fit on a uniform sample of about this many rows when the inputs hold more (default: %(default)s)",
    )


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pca", description=__doc__.split("\n\n")[0], add_help=add_help)
    parser.add_argument("--output", required=True, help="output root (same as featurize's)")
    parser.add_argument(
        "--features", action="append", default=None,
        help="features Parquet to reduce (and fit on); repeatable, globs allowed (default OUTPUT/features)",
    )
    parser.add_argument("--model-output", default=None, help="where a fitted model is saved (default OUTPUT/pca_model)")
    parser.add_argument("--model-version", default=None, help="version name of a fitted model (default: a content hash)")
    parser.add_argument(
        "--corpus", action="append", default=[],
        help="more features to fit on, each re-projected to MODEL_OUTPUT/corpus/part-NNNNN; repeatable",
    )
    add_pca_options(parser, ("--model", "--pca-model"))
    return parser


def choose_k(cumulative: np.ndarray, variance: float) -> int:
    """Smallest k with cumulative explained variance >= the target."""
    reached = np.nonzero(cumulative >= variance - 1e-12)[0]
    return int(reached[0]) + 1 if reached.size else len(cumulative)


def feature_dim(features: DataFrame) -> int:
    dims = features.select(F.size("features").alias("d")).distinct().collect()
    if len(dims) != 1:
        raise PcaInputError(f"feature vectors have mixed lengths {sorted(r['d'] for r in dims)}; mixed models?")
    return int(dims[0]["d"])


def fit_sample(features: DataFrame, rows: int, max_rows: int) -> DataFrame:
    """All rows, or a seeded uniform (Bernoulli) sample of about max_rows of them."""
    return features if rows <= max_rows else features.sample(fraction=max_rows / rows, seed=FIT_SAMPLE_SEED)


def fit_pca(
    spark: SparkSession, features: DataFrame, variance: float | None, k: int | None, version: str | None = None
) -> pca_model.SavedPca:
    """Fit the scaler and every component once; the model keeps the first k (given, or read off
    the spectrum for the variance target)."""
    dim = feature_dim(features)
    if k is not None and not 1 <= k <= dim:
        raise PcaInputError(f"--k {k} must be between 1 and the feature length {dim}")
    try:
        moments = pca_model.feature_moments(features)
        spectrum = pca_model.principal_components(moments)
    except ValueError as exc:
        raise PcaInputError(str(exc)) from None
    chosen = k if k is not None else choose_k(np.cumsum(spectrum.explained_variance), variance)
    info = {
        "version": version or pca_model.content_version(spectrum, chosen),
        "k": chosen,
        "feature_dim": dim,
        "fit_rows": moments.n,
        "variance_target": variance if k is None else None,
        "explained_variance": [float(v) for v in spectrum.explained_variance],
        "created_at": datetime.now(UTC).isoformat(),
    }
    return pca_model.SavedPca(pca_model.build_pipeline(spark, spectrum, chosen), info)


def reduce_features(model: pca_model.SavedPca, features: DataFrame) -> DataFrame:
    """path, label, pca (array<float> of length k), pca_model for every feature row."""
    return pca_model.apply(model, features)


def read_features(spark: SparkSession, uris: list[str]) -> DataFrame:
    try:
        features = spark.read.parquet(*uris)
    except Exception as exc:  # AnalysisException for a missing path or a glob matching nothing
        raise PcaInputError(f"cannot read features at {', '.join(uris)}: {str(exc).splitlines()[0]}") from None
    columns = ["path", "label", "features", *(["model"] if "model" in features.columns else [])]
    return features.where(F.col("features").isNotNull()).select(*columns)


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
    """Fit (and save) or load the model, write the reduced features, report.json and the plots."""
    started = time.monotonic()
    check_arguments(args)
    features_uris = getattr(args, "features", None) or [hadoop_fs.join(args.output, FEATURES)]
    corpus_uris = list(getattr(args, "corpus", None) or [])
    features = read_features(spark, features_uris)
    corpus = [read_features(spark, [uri]) for uri in corpus_uris]
    rows = features.count()
    model_uri, model, fit = fit_or_load(spark, args, features, rows, corpus, features_uris + corpus_uris)
    reduced_uri = hadoop_fs.join(args.output, PCA)
    reduce_features(model, features).write.mode("overwrite").parquet(reduced_uri)
    reprojected = []
    for index, (uri, frame) in enumerate(zip(corpus_uris, corpus, strict=True)):
        target_uri = hadoop_fs.join(model_uri, PCA_CORPUS_PART.format(index=index))
        reduce_features(model, frame).write.mode("overwrite").parquet(target_uri)
        reprojected.append({"features": uri, "pca": target_uri})
    if not args.pca_model:
        model.info["corpus"] = reprojected
        pca_model.save(spark, model, model_uri)  # after the re-projections: its info file marks a whole folder
    spectrum = np.asarray(model.info["explained_variance"], dtype=np.float64)
    cumulative = np.cumsum(spectrum)
    report = {}
    featurize_summary = hadoop_fs.join(args.output, FEATURIZE_SUMMARY)
    if hadoop_fs.exists(spark, featurize_summary):
        report.update(hadoop_fs.read_json(spark, featurize_summary))
    report.update(
        {
            "features_input": ", ".join(features_uris),
            "pca_rows": rows,
            "pca_model": model.version,
            "pca_model_uri": model_uri,
            "pca_fitted": not args.pca_model,
            "pca_fit_rows": None,
            "pca_corpus_rows": None,
            **fit,
            "pca_corpus": reprojected,
            "k": model.k,
            "variance_target": model.info["variance_target"],
            "variance_reached": float(cumulative[model.k - 1]),
            "explained_variance": [float(v) for v in spectrum],
            "cumulative_explained_variance": [float(v) for v in cumulative],
            "pca_seconds": round(time.monotonic() - started, 3),
        }
    )
    write_plots(spark, args.output, spectrum, model.k, report["variance_target"], scatter_points(spark, reduced_uri, rows))
    hadoop_fs.write_json(spark, hadoop_fs.join(args.output, REPORT), report)
    return report


def fit_or_load(
    spark: SparkSession, args: argparse.Namespace, features: DataFrame, rows: int, corpus: list[DataFrame],
    inputs: list[str],
) -> tuple[str, pca_model.SavedPca, dict]:
    """The saved model (--model), or one fitted on the features and the corpus; the report's fit fields."""
    if args.pca_model:
        model = load_model(spark, args.pca_model)
        if rows and feature_dim(features) != model.info["feature_dim"]:
            raise PcaInputError(
                f"features of length {feature_dim(features)} cannot be reduced by {args.pca_model}, fitted on"
                f" length {model.info['feature_dim']}: same CNN settings, or refit"
            )
        check_feature_model(feature_models([features]), model.info.get("feature_model"), args.pca_model)
        return args.pca_model, model, {}
    models = feature_models([features, *corpus])
    if len(models) > 1:
        raise PcaInputError(
            f"{', '.join(inputs)} hold features of {len(models)} CNN models ({', '.join(models)}): a PCA model"
            " reduces one model's features; featurize them all with one model and engine (DAG Param full_refresh)"
        )
    fit_on = features
    for frame in corpus:
        fit_on = fit_on.unionByName(frame, allowMissingColumns=True)  # `model` may be absent in old features
    corpus_rows = fit_on.count()
    if corpus_rows < 2:
        raise PcaInputError(f"PCA needs at least 2 feature rows, {', '.join(inputs)} hold {corpus_rows}")
    target = None if args.k is not None else args.variance
    model = fit_pca(spark, fit_sample(fit_on, corpus_rows, args.max_fit_rows), target, args.k,
                    getattr(args, "model_version", None))
    model.info.update({"corpus_rows": corpus_rows, "fitted_on": inputs, "feature_model": models[0] if models else None})
    model_uri = getattr(args, "model_output", None) or hadoop_fs.join(args.output, PCA_MODEL)
    return model_uri, model, {"pca_fit_rows": model.info["fit_rows"], "pca_corpus_rows": corpus_rows}


def feature_models(frames: list[DataFrame]) -> list[str]:
    """The CNN model ids (featurize's `model` column: backbone, weights, engine) of the feature
    rows, sorted, in one job; none for features written without that column."""
    ids = [frame.select("model") for frame in frames if "model" in frame.columns]
    if not ids:
        return []
    distinct = reduce(DataFrame.unionByName, ids).distinct().collect()
    return sorted(row["model"] for row in distinct if row["model"] is not None)


def check_feature_model(models: list[str], fitted_on: str | None, model_uri: str) -> None:
    """A saved PCA model reduces only features of the CNN model it was fitted on: the int8 engine's
    features, or another backbone's, have the same length but other coordinates."""
    if fitted_on is None or models in ([], [fitted_on]):  # a model saved before feature_model was recorded
        return
    raise PcaInputError(
        f"features of {', '.join(models)} cannot be reduced by {model_uri}, fitted on features of {fitted_on}:"
        " featurize with the model and engine it was fitted on, or start over with them (DAG Param full_refresh)"
    )


def check_arguments(args: argparse.Namespace) -> None:
    if args.k is None and not 0 < args.variance <= 1:
        raise PcaInputError(f"--variance {args.variance} must be in (0, 1]")
    if args.max_fit_rows < 2:
        raise PcaInputError(f"--max-fit-rows {args.max_fit_rows} must be at least 2")
    if args.pca_model and (getattr(args, "corpus", None) or getattr(args, "model_output", None)):
        raise PcaInputError("--corpus and --model-output belong to a fit; --model applies a saved model as it is")


def load_model(spark: SparkSession, uri: str) -> pca_model.SavedPca:
    try:
        return pca_model.load(spark, uri)
    except FileNotFoundError as exc:
        raise PcaInputError(f"--model: {exc}; give the folder a fit wrote (OUT/pca_model by default)") from None


def scatter_points(spark: SparkSession, reduced_uri: str, rows: int) -> list:
    sample = spark.read.parquet(reduced_uri)
    fraction = min(1.0, SCATTER_SAMPLE / max(rows, 1))
    if fraction < 1.0:
        sample = sample.sample(fraction=fraction, seed=7)
    return sample.select("label", F.slice("pca", 1, 2).alias("pc")).collect()


def write_plots(spark: SparkSession, output: str, spectrum: np.ndarray, k: int, variance: float | None, points: list) -> None:
    with tempfile.TemporaryDirectory(prefix="fruits-plots-") as tmp:
        curve, scatter = Path(tmp) / "explained_variance.png", Path(tmp) / "pca_scatter.png"
        plot_explained_variance(spectrum, k, variance, curve)
        plot_scatter(points, scatter)
        hadoop_fs.upload_file(spark, curve, hadoop_fs.join(output, curve.name))
        hadoop_fs.upload_file(spark, scatter, hadoop_fs.join(output, scatter.name))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spark = SparkSession.builder.appName("fruits-pca").getOrCreate()
    try:
        report = run(spark, args)
    except PcaInputError as exc:
        print(f"pca: error: {exc}", file=sys.stderr)
        return 2
    verb = "fitted" if report["pca_fitted"] else "applied"
    print(f"pca: {verb} model {report['pca_model']} (k={report['k']}, {report['variance_reached']:.4f} of the"
          f" variance) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
