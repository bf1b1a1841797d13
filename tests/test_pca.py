"""pca job on real CNN features: k meets the target, spectrum equals scikit-learn's, the saved
model reproduces the reduction without refitting."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from pyspark.ml import PipelineModel
from sklearn.decomposition import PCA as SkPCA
from sklearn.preprocessing import StandardScaler as SkScaler

from conftest import WEIGHTS, copy_sample
from spark_jobs import featurize, pca


@pytest.fixture(scope="module")
def features_out(spark, tmp_path_factory):
    """Real features of 160 fit images and 20 held-out images (bundled ImageNet weights)."""
    root = tmp_path_factory.mktemp("pca")
    copy_sample(root / "fit", per_label=40, offset=10)
    copy_sample(root / "new", per_label=5, offset=60)
    for part in ("fit", "new"):
        args = featurize.build_parser().parse_args(
            ["--images", str(root / part), "--output", str(root / f"{part}_out"), "--alpha", "0.35", "--weights", str(WEIGHTS)]
        )
        featurize.run(spark, args)
    return root


def pca_args(output, **options) -> argparse.Namespace:
    argv = ["--output", str(output)]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    return pca.build_parser().parse_args(argv)


@pytest.fixture(scope="module")
def variance_run(spark, features_out):
    report = pca.run(spark, pca_args(features_out / "fit_out"))
    return features_out / "fit_out", report


def test_k_is_the_smallest_reaching_the_target(variance_run):
    _, report = variance_run
    cumulative = np.array(report["cumulative_explained_variance"])
    k = report["k"]
    assert report["variance_target"] == 0.95
    assert cumulative[k - 1] >= 0.95 > cumulative[k - 2]
    assert len(report["explained_variance"]) == 1280  # the whole spectrum from one fit
    np.testing.assert_allclose(np.cumsum(report["explained_variance"]), cumulative)


def test_spectrum_equals_scikit_learn(spark, variance_run):
    out, report = variance_run
    rows = spark.read.parquet(str(out / "features")).toPandas()
    scaled = SkScaler().fit_transform(np.stack(rows.features).astype(np.float64))
    expected = SkPCA(svd_solver="full").fit(scaled).explained_variance_ratio_
    ours = np.array(report["explained_variance"])
    np.testing.assert_allclose(ours[: len(expected)], expected, atol=1e-6)
    assert np.abs(ours[len(expected) :]).max() < 1e-6


def test_reduced_features_and_saved_model(spark, variance_run, features_out):
    out, report = variance_run
    reduced = spark.read.parquet(str(out / "pca")).toPandas().set_index("path").sort_index()
    assert dict(spark.read.parquet(str(out / "pca")).dtypes)["pca"] == "array<float>"
    assert len(reduced) == report["features_rows"] == 160
    assert all(len(v) == report["k"] for v in reduced.pca)
    saved = PipelineModel.load(str(out / "pca_model"))
    fit_rows = spark.read.parquet(str(out / "features"))
    again = pca.reduce_features(saved, fit_rows).toPandas().set_index("path").sort_index()
    np.testing.assert_allclose(np.stack(again.pca), np.stack(reduced.pca), rtol=1e-5, atol=1e-5)
    # New images: the saved model agrees with scikit-learn's projection (up to component sign).
    new_rows = spark.read.parquet(str(features_out / "new_out" / "features"))
    projected = np.stack(pca.reduce_features(saved, new_rows).toPandas().sort_values("path").pca)
    fit = np.stack(fit_rows.toPandas().features).astype(np.float64)
    mean, std = fit.mean(0), fit.std(0, ddof=1)
    std[std == 0] = 1.0
    new = np.stack(new_rows.toPandas().sort_values("path").features).astype(np.float64)
    components = SkPCA(svd_solver="full").fit((fit - mean) / std).components_[: report["k"]]
    expected = ((new - mean) / std) @ components.T
    signs = np.sign(np.sum(projected * expected, axis=0))
    np.testing.assert_allclose(projected * signs, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_fixed_k_and_report(spark, features_out, tmp_path):
    report = pca.run(spark, pca_args(tmp_path, k=7, features=features_out / "fit_out" / "features"))
    assert report["k"] == 7 and report["variance_target"] is None
    assert all(len(v) == 7 for v in spark.read.parquet(str(tmp_path / "pca")).toPandas().pca)
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["k"] == 7 and "images_seen" not in written  # no featurize.json in this folder


def test_bad_requests_are_clear(spark, features_out, tmp_path):
    with pytest.raises(pca.PcaInputError, match="--k 5000 must be between 1 and the feature length 1280"):
        pca.run(spark, pca_args(tmp_path, k=5000, features=features_out / "fit_out" / "features"))
    with pytest.raises(pca.PcaInputError, match=r"--variance 1.5 must be in \(0, 1\]"):
        pca.run(spark, pca_args(tmp_path, variance=1.5, features=features_out / "fit_out" / "features"))
    with pytest.raises(pca.PcaInputError, match="cannot read features at"):
        pca.run(spark, pca_args(tmp_path / "nothing"))


def test_choose_k_edges():
    cumulative = np.array([0.5, 0.8, 0.95, 1.0])
    assert pca.choose_k(cumulative, 0.95) == 3
    assert pca.choose_k(cumulative, 0.5) == 1
    assert pca.choose_k(cumulative, 1.0) == 4
