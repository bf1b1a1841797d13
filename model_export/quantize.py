"""The int8 engine's model: the exported ONNX backbone statically quantized by ONNX Runtime
(QDQ format, int8 per-channel weights stored as uint8 around 128: unsigned_weights, uint8
activations, ranges at the 99.99th percentile, the normalised pixels on the uint8 grid:
exact_input_grid), calibrated on
real photos decoded exactly as the featurize job decodes them (spark_jobs.featurization.image_decode.decode_image). MobileNetV2
comes fine-tuned for int8 first (model_export.quantization_training); other backbones get their
convolutions' biases corrected for the rounding of their weights instead (correct_biases).

The calibration set is every image under a folder (model_identity.calibration_files; default the
repo's data/sample, 40 photos, 10 per fruit), sorted by relative path; the same images and model give the same bytes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from spark_jobs.featurization.image_decode import decode_image

CALIBRATION_BATCH = 8  # images per calibration run (sets memory only: the histograms span all images)
# activation range: 99.99 % of the calibration values; MinMax (every extreme) gives cosine 0.96, this 0.98
CALIBRATION_PERCENTILE = 99.99
WEIGHT_LEVELS = 127  # ONNX Runtime's symmetric int8 weights: -127..127 times a per-channel scale


def calibration_pixels(files: list[Path], image_size: int) -> np.ndarray:
    """(n, size, size, 3) float32 RGB 0..255, as the featurize job feeds the model."""
    return np.stack([decode_image(path.read_bytes(), image_size).pixels for path in files]).astype(np.float32)


def canonical_names(model) -> None:
    """Rename the graph's nodes, weights and inner tensors by position of first use: the exporter
    numbers them with process-wide counters (and lists weights in no fixed order), and the
    quantizer derives its names and order from them."""
    graph = model.graph
    graph.doc_string = ""  # "converted from <numbered TensorFlow function>"
    keep = {value.name for value in [*graph.input, *graph.output]}
    weights = {tensor.name: tensor for tensor in graph.initializer}
    names: dict[str, str] = {}
    for index, node in enumerate(graph.node):
        node.name = f"n{index}"
        for position, name in enumerate(node.input):
            if name in weights and name not in names:
                names[name] = f"w{len(names)}"
            node.input[position] = names.get(name, name)
        for position, name in enumerate(node.output):
            if name and name not in keep:
                names[name] = node.output[position] = f"t{len(names)}"
    for tensor in weights.values():
        tensor.name = names.get(tensor.name, tensor.name)
    ordered = sorted(graph.initializer, key=lambda tensor: (len(tensor.name), tensor.name))
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = names.get(value.name, value.name)
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:  # the exporter's numbered name of the batch dimension
                dim.dim_param = "batch"


def rounded_weights(weights: np.ndarray) -> np.ndarray:
    """The weights as ONNX Runtime's per-channel (axis 0) symmetric int8 quantization leaves them."""
    scale = np.abs(weights).reshape(len(weights), -1).max(axis=1) / WEIGHT_LEVELS
    scale = np.where(scale == 0, 1.0, scale).reshape(-1, *[1] * (weights.ndim - 1))
    return np.rint(weights / scale) * scale


