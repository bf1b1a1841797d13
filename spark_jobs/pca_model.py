"""Fit, save, load and apply the standardised PCA model, with no LAPACK call inside the JVM.

Spark aggregates the feature moments (count, mean, centred second moment) with numpy on the
executors, merged with Chan et al.'s parallel formula; the driver standardises the covariance and
solves the d x d symmetric eigenproblem with numpy.linalg.eigh (numpy's wheel ships its own
LAPACK). Spark ML's own PCA fit calls netlib's dgesdd, whose pure-Java fallback (F2J, used when
no native liblapack is installed) returns wrong spectra on rank-deficient covariances.

The saved model folder holds `pipeline/`, a Spark ML PipelineModel (StandardScalerModel, PCAModel
with the first k components) that any Spark reader can apply, and `pca_model.json` (version, k,
the whole spectrum, what it was fitted on). See docs/pca.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.common import _py2java
from pyspark.ml.feature import PCAModel, StandardScalerModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import DenseMatrix, DenseVector
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs import hadoop_fs
from spark_jobs.contract.run_files import PCA_MODEL_INFO

PIPELINE_FOLDER = "pipeline"
CHUNK_ROWS = 2048  # rows per numpy product on an executor: bounds its memory whatever the batch size
MOMENTS_SCHEMA = "n long, mean binary, m2 binary"


@dataclass(frozen=True)
class Moments:
    """Count, mean and centred second moment (sum of outer products of deviations) of some rows."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, matrix: np.ndarray) -> Moments:
        mean = matrix.mean(axis=0)
        centred = matrix - mean
        return cls(len(matrix), mean, centred.T @ centred)

    def merge(self, other: Moments) -> Moments:
        """Chan, Golub & LeVeque's pairwise update: stable, and any merge order gives the same moments."""
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, m2)


def _partition_moments(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas: one row of moments per partition (none for an empty partition)."""
    total: Moments | None = None
    for batch in batches:
        for start in range(0, len(batch), CHUNK_ROWS):
            rows = batch["features"].iloc[start : start + CHUNK_ROWS]
            part = Moments.of(np.stack(rows.to_numpy()).astype(np.float64))
            total = part if total is None else total.merge(part)
    if total is not None:
        yield pd.DataFrame({"n": [total.n], "mean": [total.mean.tobytes()], "m2": [total.m2.tobytes()]})


def feature_moments(features: DataFrame) -> Moments:
    """The moments of the `features` column, merged on the driver one partition at a time
    (toLocalIterator), so the driver holds two d x d matrices whatever the partition count."""
    total: Moments | None = None
    for row in features.select("features").mapInPandas(_partition_moments, MOMENTS_SCHEMA).toLocalIterator():
        mean = np.frombuffer(row["mean"], dtype=np.float64)
        part = Moments(int(row["n"]), mean, np.frombuffer(row["m2"], dtype=np.float64).reshape(len(mean), len(mean)))
        total = part if total is None else total.merge(part)
    if total is None:
        raise ValueError("no feature rows to fit on")
    return total


@dataclass(frozen=True)
class Spectrum:
    """A standardised PCA: scaler statistics, every component (columns, strongest first) and the
    explained-variance ratio of each."""

    mean: np.ndarray
    std: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray


def principal_components(moments: Moments) -> Spectrum:
    """Eigen-decompose the correlation matrix (covariance of the standardised features).

    Constant features get std 0 and scale to 0, as Spark's StandardScalerModel does. Signs are
    fixed so that each component's largest loading is positive (deterministic across runs).
    """
    if moments.n < 2:
        raise ValueError(f"PCA needs at least 2 feature rows, got {moments.n}")
    covariance = moments.m2 / (moments.n - 1)
    std = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    inverse = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    correlation = covariance * np.outer(inverse, inverse)
    values, vectors = np.linalg.eigh(correlation)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    if values.sum() <= 0:
        raise ValueError("every feature is constant: there is no variance to explain")
    strongest = np.abs(vectors).argmax(axis=0)
    signs = np.sign(vectors[strongest, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return Spectrum(moments.mean, std, vectors * signs, values / values.sum())


def content_version(spectrum: Spectrum, k: int) -> str:
    """A version name derived from the model's numbers (used when the caller names none)."""
    digest = hashlib.sha256()
    for array in (spectrum.mean, spectrum.std, spectrum.components[:, :k]):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return f"sha-{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class SavedPca:
    """A fitted model: the Spark pipeline that projects features to k components, and its info."""

    pipeline: PipelineModel
    info: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.info["version"])

    @property
    def k(self) -> int:
        return int(self.info["k"])


def build_pipeline(spark: SparkSession, spectrum: Spectrum, k: int) -> PipelineModel:
    """StandardScalerModel + PCAModel (first k components) built from numpy arrays through their
    JVM constructors (private[ml] in Scala, public in bytecode), so Spark applies and saves them."""
    sc, jvm = spark.sparkContext, spark.sparkContext._jvm
    java_scaler = jvm.org.apache.spark.ml.feature.StandardScalerModel(
        "fruits_scaler", _py2java(sc, DenseVector(spectrum.std)), _py2java(sc, DenseVector(spectrum.mean))
    )
    scaler = StandardScalerModel(java_scaler)
    scaler._set(inputCol="vector", outputCol="scaled", withMean=True, withStd=True)
    d = len(spectrum.mean)
    pc = DenseMatrix(d, k, spectrum.components[:, :k].flatten(order="F"))  # column-major
    java_pca = jvm.org.apache.spark.ml.feature.PCAModel(
        "fruits_pca", _py2java(sc, pc), _py2java(sc, DenseVector(spectrum.explained_variance[:k]))
    )
    pca = PCAModel(java_pca)
    pca._set(inputCol="scaled", outputCol="pca_vector", k=k)
    return PipelineModel(stages=[scaler, pca])


def save(spark: SparkSession, model: SavedPca, uri: str) -> None:
    """pipeline/ first, pca_model.json last: the info file marks a complete model folder."""
    model.pipeline.write().overwrite().save(hadoop_fs.join(uri, PIPELINE_FOLDER))
    hadoop_fs.write_json(spark, hadoop_fs.join(uri, PCA_MODEL_INFO), model.info)


def load(spark: SparkSession, uri: str) -> SavedPca:
    """A saved model folder; FileNotFoundError naming the folder when it holds no complete model."""
    info_uri = hadoop_fs.join(uri, PCA_MODEL_INFO)
    if not hadoop_fs.exists(spark, info_uri):
        raise FileNotFoundError(f"{uri} is not a saved PCA model folder (no {PCA_MODEL_INFO})")
    return SavedPca(PipelineModel.load(hadoop_fs.join(uri, PIPELINE_FOLDER)), hadoop_fs.read_json(spark, info_uri))


def apply(model: SavedPca, features: DataFrame) -> DataFrame:
    """path, label, pca (array<float> of length k), pca_model (the version) for every feature row."""
    return model.pipeline.transform(features.withColumn("vector", array_to_vector("features"))).select(
        "path",
        "label",
        vector_to_array("pca_vector", "float32").alias("pca"),
        F.lit(model.version).alias("pca_model"),
    )
