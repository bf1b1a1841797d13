"""The whole pipeline on this machine: featurize then pca with local Spark, then a summary.

    python -m spark_jobs.run_local --images data/sample --output out/demo \
        --weights models/<file>.h5 --alpha 0.35
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from spark_jobs.s3_uri import is_s3_uri

REPO_ROOT = Path(__file__).resolve().parent.parent
# local[N] gives a failed task no second attempt; local[N,F] allows F attempts per task, so a
# crashed Python worker costs one retried task instead of the whole run, as on a cluster.
DEFAULT_MASTER = "local[2,4]"


def build_parser() -> argparse.ArgumentParser:
    from spark_jobs.featurize import add_input_options, add_model_options
    from spark_jobs.pca import add_pca_options

    parser = argparse.ArgumentParser(prog="run_local", description=__doc__.split("\n\n")[0])
    add_input_options(parser)
    add_model_options(parser)
    add_pca_options(parser)
    spark = parser.add_argument_group("local spark")
    spark.add_argument(
        "--master",
        default=DEFAULT_MASTER,
        help="Spark master; local[N,F] = N cores, up to F attempts per task (default: %(default)s)",
    )
    spark.add_argument("--driver-memory", default="4g", help="Spark driver memory")
    return parser


def local_spark(master: str = DEFAULT_MASTER, driver_memory: str = "4g", conf: dict[str, str] | None = None):
    """A local SparkSession whose Python workers use this interpreter and see this repo (plus `conf`)."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pyspark.sql import SparkSession

    from spark_jobs.local_jvm import local_jvm_options
    from spark_jobs.s3a import s3a_conf

    builder = SparkSession.builder
    # s3:// and s3a:// through S3A (server from the environment), then the caller's settings
    settings = {**s3a_conf(), **(conf or {})}
    settings["spark.driver.extraJavaOptions"] = local_jvm_options(settings.get("spark.driver.extraJavaOptions"))
    for name, value in settings.items():
        builder = builder.config(name, value)
    spark = (
        builder.master(master)
        .appName("fruits-local")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
        .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "2")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def summary_text(report: dict, output: str) -> str:
    reasons = ", ".join(f"{n} {kind}" for kind, n in sorted(report.get("quarantine_reasons", {}).items()))
    kinds = ", ".join(f"{n} {kind}" for kind, n in report.get("ignored_kinds", {}).items())
    lines = [
        f"files seen       {report['files_seen']}  ({report['images_seen']} photos by name)",
        f"featurized       {report['features_rows']}  ({report['feature_dim']} features, {report['model']})",
        f"quarantined      {report['quarantined']}" + (f"  ({reasons})" if reasons else ""),
        f"ignored          {report['ignored']}" + (f"  (not photos: {kinds}; listed in report.json)" if kinds else ""),
        f"PCA k            {report['k']}  (explained variance {report['variance_reached']:.3f},"
        f" target {report['variance_target']})",
        f"PCA model        {report['pca_model']}  ({'fitted on' if report['pca_fitted'] else 'applied from'}"
        f" {report['pca_model_uri']})",
        f"time             featurize {report['featurize_seconds']:.1f} s, pca {report['pca_seconds']:.1f} s",
        f"outputs          {output}/{{features,quarantine,pca{',pca_model' if report['pca_fitted'] else ''}}}",
        f"                 {output}/report.json, explained_variance.png, pca_scatter.png",
    ]
    return "\n".join(lines)


def run_pipeline(spark, args: argparse.Namespace) -> dict:
    """featurize, then pca on its output; the pca report."""
    from spark_jobs import featurize, pca

    featurize.run(spark, args)
    return pca.run(spark, args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        print("run_local: error: Java not found. Spark needs a JDK/JRE 17 (e.g. apt-get install"
              " openjdk-17-jre-headless) on PATH or in JAVA_HOME.", file=sys.stderr)
        return 2
    from spark_jobs import featurize, pca
    from spark_jobs.backbones import ModelConfigError
    from spark_jobs.s3a import S3ConfigError, require_s3a_jars

    uris = (args.images, args.manifest, args.output, args.weights, getattr(args, "model_artifact", None))
    try:
        if any(is_s3_uri(str(uri or "")) for uri in uris):
            require_s3a_jars()
        spark = local_spark(args.master, args.driver_memory)
    except S3ConfigError as exc:
        print(f"run_local: error: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_pipeline(spark, args)
    except (featurize.InputError, ModelConfigError, pca.PcaInputError) as exc:
        print(f"run_local: error: {exc}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(summary_text(report, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
