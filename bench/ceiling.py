"""In-process figures: the single-process ONNX Runtime ceiling (its batch-size sweep) and the
ONNX Runtime vs TensorFlow agreement."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from bench.workload import cached_model
from local_spark.run_local import BUNDLED_WEIGHTS


def decode_all(contents: list[bytes], size: int) -> np.ndarray:
    from spark_jobs.featurization.image_decode import decode_image

    return np.stack([decode_image(c, size).pixels for c in contents]).astype(np.float32)


def ceiling(artifact: Path, contents: list[bytes], batch_sizes: list[int]) -> dict:
    """Single process, ONNX Runtime with every core, decode + preprocessing + inference from
    in-memory bytes; the best batch size."""
    import onnxruntime as ort

    from spark_jobs.featurization.image_decode import decode_image

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: decode_all(contents[:8], 224)})
    by_batch = {}
    for batch in batch_sizes:
        started = time.perf_counter()
        for start in range(0, len(contents), batch):
            pixels = np.stack([decode_image(c, 224).pixels for c in contents[start : start + batch]]).astype(np.float32)
            session.run(None, {name: pixels})
        by_batch[batch] = len(contents) / (time.perf_counter() - started)
    best = max(by_batch, key=by_batch.get)
    return {"img_s": by_batch[best], "batch_size": best, "by_batch_size": {str(k): round(v, 1) for k, v in by_batch.items()},
            "threads": options.intra_op_num_threads}


def engine_difference(contents: list[bytes], workdir: Path) -> float:
    """max |onnx - tf| / max |tf| over the sample, real ImageNet weights (alpha 0.35)."""
    import onnxruntime as ort

    from spark_jobs.cnn.backbones import ModelSpec, build_model

    spec = ModelSpec(alpha=0.35, weights=str(BUNDLED_WEIGHTS))
    artifact = cached_model(0.35, str(BUNDLED_WEIGHTS))
    model = build_model(spec)
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    worst, scale = 0.0, 0.0
    for start in range(0, len(contents), 64):
        pixels = decode_all(contents[start : start + 64], 224)
        reference = np.asarray(model(pixels, training=False))
        worst = max(worst, float(np.abs(session.run(None, {name: pixels})[0] - reference).max()))
        scale = max(scale, float(np.abs(reference).max()))
    return worst / scale

