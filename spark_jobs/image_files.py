"""Which files are photos to featurize, by name: the one list of photo extensions, shared by the
featurize job (listing, manifest entries) and the DAG (fruits_emr.layout: raw keys, S3 events).

Pure Python (no Spark, no Pillow), so the Airflow worker imports it as well as the jobs. The
extension only selects candidates: spark_jobs.images identifies each candidate by its content.
A file whose name has none of these extensions is not a photo: it is ignored, and listed by name
and counted in featurize.json / report.json (`ignored`, `ignored_files`, `ignored_kinds`).
(Its home until spark_jobs/contract/model_choices.py holds the shared constants.)
"""

from __future__ import annotations

# What phones, cameras and browsers save photos as. jpe/jfif: JPEG; heic/heif/hif: HEIF
# (iPhones, recent Android); tif/tiff, bmp, gif: scanners and old uploads.
IMAGE_EXTENSIONS = (
    "jpg", "jpeg", "jpe", "jfif", "png", "webp", "heic", "heif", "hif", "avif", "tif", "tiff", "bmp", "gif",
)
# Hadoop glob for binaryFile's pathGlobFilter: the extensions above in any letter case.
IMAGE_GLOB = "*.{" + ",".join(
    "".join(f"[{c.lower()}{c.upper()}]" for c in ext) for ext in IMAGE_EXTENSIONS
) + "}"
_SUFFIXES = tuple(f".{ext}" for ext in IMAGE_EXTENSIONS)
NO_EXTENSION = "(no extension)"
# Larger files are quarantined before their bytes are read (featurize --max-file-bytes, the DAG's
# Param max_file_bytes): phone photos are 1-12 MB (48 MP: up to ~30), a 12 MP PNG ~20. A Python
# worker holds --arrow-batch-size files at once, so cap x batch bounds its batch as well.
DEFAULT_MAX_FILE_BYTES = 32 * 2**20


def has_image_extension(path: str) -> bool:
    """As IMAGE_GLOB matches a file name: "..jpg" and ".JPG" count too (splitext would say no extension)."""
    return path.rsplit("/", 1)[-1].lower().endswith(_SUFFIXES)


def extension_kind(path: str) -> str:
    """The file name's extension as the report counts ignored files: '.mov', '.xmp', '(no extension)'."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    stem, dot, extension = name.rpartition(".")
    return f".{extension}" if dot and stem.strip(".") and extension else NO_EXTENSION
