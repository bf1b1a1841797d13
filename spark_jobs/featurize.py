"""featurize job: fruit photos -> CNN feature vectors (Parquet), broken inputs -> quarantine.

    spark-submit --py-files spark_jobs.zip spark_jobs/featurize.py \
        (--images ROOT | --manifest FILE) --output OUT [--allowed-prefix URI ...] [model options]

Writes OUT/features, OUT/quarantine (Parquet) and OUT/featurize.json. Every input image ends
in exactly one of the two Parquet outputs: images_seen = features_rows + quarantined.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs import storage
from spark_jobs.backbones import BACKBONES, ENGINES, NAMED_WEIGHTS, ONNX_ENGINES, POOLINGS, ModelConfigError, ModelSpec, engine_model_id, export_artifact, feature_dim
from spark_jobs.images import DEFAULT_MAX_IMAGE_PIXELS, IMAGE_EXTENSIONS, IMAGE_GLOB, has_image_extension
from spark_jobs.inference import make_featurize_batches
from spark_jobs.run_files import FEATURES, FEATURIZE_SUMMARY, QUARANTINE, parse_manifest
from spark_jobs.s3_uri import S3_SCHEMES

FEATURE_RESULT = T.StructType(
    [
        T.StructField("features", T.ArrayType(T.FloatType())),
        T.StructField("width", T.IntegerType()),
        T.StructField("height", T.IntegerType()),
        T.StructField("mode", T.StringType()),
        T.StructField("error", T.StringType()),
    ]
)
BINARY_FILE_SCHEMA = T.StructType(
    [
        T.StructField("path", T.StringType()),
        T.StructField("modificationTime", T.TimestampType()),
        T.StructField("length", T.LongType()),
        T.StructField("content", T.BinaryType()),
    ]
)
SHOWN_OUTSIDE = 5
FEATURE_COLUMNS = ["path", "label", "features", "width", "height", "mode", "bytes", "modification_time", "model"]
QUARANTINE_COLUMNS = ["path", "label", "reason", "bytes", "modification_time", "model"]

# Driver-side cache: one exported artifact per (spec, engine) in this process.
_ARTIFACTS: dict[tuple[ModelSpec, str], Path] = {}


class InputError(ValueError):
    """The images, manifest or output the user named cannot be used; the message says why."""


def add_model_options(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="mobilenet_v2", choices=sorted(BACKBONES), help="CNN backbone")
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
        help="pre-exported ONNX model (spark_jobs.export_model; local or s3://, with its .json"
        " sidecar): the driver then needs no TensorFlow and the model options above are read"
        " from the sidecar",
    )
    model.add_argument(
        "--engine",
        default="onnxruntime",
        choices=ENGINES,
        help="inference engine on executors; onnxruntime-int8: statically quantized (spark_jobs.quantize)",
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


def _positive(args: argparse.Namespace) -> None:
    for name in ("batch_size", "arrow_batch_size", "max_image_pixels"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.partitions < 0:
        raise InputError("--partitions must be 0 (auto) or positive")


def _quarantine_rows(spark: SparkSession, rows: list[tuple[str, str, int | None]]) -> DataFrame:
    """Quarantine rows for inputs that never reach the decoder: (path, reason, bytes)."""
    schema = T.StructType(
        [
            T.StructField("path", T.StringType()),
            T.StructField("reason", T.StringType()),
            T.StructField("bytes", T.LongType()),
        ]
    )
    return (
        spark.createDataFrame(rows, schema)
        .withColumn("label", label_col(F.col("path")))
        .withColumn("modification_time", F.lit(None).cast("timestamp"))
    )


def read_manifest(spark: SparkSession, manifest: str) -> list[str]:
    """Image URIs listed in a manifest (run_files.parse_manifest: in order, without blanks, comments or repeats)."""
    if not storage.exists(spark, manifest):
        raise InputError(f"manifest {manifest} does not exist")
    return parse_manifest(storage.read_bytes(spark, manifest).decode("utf-8"))


def normalise_uri(uri: str, qualify: Callable[[str], str]) -> str:
    """scheme://authority/path of an input as Hadoop reads it, to compare with a prefix.

    Plain paths go through `qualify` (the default filesystem: file: locally); s3a/s3n become
    s3; '.' segments and repeated slashes go. A '..' segment is a ValueError: Hadoop resolves
    it, so raw/../other/x.jpg reads other/x.jpg.
    """
    parts = storage.URI_PARTS.match(uri) or storage.URI_PARTS.match(qualify(uri))
    scheme, authority, path = parts["scheme"].lower(), (parts["authority"] or "").lower(), parts["path"]
    segments = path.split("/")
    if ".." in segments:
        raise ValueError(f"{uri} has a '..' segment")
    if scheme in S3_SCHEMES:
        scheme = "s3"
    return f"{scheme}://{authority}/" + "/".join(s for s in segments if s not in ("", "."))


def as_folder(uri: str) -> str:
    """With a trailing slash, so that raw/ never admits raw-other/."""
    return uri if uri.endswith("/") else uri + "/"


def hadoop_qualifier(spark: SparkSession) -> Callable[[str], str]:
    """Plain path -> URI on the default filesystem, with two Hadoop calls whatever the count."""
    bases: dict[str, str] = {}

    def qualify(path: str) -> str:
        base = "/" if path.startswith("/") else "."  # "." = the working directory
        if base not in bases:
            bases[base] = storage.qualify(spark, base).rstrip("/")
        return f"{bases[base]}/{path.lstrip('/')}"

    return qualify


def confine_inputs(
    spark: SparkSession,
    allowed: list[str],
    images: str | None = None,
    manifest: str | None = None,
    manifest_entries: list[str] | None = None,
) -> None:
    """InputError unless the image root, or every manifest entry, lies under an allowed prefix."""
    qualify = hadoop_qualifier(spark)
    prefixes = []
    for prefix in allowed:
        if not prefix.strip():
            raise InputError("--allowed-prefix is empty: give a folder such as s3://bucket/raw/")
        try:
            prefixes.append(as_folder(normalise_uri(prefix.strip(), qualify)))
        except ValueError:
            raise InputError(f"--allowed-prefix {prefix} has a '..' segment: give the folder itself") from None
    shown_prefixes = ", ".join(prefixes)

    def inside(uri: str, folder: bool = False) -> bool:
        try:
            normal = normalise_uri(uri, qualify)
        except ValueError:
            return False
        return (as_folder(normal) if folder else normal).startswith(tuple(prefixes))

    if images is not None and not inside(images, folder=True):
        raise InputError(
            f"image root {images} is not under --allowed-prefix {shown_prefixes}"
            " ('..' segments are never allowed): point --images at a folder under an allowed prefix;"
            " no image was read, nothing was written"
        )
    outside = [entry for entry in manifest_entries or [] if not inside(entry)]
    if outside:
        shown = ", ".join(outside[:SHOWN_OUTSIDE])
        more = f" and {len(outside) - SHOWN_OUTSIDE} more" if len(outside) > SHOWN_OUTSIDE else ""
        raise InputError(
            f"manifest {manifest}: {len(outside)} of {len(manifest_entries)} entries are not under"
            f" --allowed-prefix {shown_prefixes}: {shown}{more} ('..' segments are never allowed)."
            " Fix the manifest so that it lists only images under an allowed prefix;"
            " no image was read, nothing was written"
        )


HIDDEN_REASON = "hidden name (a file or folder name starts with '.' or '_'): Spark skips it; rename it to featurize it"
UNADDRESSABLE_REASON = (
    "name has ':' and one of {}[]*?\\ : Hadoop's path globbing cannot address it; rename it to featurize it"
)


def _readable(path: str) -> str | None:
    """Why Hadoop cannot address a literal manifest entry, or None: Hadoop globs any path with
    {}[]*?\\ in it, and its glob splits the path into names and parses a name with ':' as a URI."""
    rest = storage.URI_PARTS.match(path)
    body = rest["path"] if rest else path
    if ":" in body and storage.GLOB_CHARACTERS.search(body):
        return UNADDRESSABLE_REASON
    return None


def hidden_images(spark: SparkSession, root: str) -> list[tuple[str, str, int | None]]:
    """Images under root that Spark's listing skips because a name on their path is hidden."""
    base = storage.qualify(spark, root).rstrip("/") + "/"
    hidden = []
    for path, size in storage.list_files(spark, root):
        relative = path[len(base):] if path.startswith(base) else path.rsplit("/", 1)[-1]
        if has_image_extension(path) and any(map(storage.is_hidden_name, relative.split("/"))):
            hidden.append((path, HIDDEN_REASON, size))
    return hidden


