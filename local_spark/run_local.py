"""The whole pipeline on this machine: featurize then pca with local Spark, then a summary.

    python -m local_spark.run_local --images data/sample --output out/demo \
        --weights models/<file>.h5 --alpha 0.35

With an ONNX engine the model comes from the machine's model cache (model_export.model_cache):
exported once per model identity, then read in well under a second by every later run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from local_spark.s3a import S3ConfigError, require_s3a_jars
from local_spark.session import DEFAULT_MASTER, REPO_ROOT, local_spark
from model_export.model_cache import ModelExportRefused, exported_model
from model_export.model_identity import ExportSettings
from spark_jobs import featurize, pca
from spark_jobs.cnn.backbones import ModelConfigError
from spark_jobs.contract.model_choices import NAMED_WEIGHTS, ONNX_ENGINES
from spark_jobs.contract.s3_uri import is_s3_uri
from spark_jobs.featurization.input_errors import InputError

# the repository's real ImageNet MobileNetV2 alpha 0.35 weights (make demo's)
BUNDLED_WEIGHTS = REPO_ROOT / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_local", description=__doc__.split("\n\n")[0])
    featurize.add_input_options(parser)
    featurize.add_model_options(parser)
    pca.add_pca_options(parser)
    spark = parser.add_argument_group("local spark")
    spark.add_argument(
        "--master",
        default=DEFAULT_MASTER,
        help="Spark master; local[N,F] = N cores, up to F attempts per task (default: %(default)s)",
    )
    spark.add_argument("--driver-memory", default="4g", help="Spark driver memory")
    return parser


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


def with_cached_model(args: argparse.Namespace) -> argparse.Namespace:
    """args with --model-artifact from the machine's model cache, for an ONNX engine and named or
    local weights; otherwise unchanged (the job then builds the model itself)."""
    weights = args.weights
    if args.model_artifact or args.engine not in ONNX_ENGINES or is_s3_uri(weights):
        return args
    if weights not in NAMED_WEIGHTS:
        if not Path(weights).is_file():
            raise InputError(f"weights file {weights} does not exist (or use imagenet / random)")
        weights = str(Path(weights).resolve())
    settings = ExportSettings(model=args.model, alpha=args.alpha, image_size=args.image_size, weights=weights,
                              engine=args.engine, pooling=args.pooling, seed=args.seed)
    try:
        artifact = exported_model(settings)
    except ModelExportRefused as exc:
        raise ModelConfigError(str(exc)) from None
    return argparse.Namespace(**{**vars(args), "model_artifact": str(artifact)})


def run_pipeline(spark, args: argparse.Namespace) -> dict:
    """featurize, then pca on its output; the pca report."""
    args = with_cached_model(args)
    featurize.run(spark, args)
    return pca.run(spark, args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        print("run_local: error: Java not found. Spark needs a JDK/JRE 17 (e.g. apt-get install"
              " openjdk-17-jre-headless) on PATH or in JAVA_HOME.", file=sys.stderr)
        return 2
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
    except (InputError, ModelConfigError, pca.PcaInputError) as exc:
        print(f"run_local: error: {exc}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(summary_text(report, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
