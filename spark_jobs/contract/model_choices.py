"""The choices the DAG's Params offer and the Spark jobs accept: the CNN backbones, inference engines,
named weights and poolings, which files are photos and how large a file is read. One home for each; both packages import it.

Pure Python (no pyspark, no TensorFlow), so the Airflow worker imports it as well as the jobs.
"""

from __future__ import annotations

BACKBONES = ("mobilenet_v2", "resnet50", "vgg16")
INT8_ENGINE = "onnxruntime-int8"  # the ONNX graph statically quantized (model_export.quantize)
ONNX_ENGINES = ("onnxruntime", INT8_ENGINE)  # the artifact executors load is an ONNX graph
ENGINES = (*ONNX_ENGINES, "tensorflow")
NAMED_WEIGHTS = ("imagenet", "random")  # any other weights value is a file
POOLINGS = ("avg", "max")
# MobileNetV2 widths with pretrained (ImageNet) weights, and the input sizes those weights exist for
MOBILENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENET_IMAGENET_SIZES = (96, 128, 160, 192, 224)

# File names that are candidate photos (any letter case); what the bytes are decides the rest
# (featurization.image_decode). What phones, cameras and browsers save photos as. jpe/jfif: JPEG;
# heic/heif/hif: HEIF (iPhones, recent Android); tif/tiff, bmp, gif: scanners and old uploads.
# A file whose name has none of these is not a photo: featurize ignores it, and lists it by name
# and counts it in featurize.json / report.json (`ignored`, `ignored_files`, `ignored_kinds`).
IMAGE_EXTENSIONS = (
    "jpg", "jpeg", "jpe", "jfif", "png", "webp", "heic", "heif", "hif", "avif", "tif", "tiff", "bmp", "gif",
)
_SUFFIXES = tuple(f".{ext}" for ext in IMAGE_EXTENSIONS)
NO_EXTENSION = "(no extension)"
# Larger files are quarantined before their bytes are read (featurize --max-file-bytes, the DAG's
# Param max_file_bytes): phone photos are 1-12 MB (48 MP: up to ~30), a 12 MP PNG ~20. A Python
# worker holds --arrow-batch-size files at once, so cap x batch bounds its batch as well.
DEFAULT_MAX_FILE_BYTES = 32 * 2**20


def has_image_extension(path: str) -> bool:
    """As the jobs' listing glob matches a file name: "..jpg" and ".JPG" count too."""
    return path.rsplit("/", 1)[-1].lower().endswith(_SUFFIXES)


def extension_kind(path: str) -> str:
    """The file name's extension as the report counts ignored files: '.mov', '.xmp', '(no extension)'."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    stem, dot, extension = name.rpartition(".")
    return f".{extension}" if dot and stem.strip(".") and extension else NO_EXTENSION