def list_images(
    spark: SparkSession, images: str | None = None, manifest_entries: list[str] | None = None
) -> tuple[DataFrame, list[tuple[str, str, int | None]]]:
    """The image files to featurize (binaryFile rows, lazily) and the listed inputs that
    cannot be read at all, as (path, reason, bytes) — from an image root or the entries of a
    manifest (read_manifest). Paths are literal (storage.literal_path) throughout."""
    # A file Hadoop cannot open (see unscanned_files) is left out of the scan instead of failing
    # the job; unscanned_files then quarantines it with the reason.
    reader = spark.read.format("binaryFile").option("ignoreCorruptFiles", "true")
    if images is not None:
        if not storage.is_dir(spark, images):
            raise InputError(f"image root {images} does not exist or is not a folder")
        files = (
            reader.option("recursiveFileLookup", "true")
            .option("pathGlobFilter", IMAGE_GLOB)
            .load(storage.glob_escaped(images))
        )
        return files, hidden_images(spark, images)
    problems: list[tuple[str, str, int | None]] = []
    wanted = []
    for entry in manifest_entries or []:
        reason = _readable(entry)
        if not has_image_extension(entry):
            expected = ", ".join(IMAGE_EXTENSIONS)
            reason = f"unsupported file extension (expected {expected})"
        elif reason is None and storage.is_hidden_name(entry.rstrip("/").rsplit("/", 1)[-1]):
            reason = HIDDEN_REASON
        if reason is None:
            wanted.append(entry)
        else:
            problems.append((_qualified(spark, entry), reason, None))

    def load(entries: list[str]) -> DataFrame:
        if not entries:
            return spark.createDataFrame([], BINARY_FILE_SCHEMA)
        return reader.load([storage.glob_escaped(entry) for entry in entries])

    try:
        files = load(wanted)
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" not in str(exc) and "Path does not exist" not in str(exc):
            raise
        present = []
        for entry in wanted:
            if storage.exists(spark, entry):
                present.append(entry)
            else:
                problems.append((_qualified(spark, entry), "listed in the manifest but not found", None))
        files = load(present)
    return files, problems