def input_means(model, names: list[str], pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel mean of each named NCHW tensor over the images (fp32 model)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    sums: dict[str, np.ndarray] = {}
    for start in range(0, len(pixels), CALIBRATION_BATCH):
        batch = pixels[start : start + CALIBRATION_BATCH]
        for name, value in zip(names, session.run(names, {feed: batch}), strict=True):
            sums[name] = sums.get(name, 0) + value.mean(axis=(2, 3), dtype=np.float64).sum(axis=0)
    return {name: total / len(pixels) for name, total in sums.items()}


def correct_biases(model, pixels: np.ndarray) -> None:
    """Bias correction (Nagel et al. 2019, "Data-Free Quantization", empirical variant): rounding a
    convolution's weights to int8 shifts its mean output by (W_int8 - W) . E[input]; subtract that
    shift from its bias. E[input] per channel is measured on the calibration images. On MobileNetV2
    alpha 0.35 this lifts the int8 features' cosine to fp32 from 0.89 to 0.96 (docs/int8.md)."""
    from onnx import numpy_helper

    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    convs = [node for node in model.graph.node if node.op_type == "Conv" and len(node.input) > 2]
    means = input_means(model, list(dict.fromkeys(node.input[0] for node in convs)), pixels)
    for node in convs:
        kernel = numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        error = (rounded_weights(kernel) - kernel).sum(axis=(2, 3))  # (out, in / groups)
        mean = means[node.input[0]].reshape(groups, -1)  # input channels of each group
        per_group = error.reshape(groups, -1, error.shape[1])  # outputs of each group
        shift = np.einsum("goi,gi->go", per_group, mean).reshape(-1)
        bias = weights[node.input[2]]
        corrected = numpy_helper.to_array(bias) - shift
        bias.CopyFrom(numpy_helper.from_array(corrected.astype(np.float32), bias.name))


def exact_input_grid(model) -> dict[str, list[dict]]:
    """Put the normalised pixels on the uint8 grid, where they fall half-way between two steps.

    The graph scales the pixels to v / 127.5 - 1 = (2v - 255) / 255 before the first
    convolution: odd multiples of 1/255, exactly between the points of any 2/255 grid with an
    integer zero point, so quantizing them moves every pixel by half a level (cosine 0.993 at
    worst on its own). Subtracting 1 - 1/255 instead puts them on the grid (v - 127) * 2/255;
    the first convolution's bias takes back the 1/255 (exact but at the image border, where the
    padding now stands for -1/255 instead of 0). Returns the overrides pinning these scales.
    """
    from onnx import numpy_helper

    nodes = list(model.graph.node)
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    by_input = {name: node for node in nodes for name in node.input}
    scale, sub = nodes[0], by_input[nodes[0].output[0]]
    transpose = by_input[sub.output[0]]
    conv = by_input[transpose.output[0]]
    if (scale.op_type, sub.op_type, transpose.op_type, conv.op_type) != ("Mul", "Sub", "Transpose", "Conv"):
        raise ValueError(f"unexpected preprocessing {scale.op_type}, {sub.op_type}, {transpose.op_type}, {conv.op_type}")
    one = weights[sub.input[1]]
    shift = np.float32(1 / 255)
    one.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(one) - shift, one.name))
    kernel = numpy_helper.to_array(weights[conv.input[1]])
    bias = weights[conv.input[2]]
    corrected = numpy_helper.to_array(bias) - shift * kernel.sum(axis=(1, 2, 3))
    bias.CopyFrom(numpy_helper.from_array(corrected.astype(np.float32), bias.name))
    step = np.array(2 / 255, np.float32)
    return {
        scale.input[0]: [{"scale": np.array(1.0, np.float32), "zero_point": np.array(0, np.uint8)}],  # the pixels 0..255
        scale.output[0]: [{"scale": step, "zero_point": np.array(0, np.uint8)}],  # 0..2
        conv.input[0]: [{"scale": step, "zero_point": np.array(127, np.uint8)}],  # -254/255..256/255
    }


