"""The int8 engine (model_export.quantize): real photos, real ONNX Runtime, real Spark."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model_export import model_identity, quantization_training, quantize
from model_export.export_model import export_onnx
from model_export.model_cache import exported_model
from model_export.model_identity import ExportSettings
from spark_jobs import featurize
from spark_jobs.cnn.backbones import ModelConfigError, ModelSpec, check_engine, feature_dim
from spark_jobs.cnn.exported_model import sidecar_path
from spark_jobs.featurization.image_decode import decode_image
from tests.spark_jobs.test_featurize import job_args
from tests.support import SAMPLE, WEIGHTS, copy_sample

pytestmark = pytest.mark.tensorflow  # fine-tunes and quantizes the int8 model

SPEC = ModelSpec(alpha=0.35, weights=str(WEIGHTS))
INT8 = "onnxruntime-int8"
# per-image cosine of int8 to fp32 features: issue 16's target. Fine-tuned for int8 first, this model
# reaches 0.995 at worst over the 480 bundled images; quantized without it, 0.986 (docs/int8.md)
COSINE_FLOOR = 0.99


_EXPORTED: dict[str, Path] = {}  # this process's exports: the fixture may be set up more than once
# fine-tuning steps of the two exports the determinism test compares: the recipe's STEPS (400) run
# the same seeded ops 50 times more: one such export took 8-11 minutes under the suite's load, two of
# these 4.3 minutes (2026-12-03)
DETERMINISM_STEPS = 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The fp32 and int8 models from the machine's model cache (exported in a child process,
    shared with the int8 bench and the staging test), and two short int8 exports made here one
    after the other: in one process the exporter's own names differ from one export to the next,
    the bytes must not. Made once per process: with `-n` but no `--dist loadgroup`, pytest-xdist may
    interleave this module's tests with other modules' in one worker, which tears a module fixture
    down between them (docs/testing.md)."""
    if "root" not in _EXPORTED:
        _EXPORTED["root"] = export_all(tmp_path_factory.mktemp("models"))
    return _EXPORTED["root"]


def export_all(root: Path) -> Path:
    settings = ExportSettings(model="mobilenet_v2", alpha=0.35, image_size=224, weights=str(WEIGHTS))
    for name, model in (("fp32", exported_model(settings)), ("a", exported_model(replace(settings, engine=INT8)))):
        (root / name).mkdir()
        for source in (model, Path(sidecar_path(str(model)))):
            shutil.copy(source, root / name / source.name)
    (root / "fp32.onnx").symlink_to(root / "fp32" / "model.onnx")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantization_training, "fine_tune",
                      functools.partial(quantization_training.fine_tune, steps=DETERMINISM_STEPS))
        for name in ("short-1", "short-2"):
            export_onnx(SPEC, root / name / "model.onnx", engine=INT8)
    return root


def run_model(path, pixels: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: pixels})[0]


def real_pixels(per_label: int = 2) -> np.ndarray:
    """Photos that are not in the calibration set (data/sample, also the int8 fine-tuning's images),
    decoded as the job decodes them."""
    calibration = {path.read_bytes() for path in model_identity.calibration_files()}
    files = [path for label in sorted(SAMPLE.iterdir()) if label.is_dir() for path in sorted(label.iterdir())]
    fresh = {}
    for path in files:
        if path.read_bytes() not in calibration and len(fresh.setdefault(path.parent.name, [])) < per_label:
            fresh[path.parent.name].append(path)
    return np.stack([decode_image(p.read_bytes(), 224).pixels for group in fresh.values() for p in group]).astype(np.float32)


def test_quantization_is_deterministic(exported):
    """Fine-tuning then quantization, twice in one process: the same bytes. Short fine-tunings
    (DETERMINISM_STEPS), the same code path as the recipe's."""
    first, second = (exported / copy / "model.onnx" for copy in ("short-1", "short-2"))
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    assert first.stat().st_size < (exported / "fp32.onnx").stat().st_size / 2  # int8 weights, not a copy
    # the step count reaches the fine-tuning: 8 steps make another model than the recipe's 400
    assert first.read_bytes() != (exported / "a" / "model.onnx").read_bytes()


def test_int8_features_have_the_fp32_shape_and_direction(exported):
    pixels = real_pixels(per_label=30)  # 120 photos the model was neither calibrated nor fine-tuned on
    fp32 = run_model(exported / "fp32.onnx", pixels)
    int8 = run_model(exported / "a" / "model.onnx", pixels)
    assert int8.shape == fp32.shape == (len(pixels), feature_dim(SPEC))
    cosine = cosines(fp32, int8)
    assert cosine.min() >= COSINE_FLOOR, cosine
    assert not np.array_equal(fp32, int8)  # really another model