def _qualified(spark: SparkSession, entry: str) -> str:
    """The entry as Spark reports paths (file:/… for a local path); as given if Hadoop cannot parse it."""
    if _readable(entry) is not None:
        return entry
    return storage.qualify(spark, entry)


UNOPENABLE_LOCAL_REASON = (
    "name has ':': Hadoop's local filesystem cannot open it (it parses the name of the file's"
    " .crc checksum sidecar as a URI); rename it to featurize it"
)


def unscanned_reason(uri: str, size: int) -> str:
    """Why a listed file has no row: Spark skips zero-byte files silently, and leaves out a file
    it cannot open (ignoreCorruptFiles), e.g. a local file whose name has ':'."""
    if size == 0:
        return "empty file (0 bytes)"
    if uri.startswith("file:") and ":" in uri.rsplit("/", 1)[-1]:
        return UNOPENABLE_LOCAL_REASON
    return "listed but not read by Spark (unreadable: see the Spark log)"


def unscanned_files(spark: SparkSession, listed: list[str], scanned: set[str]) -> list[tuple[str, str, int | None]]:
    """Listed files missing from the scan, with the reason. `listed` holds
    DataFrame.inputFiles() (URI-encoded), `scanned` the path column (literal)."""
    skipped = []
    for uri in map(storage.literal_path, listed):
        if uri not in scanned:
            size = storage.size(spark, uri)
            skipped.append((uri, unscanned_reason(uri, size), size))
    return skipped