def quantize_onnx(fp32_model: Path, output: Path, pixels: np.ndarray, bias_correction: bool = True) -> Path:
    """Write the int8 model of fp32_model to output, calibrated on `pixels`; bias_correction off
    for weights fine-tuned for int8 (model_export.quantization_training), which already account for
    their rounding."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(fp32_model))
    canonical_names(model)
    input_name = model.graph.input[0].name

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(range(0, len(pixels), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.batches, None)
            return None if start is None else {input_name: pixels[start : start + CALIBRATION_BATCH]}

    with tempfile.TemporaryDirectory(prefix="fruits-quantize-") as tmp:
        # shape inference + graph optimisation first: BatchNorm folded into the convolutions
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(model, str(prepared))
        folded = onnx.load(str(prepared))
        overrides = exact_input_grid(folded)
        if bias_correction:
            correct_biases(folded, pixels)
        onnx.save(folded, str(prepared))
        output.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(
            str(prepared),
            str(output),
            Calibration(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=False,  # VNNI (avx512_vnni / avx_vnni) multiplies full-range uint8 x int8
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE, "TensorQuantOverrides": overrides},
        )
    quantized = onnx.load(str(output))
    direct_pixel_input(quantized)
    unsigned_weights(quantized)
    onnx.save(quantized, str(output))
    return output


def direct_pixel_input(model) -> None:
    """Feed the first convolution the quantized pixels themselves.

    With exact_input_grid's scales the normalised pixels' uint8 codes are the pixel values:
    (v - 127) * 2/255 at scale 2/255 and zero point 127 is code v. So the float preprocessing
    between the pixels' QuantizeLinear (scale 1) and the convolution's input DequantizeLinear
    (Mul, Sub and their QuantizeLinear/DequantizeLinear pairs: a third of the int8 model's time on
    one thread) is dropped: pixels -> QuantizeLinear -> Transpose (uint8) -> DequantizeLinear at
    scale 2/255, zero point 127 -> Conv. Same codes, so the same features.
    """
    from onnx import numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    pixels_q = next(node for node in graph.node if node.op_type == "QuantizeLinear" and node.input[0] == graph.input[0].name)
    transpose = next(node for node in graph.node if node.op_type == "Transpose")
    conv_dq = consumers[consumers[transpose.output[0]][0].output[0]][0]  # Transpose -> Q -> DQ
    codes = [(float(numpy_helper.to_array(initializers[node.input[1]])), int(numpy_helper.to_array(initializers[node.input[2]])))
             for node in (pixels_q, conv_dq)]
    if codes != [(1.0, 0), (float(np.float32(2 / 255)), 127)] or conv_dq.op_type != "DequantizeLinear":
        raise ValueError(f"unexpected input quantization {codes} before {conv_dq.op_type}")
    transpose.input[0] = pixels_q.output[0]
    conv_dq.input[0] = transpose.output[0]
    for value in [value for value in graph.value_info if value.name == transpose.output[0]]:
        graph.value_info.remove(value)  # was float, now uint8: left to shape inference
    remove_unused(graph)


def unsigned_weights(model) -> None:
    """Store every int8 weight w (zero point 0) as the uint8 w + 128 with zero point 128: the same
    dequantized values, so the same features, on every CPU.

    ONNX Runtime multiplies uint8 activations by int8 weights with AVX2's VPMADDUBSW on x86 CPUs
    without 8-bit dot-product instructions (no avx512_vnni / avx_vnni: AMD Zen 2/3, Intel before
    Cascade Lake), which saturates pairs of products at int16; measured 2026-12-03 on a 2-core AMD
    EPYC (avx2 only), the int8 features' worst cosine to fp32 fell from 0.995 to 0.806 there.
    uint8 x uint8 has no such path ("U8U8", ONNX Runtime's quantization docs, on saturation), so
    the features no longer depend on which instance type an executor landed on."""
    from onnx import TensorProto, numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in model.graph.node:
        weights = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weights is None or weights.data_type != TensorProto.INT8:
            continue
        for tensor in (weights, initializers[node.input[2]]):
            if tensor.data_type == TensorProto.INT8:  # a zero point two weights share is shifted once
                shifted = numpy_helper.to_array(tensor).astype(np.int16) + 128
                tensor.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), tensor.name))


def remove_unused(graph) -> None:
    """Drop the nodes whose outputs nothing reads, then the weights no node reads."""
    outputs = {value.name for value in graph.output}
    while True:
        read = outputs | {name for node in graph.node for name in node.input}
        unused = [node for node in graph.node if not any(name in read for name in node.output)]
        if not unused:
            break
        for node in unused:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for tensor in [tensor for tensor in graph.initializer if tensor.name not in read]:
        graph.initializer.remove(tensor)
