"""featurize job: fruit photos -> CNN feature vectors (Parquet), broken inputs -> quarantine.

    spark-submit --py-files spark_jobs.zip spark_jobs/featurize.py \
        (--images ROOT | --manifest FILE) --output OUT [--allowed-prefix URI ...] [model options]

Writes OUT/features, OUT/quarantine (Parquet) and OUT/featurize.json. Every input image (a photo
by name, spark_jobs.contract.model_choices) ends in exactly one of the two Parquet outputs: images_seen =
features_rows + quarantined; every other file is ignored and listed by name in featurize.json:
files_seen = images_seen + ignored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs import hadoop_fs
from spark_jobs.cnn.backbones import ModelConfigError, ModelSpec, feature_dim
from spark_jobs.cnn.model_acquisition import AcquiredModel, acquire_model
from spark_jobs.contract.model_choices import BACKBONES, DEFAULT_MAX_FILE_BYTES, ENGINES, POOLINGS, extension_kind
from spark_jobs.contract.run_files import FEATURES, FEATURIZE_SUMMARY, QUARANTINE
from spark_jobs.featurization.image_decode import DEFAULT_MAX_IMAGE_PIXELS
from spark_jobs.featurization.image_listing import ImageInputs, Unreadable, load_inputs, unscanned_files
from spark_jobs.featurization.inference import make_featurize_batches
from spark_jobs.featurization.input_errors import InputError
from spark_jobs.featurization.phase_timer import PhaseTimer

FEATURE_RESULT = T.StructType(
    [
        T.StructField("features", T.ArrayType(T.FloatType())),
        T.StructField("width", T.IntegerType()),
        T.StructField("height", T.IntegerType()),
        T.StructField("mode", T.StringType()),
        T.StructField("format", T.StringType()),
        T.StructField("error", T.StringType()),
    ]
)
FEATURE_COLUMNS = ["path", "label", "features", "width", "height", "mode", "format", "bytes", "modification_time", "model"]
QUARANTINE_COLUMNS = ["path", "label", "reason", "bytes", "modification_time", "model"]


def add_model_options(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="mobilenet_v2", choices=BACKBONES, help="CNN backbone")
    model.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier")
    model.add_argument("--image-size", type=int, default=224, help="square input size in pixels")
    model.add_argument("--pooling", default="avg", choices=POOLINGS, help="global pooling of the last feature map")
    model.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (Keras download on the driver), random (seeded, BatchNorm-calibrated),"
        " or a weights file: local path or s3:// URI",
    )
    model.add_argument("--seed", type=int, default=42, help="seed of --weights random")
    model.add_argument(
        "--model-artifact",
        default=None,
        help="pre-exported ONNX model (model_export.export_model; local or s3://, with its .json"
        " sidecar): the driver then needs no TensorFlow and the model options above are read"
        " from the sidecar",
    )
    model.add_argument(
        "--engine",
        default="onnxruntime",
        choices=ENGINES,
        help="inference engine on executors; onnxruntime-int8: statically quantized (model_export.quantize),"
        " needs --model-artifact",
    )
    model.add_argument("--batch-size", type=int, default=32, help="images per CNN call")
    model.add_argument(
        "--arrow-batch-size", type=int, default=128, help="rows per Arrow batch sent to a Python worker"
    )
    model.add_argument("--partitions", type=int, default=0, help="Spark partitions for inference (0 = auto)")
    model.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="larger images are quarantined as decompression bombs",
    )


def add_input_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="image root, searched recursively (<label>/<file>)")
    source.add_argument("--manifest", help="text file listing one image URI per line")
    parser.add_argument("--output", required=True, help="output root (local path or s3:// URI)")
    parser.add_argument(
        "--allowed-prefix",
        action="append",
        metavar="URI",
        help="repeatable: read only images under this folder (local path or s3:// URI); a manifest"
        " entry or --images root elsewhere, or with a '..' segment, stops the job before any work",
    )
    parser.add_argument(
        "--max-file-bytes",
        type=int,
        default=DEFAULT_MAX_FILE_BYTES,
        help="larger files are quarantined without their bytes being read (default: %(default)s = 32 MiB)",
    )


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featurize", description=__doc__.split("\n\n")[0], add_help=add_help
    )
    add_input_options(parser)
    add_model_options(parser)
    return parser


def label_col(path: Column) -> Column:
    """The fruit label: the name of the image's parent folder (Fruits-360 layout)."""
    return F.element_at(F.split(path, "/"), -2)