def resolve_weights(spark: SparkSession, weights: str, workdir: Path) -> str:
    """imagenet/random as they are; a file (local or any Hadoop URI) as a local path on the driver."""
    if weights in NAMED_WEIGHTS:
        return weights
    scheme = urlparse(weights).scheme
    if scheme and len(scheme) > 1:  # s3://, s3a://, hdfs://, file: — not a Windows drive letter
        if not storage.exists(spark, weights):
            raise InputError(f"weights file {weights} does not exist")
        local = workdir / Path(urlparse(weights).path).name
        return str(storage.download_file(spark, weights, local))
    if not Path(weights).is_file():
        raise InputError(f"weights file {weights} does not exist (or use imagenet / random)")
    return str(Path(weights).resolve())


def model_artifact(spec: ModelSpec, engine: str) -> Path:
    """Export the model once per driver process; the file name carries its content hash."""
    key = (spec, engine)
    if key not in _ARTIFACTS or not _ARTIFACTS[key].exists():
        workdir = Path(tempfile.mkdtemp(prefix="fruits-model-"))
        exported = export_artifact(spec, engine, workdir)
        digest = hashlib.sha256(exported.read_bytes()).hexdigest()[:16]
        named = exported.with_name(f"fruits-{digest}{''.join(exported.suffixes)}")
        shutil.move(exported, named)
        _ARTIFACTS[key] = named
    return _ARTIFACTS[key]


def fetch_exported_model(spark: SparkSession, uri: str, engine: str, workdir: Path) -> tuple[Path, ModelSpec, str, str]:
    """A pre-exported ONNX model and its sidecar: (local file named by content, spec, model id, weights)."""
    from spark_jobs.export_model import sidecar_path, spec_from_description

    for needed in (uri, sidecar_path(uri)):
        if not storage.exists(spark, needed):
            raise InputError(f"model artifact {needed} does not exist (make it with spark_jobs.export_model)")
    description = storage.read_json(spark, sidecar_path(uri))
    exported_for = description.get("engine", "onnxruntime")
    if exported_for != engine:
        raise InputError(
            f"model artifact {uri} was exported for --engine {exported_for}, not {engine}:"
            f" use it with --engine {exported_for}, or export one with spark_jobs.export_model --engine {engine}"
        )
    local = storage.download_file(spark, uri, workdir / "model.onnx")
    digest = hashlib.sha256(local.read_bytes()).hexdigest()[:16]
    named = local.rename(workdir / f"fruits-{digest}.onnx")
    spec = spec_from_description(description)
    return named, spec, description["model_id"], description["weights"]


