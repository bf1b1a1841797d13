"""The choices the DAG's Params offer and the Spark jobs accept: the CNN backbones, inference engines,
named weights and poolings, and which files are photos. One home for each; both packages import it.

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

# File names that are candidate photos (any letter case); what the bytes are decides the rest.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")


def has_image_extension(path: str) -> bool:
    """As the jobs' listing glob matches a file name: "..jpg" and ".JPG" count too."""
    return path.rsplit("/", 1)[-1].lower().endswith(tuple(f".{ext}" for ext in IMAGE_EXTENSIONS))