def check_settings(args: argparse.Namespace) -> None:
    for name in ("batch_size", "arrow_batch_size", "max_image_pixels", "max_file_bytes"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.partitions < 0:
        raise InputError("--partitions must be 0 (auto) or positive")


def featurize_files(
    files: DataFrame,
    spec: ModelSpec,
    engine: str,
    artifact_name: str,
    batch_size: int,
    partitions: int,
    max_image_pixels: int,
) -> DataFrame:
    """binaryFile rows -> one row per file with features or the decode error."""
    featurize_batches = make_featurize_batches(engine, artifact_name, spec, batch_size, max_image_pixels)
    featurize_udf = F.pandas_udf(featurize_batches, FEATURE_RESULT)  # scalar iterator UDF
    return (
        files.coalesce(partitions)  # the scan's own splits, merged: no shuffle of the image bytes
        .select(
            "path",
            label_col(F.col("path")).alias("label"),
            F.col("length").alias("bytes"),
            F.col("modificationTime").alias("modification_time"),
            featurize_udf("content").alias("result"),
        )
        .select("path", "label", "bytes", "modification_time", "result.*")
    )


def auto_partitions(spark: SparkSession, image_count: int) -> int:
    """Enough tasks to keep every core busy and to balance stragglers; ~1000 images each at scale."""
    return max(1, spark.sparkContext.defaultParallelism * 4, -(-image_count // 1000))


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    """Featurize; write features, quarantine and featurize.json under args.output."""
    timer = PhaseTimer()
    check_settings(args)
    with timer.phase("list_inputs"):
        inputs = load_inputs(spark, args.images, args.manifest, getattr(args, "allowed_prefix", None),
                             args.max_file_bytes)
    with timer.phase("model"):
        model = acquire_model(spark, args)
    partitions = args.partitions or auto_partitions(spark, len(inputs.listed))
    with session_settings(spark, featurize_settings(args, partitions)):
        results = featurize(inputs, model, args, partitions)
        try:
            with timer.phase("featurize_and_write"):
                scanned, featurized = write_features(results, model, hadoop_fs.join(args.output, FEATURES))
            with timer.phase("quarantine"):
                unreadable = inputs.unreadable + unscanned(spark, inputs, results, scanned)
                write_quarantine(
                    spark, results, scanned > featurized, unreadable, model, hadoop_fs.join(args.output, QUARANTINE)
                )
        finally:
            results.unpersist()
    with timer.phase("verify_counts"):
        counts = verify_counts(spark, inputs, featurized, scanned - featurized + len(unreadable), args.output)
    summary = {
        **counts,
        "model": model.model_id,
        "weights": model.weights,
        "engine": model.engine,
        "image_size": model.spec.image_size,
        "feature_dim": feature_dim(model.spec),
        "partitions": partitions,
        "max_file_bytes": inputs.max_file_bytes,
        "max_image_pixels": args.max_image_pixels,
        "batch_size": args.batch_size,
        "arrow_batch_size": args.arrow_batch_size,
        "arrow_batch_rows": arrow_batch_rows(args.arrow_batch_size, inputs.max_file_bytes),
        "input": inputs.source,
        "featurize_seconds": timer.total,
        "phase_seconds": timer.seconds,
    }
    hadoop_fs.write_json(spark, hadoop_fs.join(args.output, FEATURIZE_SUMMARY), summary)
    return summary


# The most image bytes one Arrow batch may hold (Spark 3.5 bounds a batch by rows only): a Python
# worker holds the batch, pandas' copy of it and one decoded image; EMR budgets 1.5 GB per worker
# (fruits_emr.emr_request.PYTHON_WORKER_MEMORY_MB).
ARROW_BATCH_BYTES = 512 * 2**20


def arrow_batch_rows(arrow_batch_size: int, max_file_bytes: int) -> int:
    """Rows per Arrow batch: --arrow-batch-size, fewer when that many files at the byte cap would
    pass ARROW_BATCH_BYTES (16 at the default 32 MiB cap; 128 with a cap of 4 MiB)."""
    return max(1, min(arrow_batch_size, ARROW_BATCH_BYTES // max_file_bytes))


def featurize_settings(args: argparse.Namespace, partitions: int) -> dict[str, str]:
    """The Spark SQL settings of the featurize pass (session_settings)."""
    return {
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(arrow_batch_rows(args.arrow_batch_size, args.max_file_bytes)),
        # At least `partitions` scan splits, which featurize_files merges into exactly that many tasks.
        "spark.sql.files.minPartitionNum": str(partitions),
        # Adaptive execution (Spark 3.5) computes a cached DataFrame in a job of its own, then the
        # write reads every row back from the cache: without it the write's own tasks fill the cache.
        "spark.sql.adaptive.enabled": "false",
    }


@contextmanager
def session_settings(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Spark SQL settings for the block, then the session's own values back (run_local's pca
    runs in the same session)."""
    before = {name: spark.conf.get(name, None) for name in settings}
    for name, value in settings.items():
        spark.conf.set(name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                spark.conf.unset(name)
            else:
                spark.conf.set(name, value)


def featurize(inputs: ImageInputs, model: AcquiredModel, args: argparse.Namespace, partitions: int) -> DataFrame:
    """One row per scanned file, features or the decode error; cached on disk: two writes read it."""
    results = featurize_files(
        inputs.files, model.spec, model.engine, model.artifact.name, args.batch_size, partitions, args.max_image_pixels
    )
    return results.persist(StorageLevel.DISK_ONLY)  # one inference pass; off-heap so memory stays flat


def write_features(results: DataFrame, model: AcquiredModel, uri: str) -> tuple[int, int]:
    """Write the featurized rows; return (rows scanned, rows featurized), counted during the write."""
    outcomes = Observation("featurize_outcomes")
    counted = results.observe(
        outcomes, F.count(F.lit(1)).alias("scanned"), F.count_if(F.col("error").isNull()).alias("featurized")
    )
    features = counted.where(F.col("error").isNull()).withColumn("model", F.lit(model.model_id))
    features.select(*FEATURE_COLUMNS).write.mode("overwrite").parquet(uri)
    return outcomes.get["scanned"], outcomes.get["featurized"]


def unscanned(spark: SparkSession, inputs: ImageInputs, results: DataFrame, scanned_rows: int) -> list[Unreadable]:
    """Listed files the scan left out (empty, unopenable), with the reason."""
    if scanned_rows >= len(inputs.listed):
        return []
    scanned = {row.path for row in results.select("path").collect()}
    return unscanned_files(spark, inputs.listed, scanned, inputs.max_file_bytes)


def quarantine_rows(spark: SparkSession, rows: list[Unreadable]) -> DataFrame:
    """Quarantine rows for inputs that never reach the decoder: (path, reason, bytes)."""
    schema = T.StructType(
        [
            T.StructField("path", T.StringType()),
            T.StructField("reason", T.StringType()),
            T.StructField("bytes", T.LongType()),
        ]
    )
    if rows:
        frame = spark.createDataFrame(rows, schema)
    else:  # planned in the JVM: even an empty list from Python costs a cold run a job (~0.3 s)
        frame = spark.range(0).select(*[F.lit(None).cast(field.dataType).alias(field.name) for field in schema])
    return (
        frame.withColumn("label", label_col(F.col("path")))
        .withColumn("modification_time", F.lit(None).cast("timestamp"))
    )


def write_quarantine(
    spark: SparkSession, results: DataFrame, decode_errors: bool, unreadable: list[Unreadable], model: AcquiredModel,
    uri: str,
) -> None:
    quarantine = quarantine_rows(spark, unreadable)
    if decode_errors:  # else the cached results need no second scan
        failed = results.where(F.col("error").isNotNull()).withColumnRenamed("error", "reason")
        quarantine = failed.select("path", "label", "reason", "bytes", "modification_time").unionByName(quarantine)
    quarantine = quarantine.withColumn("model", F.lit(model.model_id)).select(*QUARANTINE_COLUMNS)
    # One file. Over the cache: repartition, not coalesce(1), so that every core scans it, not one
    # task; rows from the driver alone: coalesce(1), no shuffle.
    (quarantine.repartition(1) if decode_errors else quarantine.coalesce(1)).write.mode("overwrite").parquet(uri)


def verify_counts(spark: SparkSession, inputs: ImageInputs, featurized: int, quarantined: int, output: str) -> dict:
    """Every image seen lands in exactly one output, the quarantine file holds every quarantined
    row, and every file listed is an image seen or ignored (under a root: Spark's listing against a
    walk of every file). The features are counted as they are written, not read back: a write is
    one committed job."""
    reasons: dict[str, int] = {}
    if quarantined:  # the quarantine is small: read back, it gives the reasons too
        written = spark.read.parquet(hadoop_fs.join(output, QUARANTINE))
        kind = F.split("reason", ":").getItem(0).alias("kind")
        reasons = {row["kind"]: row["count"] for row in written.groupBy(kind).count().collect()}
    ignored = len(inputs.ignored)
    if (featurized + quarantined != inputs.images_seen or sum(reasons.values()) != quarantined
            or inputs.images_seen + ignored != inputs.files_seen):
        raise RuntimeError(
            f"counts do not reconcile: {inputs.files_seen} files seen, {inputs.images_seen} images seen,"
            f" {featurized} featurized + {quarantined} quarantined ({sum(reasons.values())} rows in the"
            f" quarantine file) + {ignored} ignored"
        )
    kinds: dict[str, int] = {}
    for path in inputs.ignored:
        kinds[extension_kind(path)] = kinds.get(extension_kind(path), 0) + 1
    return {"files_seen": inputs.files_seen, "images_seen": inputs.images_seen, "features_rows": featurized,
            "quarantined": quarantined, "quarantine_reasons": reasons, "ignored": ignored,
            "ignored_kinds": dict(sorted(kinds.items())), "ignored_files": inputs.ignored}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spark = SparkSession.builder.appName("fruits-featurize").getOrCreate()
    try:
        summary = run(spark, args)
    except (InputError, ModelConfigError) as exc:
        print(f"featurize: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"featurize: {summary['files_seen']} files seen: {summary['features_rows']} featurized,"
        f" {summary['quarantined']} quarantined, {summary['ignored']} ignored (not photos:"
        f" {summary['ignored_kinds'] or 'none'}) -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
