"""The CNN backbones: which ones exist, how to build them with their weights, and how the
driver turns one into a single artifact file that executors load without TensorFlow's
weight download (an ONNX graph, or a Keras weights file).

TensorFlow/Keras are imported inside functions: executors on the ONNX engine never import them.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spark_jobs.contract.model_choices import BACKBONES, ENGINES, INT8_ENGINE, POOLINGS

# backbone -> (keras.applications module, constructor); each module has its preprocess_input
KERAS_APPLICATIONS: dict[str, tuple[str, str]] = {
    "mobilenet_v2": ("keras.applications.mobilenet_v2", "MobileNetV2"),
    "resnet50": ("keras.applications.resnet50", "ResNet50"),
    "vgg16": ("keras.applications.vgg16", "VGG16"),
}
BATCHNORM_CALIBRATION_IMAGES = 32  # synthetic images that set a random model's BatchNorm statistics


class ModelConfigError(ValueError):
    """A model setting the user chose cannot work; the message says which and why."""


@dataclass(frozen=True)
class ModelSpec:
    backbone: str = "mobilenet_v2"
    alpha: float = 1.0
    image_size: int = 224
    pooling: str = "avg"
    weights: str = "imagenet"  # "imagenet", "random", or a local path (resolved by the driver)
    seed: int = 42

    def validate(self) -> ModelSpec:
        if self.backbone not in BACKBONES:
            raise ModelConfigError(
                f"unknown model {self.backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        if self.pooling not in POOLINGS:
            raise ModelConfigError(f"unknown pooling {self.pooling!r}; choose avg or max")
        if self.backbone != "mobilenet_v2" and self.alpha != 1.0:
            raise ModelConfigError(f"--alpha applies to mobilenet_v2 only, not {self.backbone}")
        if not 32 <= self.image_size <= 1024:
            raise ModelConfigError(f"--image-size {self.image_size} is outside 32..1024")
        return self

    @property
    def model_id(self) -> str:
        """Stable identifier written next to every feature row."""
        arch = self.backbone + (f"-a{self.alpha:g}" if self.backbone == "mobilenet_v2" else "")
        arch += f"-{self.image_size}-{self.pooling}"
        if self.weights == "imagenet":
            tag = "imagenet"
        elif self.weights == "random":
            tag = f"random-seed{self.seed}"
        else:
            digest = hashlib.sha256(Path(self.weights).read_bytes()).hexdigest()[:12]
            tag = f"{Path(self.weights).name}#{digest}"
        return f"{arch}:{tag}"


def _application(spec: ModelSpec):
    module_name, constructor = KERAS_APPLICATIONS[spec.backbone]
    module = importlib.import_module(module_name)
    return getattr(module, constructor), module.preprocess_input


def build_model(spec: ModelSpec, load_weights: bool = True):
    """Keras model: raw RGB pixels (0..255, float32) -> pooled features, preprocessing inside.

    With `load_weights=False` only the architecture is built (executors then load a weights
    file shipped by the driver).
    """
    import keras

    constructor, preprocess_input = _application(spec)
    weights = spec.weights if load_weights and spec.weights != "random" else None
    kwargs = dict(
        include_top=False,
        weights=weights,
        pooling=spec.pooling,
        input_shape=(spec.image_size, spec.image_size, 3),
    )
    if spec.backbone == "mobilenet_v2":
        kwargs["alpha"] = spec.alpha
    if spec.weights == "random":
        keras.utils.set_random_seed(spec.seed)
    try:
        backbone = constructor(**kwargs)
    except (ValueError, OSError) as exc:
        hint = ""
        if weights not in (None, "imagenet"):
            hint = (
                " — the weights file must match the model, alpha and pooling-free backbone"
                " (the bundled models/ file is mobilenet_v2 alpha 0.35)"
            )
        raise ModelConfigError(
            f"cannot build {spec.backbone} (alpha={spec.alpha}, image size {spec.image_size},"
            f" weights {spec.weights!r}): {exc}{hint}"
        ) from None
    except Exception as exc:  # Keras raises a bare Exception when it cannot download named weights
        if weights != "imagenet" or "URL fetch failure" not in str(exc):
            raise
        raise ModelConfigError(
            f"weights 'imagenet' for {spec.backbone} (alpha={spec.alpha}) must be downloaded by Keras and the"
            f" download failed ({exc.__cause__ or exc}); use a local weights file (--weights"
            " models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5 --alpha 0.35 is bundled)"
            " or put Keras' file in ~/.keras/models/"
        ) from None
    pixels = keras.Input(shape=(spec.image_size, spec.image_size, 3), name="pixels")
    scaled = keras.layers.Lambda(preprocess_input, name="preprocess")(pixels)
    model = keras.Model(pixels, backbone(scaled), name=f"{spec.backbone}_features")
    if spec.weights == "random" and load_weights:
        calibrate_batchnorm(model, calibration_images(spec.image_size, spec.seed))
    return model


def calibration_images(size: int, seed: int, count: int = BATCHNORM_CALIBRATION_IMAGES) -> np.ndarray:
    """Seeded, smooth, photo-like RGB images (0..255) for BatchNorm calibration."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        smooth = np.asarray(
            Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.float32
        )
        images.append(np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255))
    return np.stack(images).astype(np.float32)


def calibrate_batchnorm(model, images: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics to the statistics of one calibration batch.

    A randomly initialised network keeps BatchNorm's identity statistics, so activations
    shrink layer after layer (features around 1e-11). One forward pass in training mode with
    momentum 0 stores each layer's real batch mean/variance, computed in order, so inference
    then sees unit-scale activations throughout.
    """
    import keras

    layers = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        else:
            yield layer


def engine_model_id(spec: ModelSpec, engine: str) -> str:
    """The model id of the features an engine computes: int8 features are another model's."""
    return spec.model_id + ("+int8" if engine == INT8_ENGINE else "")


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ModelConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return engine


def export_artifact(spec: ModelSpec, engine: str, out_dir: Path) -> Path:
    """Build the model once on the driver and write what executors load: model.onnx (fp32) or
    model.weights.h5 (tensorflow). The int8 engine's model is exported beforehand by model_export
    (quantization needs the fine-tuning and calibration tooling, which is not staged to the cluster)."""
    check_engine(engine)
    if engine == INT8_ENGINE:
        raise ModelConfigError(
            f"--engine {INT8_ENGINE} needs a pre-exported --model-artifact: make one with"
            f" `python -m model_export.export_model --engine {INT8_ENGINE} --output model.onnx ...`"
            " (make run and the DAG do this for you)"
        )
    model = build_model(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    if engine == "onnxruntime":
        return write_onnx(model, spec, out_dir / "model.onnx")
    path = out_dir / "model.weights.h5"
    model.save_weights(str(path))
    return path


def write_onnx(model, spec: ModelSpec, path: Path) -> Path:
    model(np.zeros((1, spec.image_size, spec.image_size, 3), np.float32), training=False)  # export needs a built graph
    path.parent.mkdir(parents=True, exist_ok=True)
    model.export(str(path), format="onnx", verbose=False)
    return path


def feature_dim(spec: ModelSpec) -> int:
    """Length of the pooled feature vector, without building the model."""
    if spec.backbone == "mobilenet_v2":
        return 1280 if spec.alpha <= 1.0 else int(round(1280 * spec.alpha))
    return {"vgg16": 512, "resnet50": 2048}[spec.backbone]