def ship_to_executors(spark: SparkSession, artifact: Path) -> None:
    """addFile once per name: artifact names carry their content hash, so a name already
    shipped is the same model (Spark refuses a second path under one name)."""
    shipped = {uri.rsplit("/", 1)[-1] for uri in spark.sparkContext.listFiles}
    if artifact.name not in shipped:
        spark.sparkContext.addFile(str(artifact))


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
        files.repartition(partitions, "path")
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
    started = time.monotonic()
    phases: dict[str, float] = {}
    mark = [started]

    def phase(name: str) -> None:
        now = time.monotonic()
        phases[name] = round(now - mark[0], 3)
        mark[0] = now

    _positive(args)
    manifest_entries = read_manifest(spark, args.manifest) if args.manifest else None
    allowed = getattr(args, "allowed_prefix", None)
    if allowed:  # before any Spark job, weights download or model export
        confine_inputs(spark, allowed, args.images, args.manifest, manifest_entries)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.arrow_batch_size))
    workdir = Path(tempfile.mkdtemp(prefix="fruits-weights-"))
    artifact_uri = getattr(args, "model_artifact", None)
    if artifact_uri:
        if args.engine not in ONNX_ENGINES:
            raise InputError(f"--model-artifact is an ONNX model: use it with --engine {' or '.join(ONNX_ENGINES)}")
        artifact, spec, model_id, weights = fetch_exported_model(spark, artifact_uri, args.engine, workdir)
    else:
        spec = ModelSpec(
            backbone=args.model,
            alpha=args.alpha,
            image_size=args.image_size,
            pooling=args.pooling,
            weights=args.weights,
            seed=args.seed,
        ).validate()
        spec = replace(spec, weights=resolve_weights(spark, args.weights, workdir))
        model_id, weights = engine_model_id(spec, args.engine), args.weights
    # Spark lists many paths with one task per path by default: 1,000 tiny tasks for a
    # 1,000-image manifest. A few tasks per core list the same paths in a fraction of the time.
    spark.conf.set(
        "spark.sql.sources.parallelPartitionDiscovery.parallelism",
        str(max(8, 4 * spark.sparkContext.defaultParallelism)),
    )
    files, unlisted = list_images(spark, images=args.images, manifest_entries=manifest_entries)
    listed = files.inputFiles()  # the file index's listing; no Spark job
    file_count = len(listed)
    phase("list_inputs")
    if not artifact_uri:
        artifact = model_artifact(spec, args.engine)
    ship_to_executors(spark, artifact)
    phase("model")
    partitions = args.partitions or auto_partitions(spark, file_count)
    results = featurize_files(
        files, spec, args.engine, artifact.name, args.batch_size, partitions, args.max_image_pixels
    ).persist(StorageLevel.DISK_ONLY)  # two writes, one inference pass; off-heap so memory stays flat
    features_uri = storage.join(args.output, FEATURES)
    quarantine_uri = storage.join(args.output, QUARANTINE)
    try:
        features = results.where(F.col("error").isNull()).withColumn("model", F.lit(model_id))
        features.select(*FEATURE_COLUMNS).write.mode("overwrite").parquet(features_uri)
        phase("featurize_and_write")
        skipped = []
        if results.count() < file_count:  # counted from the cache
            scanned = {row.path for row in results.select("path").collect()}
            skipped = unscanned_files(spark, listed, scanned)
        quarantine = (
            results.where(F.col("error").isNotNull())
            .withColumnRenamed("error", "reason")
            .select("path", "label", "reason", "bytes", "modification_time")
            .unionByName(_quarantine_rows(spark, unlisted + skipped))
            .withColumn("model", F.lit(model_id))
        )
        quarantine.select(*QUARANTINE_COLUMNS).coalesce(1).write.mode("overwrite").parquet(quarantine_uri)
        phase("quarantine")
    finally:
        results.unpersist()
    written = spark.read.parquet(quarantine_uri)
    quarantined = written.count()
    features_rows = spark.read.parquet(features_uri).count()
    images_seen = file_count + len(unlisted)
    if features_rows + quarantined != images_seen:
        raise RuntimeError(
            f"counts do not reconcile: {images_seen} images seen, {features_rows} featurized"
            f" + {quarantined} quarantined"
        )
    reasons = {
        row["kind"]: row["count"]
        for row in written.groupBy(F.split("reason", ":").getItem(0).alias("kind")).count().collect()
    }
    phase("verify_counts")
    summary = {
        "images_seen": images_seen,
        "features_rows": features_rows,
        "quarantined": quarantined,
        "quarantine_reasons": reasons,
        "model": model_id,
        "weights": weights,
        "engine": args.engine,
        "image_size": spec.image_size,
        "feature_dim": feature_dim(spec),
        "partitions": partitions,
        "batch_size": args.batch_size,
        "arrow_batch_size": args.arrow_batch_size,
        "input": args.images or args.manifest,
        "featurize_seconds": round(time.monotonic() - started, 3),
        "phase_seconds": phases,
    }
    storage.write_json(spark, storage.join(args.output, FEATURIZE_SUMMARY), summary)
    if not artifact_uri:  # an exported model's file is still registered with addFile
        shutil.rmtree(workdir, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spark = SparkSession.builder.appName("fruits-featurize").getOrCreate()
    try:
        summary = run(spark, args)
    except (InputError, ModelConfigError) as exc:
        print(f"featurize: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"featurize: {summary['images_seen']} images seen, {summary['features_rows']} featurized,"
        f" {summary['quarantined']} quarantined -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
