"""Executor side of featurization: one inference engine per Python worker, batched calls.

Nothing here runs on the driver except to define the pandas UDF.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from spark_jobs.cnn.backbones import ModelSpec
from spark_jobs.contract.model_choices import ONNX_ENGINES
from spark_jobs.featurization.image_decode import QuarantineError, decode_image, set_decoder_threads

# Built once per Python worker (Spark reuses workers across tasks), keyed by artifact path.
_ENGINES: dict[tuple[str, str, int], Callable[[np.ndarray], np.ndarray]] = {}


def _onnx_engine(path: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]

    return run


def _tensorflow_engine(path: str, spec: ModelSpec, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    try:  # only possible before TensorFlow's runtime starts in this worker
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    from spark_jobs.cnn.backbones import build_model

    model = build_model(spec, load_weights=False)
    model.load_weights(path)
    infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def run(batch: np.ndarray) -> np.ndarray:
        return infer(tf.constant(batch)).numpy()

    return run


def get_engine(engine: str, path: str, spec: ModelSpec, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    key = (engine, path, threads)
    if key not in _ENGINES:
        if engine in ONNX_ENGINES:
            _ENGINES[key] = _onnx_engine(path, threads)
        else:
            _ENGINES[key] = _tensorflow_engine(path, spec, threads)
    return _ENGINES[key]


def task_cpus() -> int:
    """Threads for this task: the cores Spark gave it, so tasks never oversubscribe."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, context.cpus()) if context is not None else 1


def featurize_contents(
    contents: pd.Series,
    infer: Callable[[], Callable[[np.ndarray], np.ndarray]],
    spec: ModelSpec,
    batch_size: int,
    max_image_pixels: int,
) -> pd.DataFrame:
    """Decode a batch of image bytes and run the CNN on the good ones, in sub-batches.

    Returns one row per input: features (or None) and width/height/mode/format, or the error.
    """
    count = len(contents)
    features: list = [None] * count
    widths: list = [None] * count
    heights: list = [None] * count
    modes: list = [None] * count
    formats: list = [None] * count
    errors: list = [None] * count
    good: list[int] = []
    pixels: list[np.ndarray] = []
    for i, content in enumerate(contents):
        try:
            decoded = decode_image(content, spec.image_size, max_image_pixels)
        except QuarantineError as exc:
            errors[i] = str(exc)
            continue
        except Exception as exc:  # a decoder bug must not kill the whole job
            errors[i] = f"decode failed: {type(exc).__name__}: {exc}"
            continue
        widths[i], heights[i], modes[i], formats[i] = decoded.width, decoded.height, decoded.mode, decoded.format
        good.append(i)
        pixels.append(decoded.pixels)
    if good:
        run = infer()
        for start in range(0, len(good), batch_size):
            chunk = np.stack(pixels[start : start + batch_size]).astype(np.float32)
            out = np.asarray(run(chunk), dtype=np.float32)
            for offset, row in enumerate(out):
                features[good[start + offset]] = row
    return pd.DataFrame(
        {"features": features, "width": widths, "height": heights, "mode": modes, "format": formats, "error": errors}
    )


def make_featurize_batches(
    engine: str, artifact_name: str, spec: ModelSpec, batch_size: int, max_image_pixels: int
) -> Callable[[Iterator[pd.Series]], Iterator[pd.DataFrame]]:
    """The body of the scalar-iterator pandas UDF; the engine is fetched lazily, once."""

    def featurize_batches(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        from pyspark import SparkFiles

        cache: list = []
        set_decoder_threads(task_cpus())

        def infer() -> Callable[[np.ndarray], np.ndarray]:
            if not cache:
                path = SparkFiles.get(artifact_name)
                cache.append(get_engine(engine, path, spec, task_cpus()))
            return cache[0]

        for contents in batches:
            yield featurize_contents(contents, infer, spec, batch_size, max_image_pixels)

    return featurize_batches
