"""The featurize job's inputs: the images to read (a root searched recursively, or the entries
of a manifest), the listed inputs Spark cannot read, each with its quarantine reason (hidden
names, names Hadoop cannot address or open, missing, empty or over-cap files), and the files that
are not photos by name (contract.model_choices), ignored but listed: every file is accounted for."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs import hadoop_fs
from spark_jobs.contract.model_choices import DEFAULT_MAX_FILE_BYTES, IMAGE_EXTENSIONS, has_image_extension
from spark_jobs.contract.run_files import parse_manifest
from spark_jobs.featurization.input_confinement import confine_inputs
from spark_jobs.featurization.input_errors import InputError

BINARY_FILE_SCHEMA = T.StructType(
    [
        T.StructField("path", T.StringType()),
        T.StructField("modificationTime", T.TimestampType()),
        T.StructField("length", T.LongType()),
        T.StructField("content", T.BinaryType()),
    ]
)
# Hadoop glob for binaryFile's pathGlobFilter: contract.model_choices.IMAGE_EXTENSIONS in any letter case.
IMAGE_GLOB = "*.{" + ",".join(
    "".join(f"[{c.lower()}{c.upper()}]" for c in ext) for ext in IMAGE_EXTENSIONS
) + "}"
HIDDEN_REASON = "hidden name (a file or folder name starts with '.' or '_'): Spark skips it; rename it to featurize it"
UNADDRESSABLE_REASON = (
    "name has ':' and one of {}[]*?\\ : Hadoop's path globbing cannot address it; rename it to featurize it"
)
UNOPENABLE_LOCAL_REASON = (
    "name has ':': Hadoop's local filesystem cannot open it (it parses the name of the file's"
    " .crc checksum sidecar as a URI); rename it to featurize it"
)

Unreadable = tuple[str, str, "int | None"]  # (path, quarantine reason, bytes)


@dataclass(frozen=True)
class ImageInputs:
    """What a run reads: binaryFile rows (lazy), the listing behind them, the inputs left out."""

    files: DataFrame  # at most max_file_bytes each
    listed: list[str]  # DataFrame.inputFiles(): URI-encoded
    unreadable: list[Unreadable]
    ignored: list[str]  # not photos by name (literal paths): never read
    files_seen: int  # every file under the root (hidden ones too) or every manifest entry
    source: str  # the image root or the manifest, as given
    max_file_bytes: int

    @property
    def images_seen(self) -> int:
        """The photo candidates: each ends featurized or quarantined."""
        return len(self.listed) + len(self.unreadable)


def load_inputs(
    spark: SparkSession, images: str | None, manifest: str | None, allowed: list[str] | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> ImageInputs:
    """Read the manifest, confine the inputs to the allowed prefixes (before any Spark job), list."""
    entries = read_manifest(spark, manifest) if manifest else None
    if allowed:
        confine_inputs(spark, allowed, images, manifest, entries)
    # Spark lists many paths with one task per path by default: 1,000 tiny tasks for a
    # 1,000-image manifest. A few tasks per core list the same paths in a fraction of the time.
    spark.conf.set(
        "spark.sql.sources.parallelPartitionDiscovery.parallelism",
        str(max(8, 4 * spark.sparkContext.defaultParallelism)),
    )
    listing = list_images(spark, images=images, manifest_entries=entries)
    # a filter on the length is pushed into binaryFile's reader, which then skips the file unread
    files = listing.files.where(F.col("length") <= max_file_bytes)
    return ImageInputs(files, hadoop_fs.input_files(spark, listing.files), listing.unreadable, listing.ignored,
                       listing.files_seen, images or manifest, max_file_bytes)  # no Spark job


def read_manifest(spark: SparkSession, manifest: str) -> list[str]:
    """Image URIs listed in a manifest (run_files.parse_manifest: in order, without blanks, comments or repeats)."""
    if not hadoop_fs.exists(spark, manifest):
        raise InputError(f"manifest {manifest} does not exist")
    return parse_manifest(hadoop_fs.read_bytes(spark, manifest).decode("utf-8"))


def unaddressable(path: str) -> str | None:
    """Why Hadoop cannot address a literal manifest entry, or None: Hadoop globs any path with
    {}[]*?\\ in it, and its glob splits the path into names and parses a name with ':' as a URI."""
    rest = hadoop_fs.URI_PARTS.match(path)
    body = rest["path"] if rest else path
    if ":" in body and hadoop_fs.GLOB_CHARACTERS.search(body):
        return UNADDRESSABLE_REASON
    return None


def walk_root(spark: SparkSession, root: str) -> tuple[list[Unreadable], list[str], int]:
    """Every file under root, sorted out: the images Spark's listing skips because a name on their
    path is hidden (quarantined), the files that are not photos by name (ignored), and how many
    files there are in all."""
    base = hadoop_fs.qualify(spark, root).rstrip("/") + "/"
    hidden, ignored = [], []
    every = hadoop_fs.list_files(spark, root)
    for path in every:
        relative = path[len(base):] if path.startswith(base) else path.rsplit("/", 1)[-1]
        if not has_image_extension(path):
            ignored.append(path)
        elif any(map(hadoop_fs.is_hidden_name, relative.split("/"))):
            hidden.append((path, HIDDEN_REASON, hadoop_fs.size(spark, path)))
    return hidden, sorted(ignored), len(every)


def manifest_entry_problem(entry: str) -> str | None:
    """Why a manifest entry (a photo by name) is quarantined before any read, or None."""
    reason = unaddressable(entry)
    if reason is None and hadoop_fs.is_hidden_name(entry.rstrip("/").rsplit("/", 1)[-1]):
        return HIDDEN_REASON
    return reason


@dataclass(frozen=True)
class Listing:
    """What list_images found: the binaryFile rows (lazy), the inputs that cannot be read at all
    as (path, reason, bytes), the files ignored as not photos, how many files in all."""

    files: DataFrame
    unreadable: list[Unreadable]
    ignored: list[str]
    files_seen: int


def list_images(
    spark: SparkSession, images: str | None = None, manifest_entries: list[str] | None = None
) -> Listing:
    """The image files to featurize, from an image root or the entries of a manifest
    (read_manifest). Paths are literal (hadoop_fs.literal_path) throughout."""
    # A file Hadoop cannot open (see unscanned_files) is left out of the scan instead of failing
    # the job; unscanned_files then quarantines it with the reason.
    reader = spark.read.format("binaryFile").option("ignoreCorruptFiles", "true")
    if images is not None:
        if not hadoop_fs.is_dir(spark, images):
            raise InputError(f"image root {images} does not exist or is not a folder")
        files = (
            reader.option("recursiveFileLookup", "true")
            .option("pathGlobFilter", IMAGE_GLOB)
            .load(hadoop_fs.glob_escaped(images))
        )
        hidden, ignored, every = walk_root(spark, images)
        return Listing(files, hidden, ignored, every)
    problems: list[Unreadable] = []
    wanted, ignored = [], []
    for entry in manifest_entries or []:
        if not has_image_extension(entry):
            ignored.append(_qualified(spark, entry))
        elif (reason := manifest_entry_problem(entry)) is None:
            wanted.append(entry)
        else:
            problems.append((_qualified(spark, entry), reason, None))

    def load(entries: list[str]) -> DataFrame:
        if not entries:
            return spark.createDataFrame([], BINARY_FILE_SCHEMA)
        return reader.load([hadoop_fs.glob_escaped(entry) for entry in entries])

    try:
        files = load(wanted)
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" not in str(exc) and "Path does not exist" not in str(exc):
            raise
        present = []
        for entry in wanted:
            if hadoop_fs.exists(spark, entry):
                present.append(entry)
            else:
                problems.append((_qualified(spark, entry), "listed in the manifest but not found", None))
        files = load(present)
    return Listing(files, problems, sorted(ignored), len(manifest_entries or []))


def _qualified(spark: SparkSession, entry: str) -> str:
    """The entry as Spark reports paths (file:/… for a local path); as given if Hadoop cannot parse it."""
    if unaddressable(entry) is not None:
        return entry
    return hadoop_fs.qualify(spark, entry)


def unscanned_reason(uri: str, size: int, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> str:
    """Why a listed file has no row: the scan left out a file over the byte-size cap, Spark skips
    zero-byte files silently, and leaves out a file it cannot open (ignoreCorruptFiles), e.g. a
    local file whose name has ':'."""
    if size == 0:
        return "empty file (0 bytes)"
    if size > max_file_bytes:
        return f"file too large: {size} bytes, over the cap of {max_file_bytes} (--max-file-bytes)"
    if uri.startswith("file:") and ":" in uri.rsplit("/", 1)[-1]:
        return UNOPENABLE_LOCAL_REASON
    return "listed but not read by Spark (unreadable: see the Spark log)"


def unscanned_files(
    spark: SparkSession, listed: list[str], scanned: set[str], max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> list[Unreadable]:
    """Listed files missing from the scan, with the reason. `listed` holds
    DataFrame.inputFiles() (URI-encoded), `scanned` the path column (literal)."""
    skipped = []
    for uri in map(hadoop_fs.literal_path, listed):
        if uri not in scanned:
            size = hadoop_fs.size(spark, uri)
            skipped.append((uri, unscanned_reason(uri, size, max_file_bytes), size))
    return skipped
