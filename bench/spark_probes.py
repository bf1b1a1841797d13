"""The bench's Spark measurements, each run in a fresh process (`python -m bench.run_bench --probe
KIND`, JSON on its last stdout line) so wall times and peak RSS are not polluted by earlier runs:
the featurize job, the seed notebook's method, the PCA fit against scikit-learn."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd

from bench.peak_rss import PeakRss
from bench.sample_images import REPO_ROOT


def probe_featurize(args: argparse.Namespace) -> dict:
    from local_spark.session import local_spark
    from spark_jobs import featurize

    spark = local_spark("local[2]", "2g")
    source = ["--manifest", args.manifest] if args.manifest else ["--images", args.images]
    job = featurize.build_parser().parse_args(
        [*source, "--output", args.output, "--model-artifact", args.artifact, "--batch-size", str(args.batch_size)]
    )
    with PeakRss() as rss:
        started = time.perf_counter()
        summary = featurize.run(spark, job)
        wall = time.perf_counter() - started
    spark.stop()
    return {"images": summary["images_seen"], "features_rows": summary["features_rows"], "seconds": wall,
            "peak_rss_bytes": rss.peak, "peak_rss_jvm_bytes": rss.peak_by_kind["jvm"],
            "peak_rss_python_workers_bytes": rss.peak_by_kind["python"], "partitions": summary["partitions"],
            "phase_seconds": summary["phase_seconds"]}


def probe_seed_method(args: argparse.Namespace) -> dict:
    """The seed notebook's featurization: Keras model built from broadcast weights in a
    scalar-iterator pandas UDF, `img_to_array` + `preprocess_input` per image, `model.predict`
    on every Arrow batch."""
    from pyspark.sql import functions as F

    from local_spark.session import local_spark
    from spark_jobs.cnn.backbones import ModelSpec, build_model

    spark = local_spark("local[2]", "2g")
    spec = ModelSpec(alpha=args.alpha, weights="random")
    backbone = build_model(spec).layers[-1]  # calibrated MobileNetV2, no preprocessing layer
    broadcast_weights = spark.sparkContext.broadcast(backbone.get_weights())
    alpha, size = args.alpha, 224

    def model_fn():
        from keras.applications import MobileNetV2

        model = MobileNetV2(weights=None, include_top=False, pooling="avg", alpha=alpha, input_shape=(size, size, 3))
        model.set_weights(broadcast_weights.value)
        return model

    def preprocess(content):
        from keras.applications.mobilenet_v2 import preprocess_input
        from keras.utils import img_to_array
        from PIL import Image

        image = Image.open(io.BytesIO(content)).resize([size, size])
        return preprocess_input(img_to_array(image))

    @F.pandas_udf("array<float>")
    def featurize_udf(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        model = model_fn()
        for contents in batches:
            arrays = np.stack([preprocess(c) for c in contents])
            preds = model.predict(arrays, verbose=0)
            yield pd.Series([p.flatten() for p in preds])

    images = spark.read.format("binaryFile").option("pathGlobFilter", "*.jpg").option("recursiveFileLookup", "true").load(args.images)
    started = time.perf_counter()
    count = images.count()
    images.repartition(8).select("path", featurize_udf("content").alias("features")).write.mode("overwrite").parquet(args.output)
    wall = time.perf_counter() - started
    spark.stop()
    return {"images": count, "seconds": wall}


def probe_pca(args: argparse.Namespace) -> dict:
    """The job's fit (Spark aggregates the covariance, numpy's eigh) against scikit-learn's PCA."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from local_spark.session import local_spark
    from spark_jobs.pca import fit_pca

    spark = local_spark("local[2]", "4g")
    features = spark.read.parquet(args.features).select("features").persist()
    rows = features.count()
    started = time.perf_counter()
    spectrum = np.asarray(fit_pca(spark, features, 0.95, None).info["explained_variance"])
    spark_seconds = time.perf_counter() - started
    matrix = np.stack(features.toPandas().features).astype(np.float64)
    spark.stop()
    started = time.perf_counter()
    sk = PCA(svd_solver="full").fit(StandardScaler().fit_transform(matrix))
    sklearn_seconds = time.perf_counter() - started
    agree = float(np.abs(sk.explained_variance_ratio_ - spectrum[: len(sk.explained_variance_ratio_)]).max())
    return {"rows": rows, "dim": int(matrix.shape[1]), "spark_seconds": spark_seconds,
            "sklearn_seconds": sklearn_seconds, "spectrum_max_abs_diff": agree}



def run_probe(kind: str, **options) -> dict:
    """Run one probe in a fresh Python process and return its JSON result."""
    argv = [sys.executable, "-m", "bench.run_bench", "--probe", kind]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"probe {kind} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])

