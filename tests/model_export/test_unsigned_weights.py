"""model_export.quantize.unsigned_weights: int8 weights stored as uint8 around 128 dequantize to the
same values (the int8 model's features do not depend on the CPU: docs/int8.md#cpus)."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from model_export.quantize import unsigned_weights


def dequantize_model(weights: np.ndarray, scale: np.ndarray, zero_point: np.ndarray):
    node = helper.make_node("DequantizeLinear", ["w", "scale", "zero_point"], ["out"], axis=0)
    graph = helper.make_graph(
        [node], "dequantize", [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(scale, "scale"),
         numpy_helper.from_array(zero_point, "zero_point")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def run(model) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]


def test_int8_weights_become_uint8_around_128_with_the_same_values():
    weights = np.array([[-127, -1, 0, 1, 127], [5, -5, 64, -64, 0]], np.int8)
    model = dequantize_model(weights, np.array([0.5, 0.01], np.float32), np.zeros(2, np.int8))
    signed = run(model)
    unsigned_weights(model)
    stored = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    assert stored["w"].dtype == np.uint8 and stored["zero_point"].tolist() == [128, 128]
    assert stored["w"].tolist() == [[1, 127, 128, 129, 255], [133, 123, 192, 64, 128]]
    assert np.array_equal(run(model), signed)


def test_other_dequantized_tensors_are_left_alone():
    codes = np.array([0, 127, 255], np.uint8)  # an activation grid, already unsigned
    model = dequantize_model(codes, np.array([0.1], np.float32)[0], np.array(127, np.uint8))
    before = onnx.load_from_string(model.SerializeToString())
    unsigned_weights(model)
    assert model == before