def test_convolution_weights_are_stored_unsigned_around_128(exported):
    """unsigned_weights on the real model: every convolution's int8 weights as uint8, zero point
    128, inside the symmetric grid 1..255 (so the features match on CPUs without VNNI)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(exported / "a" / "model.onnx"))
    stored = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    weights = [node for node in model.graph.node
               if node.op_type == "DequantizeLinear" and stored.get(node.input[0], np.zeros(0)).ndim == 4]
    assert len(weights) == 52  # the 52 QLinearConv of docs/int8.md
    for node in weights:
        codes, zero_point = stored[node.input[0]], stored[node.input[2]]
        assert codes.dtype == np.uint8 and set(np.unique(zero_point)) == {128}, node.name
        assert codes.min() >= 1 and codes.max() <= 255, node.name


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_normalised_pixels_fall_on_the_uint8_grid(exported, tmp_path):
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(exported / "fp32.onnx"))
    quantize.canonical_names(model)
    quant_pre_process(model, str(tmp_path / "prepared.onnx"))
    shifted = onnx.load(str(tmp_path / "prepared.onnx"))
    conv_input, grid = list(quantize.exact_input_grid(shifted).items())[-1]
    onnx.save(shifted, str(tmp_path / "shifted.onnx"))
    shifted.graph.output.append(onnx.helper.make_tensor_value_info(conv_input, onnx.TensorProto.FLOAT, None))
    onnx.save(shifted, str(tmp_path / "probe.onnx"))
    pixels = real_pixels()
    import onnxruntime as ort

    probe = ort.InferenceSession(str(tmp_path / "probe.onnx"), providers=["CPUExecutionProvider"])
    levels = probe.run([conv_input], {probe.get_inputs()[0].name: pixels})[0] / grid[0]["scale"] + grid[0]["zero_point"]
    assert np.abs(levels - np.rint(levels)).max() < 1e-3 and levels.min() >= 0 and levels.max() <= 255
    assert np.array_equal(np.rint(levels), pixels.transpose(0, 3, 1, 2))  # the codes are the pixels (direct_pixel_input)
    # the same features: only the border padding moves, by 1/255
    before, after = (run_model(tmp_path / name, pixels) for name in ("prepared.onnx", "shifted.onnx"))
    assert cosines(before, after).min() > 0.9999


def test_the_first_convolution_reads_the_pixels_codes_without_float_preprocessing(exported):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(exported / "a" / "model.onnx")).graph
    producer = {name: node for node in graph.node for name in node.output}
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    conv = next(node for node in graph.node if node.op_type == "Conv")
    dequantize = producer[conv.input[0]]
    transpose = producer[dequantize.input[0]]
    quantize_pixels = producer[transpose.input[0]]
    assert [node.op_type for node in (dequantize, transpose, quantize_pixels)] == ["DequantizeLinear", "Transpose", "QuantizeLinear"]
    assert quantize_pixels.input[0] == graph.input[0].name
    assert (float(weights[dequantize.input[1]]), int(weights[dequantize.input[2]])) == (float(np.float32(2 / 255)), 127)
    assert not {node.op_type for node in graph.node} & {"Mul", "Sub"}


def test_sidecar_lists_the_calibration_images(exported):
    description = json.loads(open(sidecar_path(str(exported / "a" / "model.onnx"))).read())
    files = model_identity.calibration_files()
    assert description["engine"] == INT8 and description["model_id"] == SPEC.model_id + "+int8"
    assert [entry["image"] for entry in description["calibration"]] == [
        path.relative_to(model_identity.CALIBRATION_ROOT).as_posix() for path in files
    ]
    assert all(
        entry["sha256"] == hashlib.sha256((model_identity.CALIBRATION_ROOT / entry["image"]).read_bytes()).hexdigest()
        for entry in description["calibration"]
    )
    assert len(files) == 40 and {path.parent.name for path in files} == {"apple", "lemon", "mango", "raspberry"}


def test_unknown_engine_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ModelConfigError, match="unknown engine 'onnxruntime-int4'; choose one of onnxruntime, onnxruntime-int8"):
        check_engine("onnxruntime-int4")
    with pytest.raises(SystemExit):
        featurize.build_parser().parse_args(["--images", "x", "--output", "y", "--engine", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err
    with pytest.raises(ModelConfigError, match="no calibration images under .*empty"):
        export_onnx(SPEC, tmp_path / "m.onnx", engine=INT8, calibration_root=tmp_path / "empty")


def test_featurize_job_runs_the_int8_engine(spark, tmp_path, exported):
    copy_sample(tmp_path / "imgs", per_label=2, offset=90)
    # the quantization tooling is not staged to the cluster: the job asks for an exported model
    with pytest.raises(ModelConfigError, match="needs a pre-exported --model-artifact: make one with"
                                               " `python -m model_export.export_model --engine onnxruntime-int8"):
        featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / "no-model", engine=INT8))
    summary = featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / "int8", engine=INT8,
                                            model_artifact=exported / "a" / "model.onnx"))
    assert (summary["engine"], summary["features_rows"], summary["quarantined"]) == (INT8, 8, 0)
    assert summary["model"] == SPEC.model_id + "+int8"
    rows = spark.read.parquet(str(tmp_path / "int8" / "features")).toPandas().sort_values("path")
    assert set(rows.model) == {SPEC.model_id + "+int8"}
    features = np.stack(rows.features)
    pixels = np.stack([decode_image(open(p.removeprefix("file:"), "rb").read(), 224).pixels for p in rows.path])
    np.testing.assert_allclose(features, run_model(exported / "a" / "model.onnx", pixels.astype(np.float32)), atol=1e-5)
    # an exported model is used with the engine it was exported for, and the message says so
    with pytest.raises(featurize.InputError, match="exported for --engine onnxruntime-int8, not onnxruntime"):
        featurize.run(spark, job_args(images=tmp_path / "imgs", output=tmp_path / "x", model_artifact=exported / "a" / "model.onnx"))
