"""The featurize job's peers, each measured in a fresh process on the same files, with the same
decode (spark_jobs.featurization.image_decode.decode_image) and the same ONNX model as the job (bench/run_bench.py runs
them side by side in every round):

- Spark's own way: `pyspark.ml.functions.predict_batch_udf` (the model loaded once per Python
  worker by Spark's model cache), fed by a pandas UDF that decodes the binaryFile bytes into the
  model's input tensor, as Spark's deep-learning inference guide lays it out;
- Ray Data: `ray.data.read_binary_files` then `map_batches` (the model loaded once per Ray worker
  process). Ray is installed for the bench only (bench/requirements-bench.txt, `make bench`).

Both get the job's resources: 2 cores (local[2] / num_cpus=2), one inference thread per task.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd

SIZE = 224
BATCH = 32  # featurize's default --batch-size


def _session(artifact: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])


def probe_predict_batch_udf(args: argparse.Namespace) -> dict:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from local_spark.session import local_spark
    from spark_jobs.featurization.image_listing import IMAGE_GLOB

    spark = local_spark("local[2]", "2g")
    artifact = args.artifact

    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def decode(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        from spark_jobs.featurization.image_decode import decode_image, set_decoder_threads

        set_decoder_threads(1)
        for contents in batches:
            yield pd.Series([decode_image(c, SIZE).pixels.astype(np.float32).ravel() for c in contents])

    def make_predict_fn():
        session = _session(artifact)
        name = session.get_inputs()[0].name

        def predict(pixels: np.ndarray) -> np.ndarray:
            return session.run(None, {name: pixels.astype(np.float32)})[0]

        return predict

    featurize = predict_batch_udf(make_predict_fn, return_type=T.ArrayType(T.FloatType()), batch_size=BATCH,
                                  input_tensor_shapes=[[SIZE, SIZE, 3]])
    images = (spark.read.format("binaryFile").option("pathGlobFilter", IMAGE_GLOB)
              .option("recursiveFileLookup", "true").load(args.images))
    started = time.perf_counter()
    images.select("path", featurize(decode("content")).alias("features")).write.mode("overwrite").parquet(args.output)
    wall = time.perf_counter() - started
    count = spark.read.parquet(args.output).count()
    spark.stop()
    return {"images": count, "seconds": wall}


_RAY_SESSIONS: dict[str, tuple] = {}  # per Ray worker process (Ray reuses workers across tasks)


def _ray_featurize(batch: dict[str, np.ndarray], artifact: str) -> dict[str, np.ndarray]:
    """map_batches body: decode + inference of a batch, the model loaded once per worker process."""
    from spark_jobs.featurization.image_decode import decode_image, set_decoder_threads

    if artifact not in _RAY_SESSIONS:
        set_decoder_threads(1)
        session = _session(artifact)
        _RAY_SESSIONS[artifact] = (session, session.get_inputs()[0].name)
    session, name = _RAY_SESSIONS[artifact]
    pixels = np.stack([decode_image(content, SIZE).pixels for content in batch["bytes"]]).astype(np.float32)
    return {"path": batch["path"], "features": session.run(None, {name: pixels})[0]}


def probe_ray(args: argparse.Namespace) -> dict:
    """Ray Data with a task per block: read and featurize fuse into one operator, so the bytes never
    cross the object store. (An actor pool of one actor per core starved the read tasks of CPUs on
    this 2-core machine: the run never finished.)"""
    import shutil

    import ray

    from spark_jobs.contract.model_choices import IMAGE_EXTENSIONS

    shutil.rmtree(args.output, ignore_errors=True)  # write_parquet adds files to a folder: start empty
    cores = os.cpu_count() or 1
    repo = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": repo}})
    started = time.perf_counter()
    dataset = ray.data.read_binary_files(args.images, include_paths=True, file_extensions=list(IMAGE_EXTENSIONS))
    features = dataset.map_batches(_ray_featurize, fn_kwargs={"artifact": args.artifact}, batch_size=BATCH)
    features.write_parquet(args.output)
    wall = time.perf_counter() - started
    count = ray.data.read_parquet(args.output).count()
    ray.shutdown()
    return {"images": count, "seconds": wall, "cpus": cores}
