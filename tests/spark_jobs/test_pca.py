"""pca job on real CNN features: the spectrum equals scikit-learn's whatever LAPACK the JVM has, k
meets the target, a saved model is applied without refitting and gives the same coordinates, a fit
on several inputs re-projects the corpus."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
from pyspark.sql import functions as F
from sklearn.decomposition import PCA as SkPCA
from sklearn.preprocessing import StandardScaler as SkScaler

from spark_jobs import featurize, pca, pca_model
from tests.support import WEIGHTS, copy_sample


@pytest.fixture(scope="module")
def features_out(spark, tmp_path_factory):
    """Real features of 160 fit images and 20 held-out images (bundled ImageNet weights).

    The 160 images (offset 40) are a set on which Spark ML's PCA fit, with netlib's F2J LAPACK
    fallback and 1 or 2 partitions, returned a first explained-variance ratio of 0.035 instead of
    scikit-learn's 0.255 (issue 12): d = 1,280 > n = 160, so the covariance is rank-deficient.
    """
    root = tmp_path_factory.mktemp("pca")
    copy_sample(root / "fit", per_label=40, offset=40)
    copy_sample(root / "new", per_label=5, offset=100)
    for part in ("fit", "new"):
        args = featurize.build_parser().parse_args(
            ["--images", str(root / part), "--output", str(root / f"{part}_out"), "--alpha", "0.35", "--weights", str(WEIGHTS)]
        )
        featurize.run(spark, args)
    return root


def pca_args(output, **options) -> argparse.Namespace:
    argv = ["--output", str(output)]
    for name, value in options.items():
        for item in value if isinstance(value, list) else [value]:
            argv += [f"--{name.replace('_', '-')}", str(item)]
    return pca.build_parser().parse_args(argv)


def sklearn_spectrum(features: np.ndarray) -> np.ndarray:
    return SkPCA(svd_solver="full").fit(SkScaler().fit_transform(features.astype(np.float64))).explained_variance_ratio_


@pytest.fixture(scope="module")
def variance_run(spark, features_out):
    report = pca.run(spark, pca_args(features_out / "fit_out"))
    return features_out / "fit_out", report


def test_the_jvm_uses_the_f2j_lapack_fallback(spark):
    """What makes the spectrum test meaningful on a machine with native LAPACK too."""
    jvm = spark.sparkContext._jvm
    assert jvm.java.lang.System.getProperty("dev.ludovic.netlib.lapack.nativeLib") == "none-such.so"
    assert jvm.dev.ludovic.netlib.lapack.LAPACK.getInstance().getClass().getName().endswith("F2jLAPACK")


@pytest.mark.parametrize("partitions", [1, 2, 3])
def test_rank_deficient_spectrum_equals_scikit_learn_with_f2j(spark, features_out, partitions):
    features = spark.read.parquet(str(features_out / "fit_out" / "features"))
    expected = sklearn_spectrum(np.stack(features.toPandas().features))
    assert len(expected) == 160 and expected[0] > 0.2
    # rows hashed into the partitions by path, sorted within each: with this layout Spark ML's PCA fit
    # (F2J) returned a first ratio of 0.035 for 1, 2 and 3 partitions (checked when this test was written)
    layout = features.repartition(partitions, "path").sortWithinPartitions("path")

    model = pca.fit_pca(spark, layout, 0.95, None)

    ours = np.array(model.info["explained_variance"])
    np.testing.assert_allclose(ours[:160], expected, atol=1e-9)
    assert np.abs(ours[160:]).max() < 1e-9
    assert model.info["fit_rows"] == 160


def test_k_is_the_smallest_reaching_the_target(variance_run):
    _, report = variance_run
    cumulative = np.array(report["cumulative_explained_variance"])
    k = report["k"]
    assert report["variance_target"] == 0.95
    assert cumulative[k - 1] >= 0.95 > cumulative[k - 2]
    assert len(report["explained_variance"]) == 1280  # the whole spectrum from one fit
    np.testing.assert_allclose(np.cumsum(report["explained_variance"]), cumulative)
    assert (report["pca_fitted"], report["pca_fit_rows"], report["pca_corpus_rows"]) == (True, 160, 160)
    assert report["pca_model"].startswith("sha-") and report["pca_model_uri"].endswith("/pca_model")


def test_reduced_features_and_saved_model(spark, variance_run, features_out):
    out, report = variance_run
    reduced = spark.read.parquet(str(out / "pca")).toPandas().set_index("path").sort_index()
    assert dict(spark.read.parquet(str(out / "pca")).dtypes)["pca"] == "array<float>"
    assert len(reduced) == report["features_rows"] == 160
    assert all(len(v) == report["k"] for v in reduced.pca)
    assert set(reduced.pca_model) == {report["pca_model"]}
    saved = pca_model.load(spark, str(out / "pca_model"))
    assert (saved.version, saved.k) == (report["pca_model"], report["k"])
    fit_rows = spark.read.parquet(str(out / "features"))
    again = pca.reduce_features(saved, fit_rows).toPandas().set_index("path").sort_index()
    np.testing.assert_array_equal(np.stack(again.pca), np.stack(reduced.pca))
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


def test_apply_a_saved_model_without_refitting(spark, variance_run, tmp_path):
    """The same images through --model in another run: identical coordinates, same version, no fit."""
    out, fitted = variance_run

    report = pca.run(spark, pca_args(tmp_path, features=out / "features", model=out / "pca_model"))

    assert (report["pca_fitted"], report["pca_model"], report["k"]) == (False, fitted["pca_model"], fitted["k"])
    assert report["pca_fit_rows"] is None and report["explained_variance"] == fitted["explained_variance"]
    assert not (tmp_path / "pca_model").exists()
    before = spark.read.parquet(str(out / "pca")).toPandas().sort_values("path")
    after = spark.read.parquet(str(tmp_path / "pca")).toPandas().sort_values("path")
    assert list(after.path) == list(before.path) and set(after.pca_model) == {fitted["pca_model"]}
    np.testing.assert_array_equal(np.stack(after.pca), np.stack(before.pca))


def test_fit_on_several_inputs_samples_and_reprojects_the_corpus(spark, features_out, tmp_path):
    """Two inputs by glob, one corpus input re-projected into the model folder, a bounded sample."""
    fit = features_out / "fit_out" / "features"
    model_dir = tmp_path / "models" / "v0007"

    report = pca.run(spark, pca_args(
        tmp_path / "run", features=str(features_out / "*_out" / "features"), corpus=fit, k=5, max_fit_rows=120,
        model_output=model_dir, model_version="v0007",
    ))

    assert (report["pca_model"], report["pca_model_uri"], report["k"]) == ("v0007", str(model_dir), 5)
    assert report["pca_rows"] == 180 and report["pca_corpus_rows"] == 340  # 160 + 20 inputs, 160 corpus rows
    assert 60 <= report["pca_fit_rows"] < 200  # a uniform sample of about 120 rows
    [part] = report["pca_corpus"]
    assert part == {"features": str(fit), "pca": f"{model_dir}/corpus/part-00000"}
    corpus = spark.read.parquet(part["pca"]).toPandas()
    assert len(corpus) == 160 and set(corpus.pca_model) == {"v0007"} and {len(v) for v in corpus.pca} == {5}
    saved = pca_model.load(spark, str(model_dir))
    assert saved.info["fitted_on"] == [str(features_out / "*_out" / "features"), str(fit)]
    assert saved.info["corpus"] == report["pca_corpus"] and saved.info["fit_rows"] == report["pca_fit_rows"]
    # the re-projection is the model applied to that input
    again = pca.reduce_features(saved, spark.read.parquet(str(fit))).toPandas().sort_values("path")
    np.testing.assert_array_equal(np.stack(again.pca), np.stack(corpus.sort_values("path").pca))


def test_fixed_k_and_report(spark, features_out, tmp_path):
    report = pca.run(spark, pca_args(tmp_path, k=7, features=features_out / "fit_out" / "features"))
    assert report["k"] == 7 and report["variance_target"] is None
    assert all(len(v) == 7 for v in spark.read.parquet(str(tmp_path / "pca")).toPandas().pca)
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["k"] == 7 and "images_seen" not in written  # no featurize.json in this folder
    assert written["pca_model"] == report["pca_model"] and written["pca_fitted"] is True


def relabelled_features(spark, source, target, suffix: str):
    """The same feature rows under another CNN model id, as the int8 engine labels its features
    (`<model>+int8`): same length, other coordinates."""
    frame = spark.read.parquet(str(source))
    frame.withColumn("model", F.concat("model", F.lit(suffix))).write.parquet(str(target))
    return target


def test_a_saved_model_reduces_only_the_cnn_models_features_it_was_fitted_on(spark, variance_run, features_out, tmp_path):
    out, _ = variance_run
    fitted_on = {row["model"] for row in spark.read.parquet(str(out / "features")).select("model").collect()}
    assert len(fitted_on) == 1 and pca_model.load(spark, str(out / "pca_model")).info["feature_model"] in fitted_on
    other = relabelled_features(spark, features_out / "new_out" / "features", tmp_path / "int8", "+int8")
    [model_id] = fitted_on
    message = (f"features of {model_id}+int8 cannot be reduced by {out / 'pca_model'}, fitted on features of"
               f" {model_id}: featurize with the model and engine it was fitted on, or start over with them")
    with pytest.raises(pca.PcaInputError, match=re.escape(message)):
        pca.run(spark, pca_args(tmp_path / "out", features=other, model=out / "pca_model"))
    assert not (tmp_path / "out" / "pca").exists()
    # a fit on features of two models is refused too
    with pytest.raises(pca.PcaInputError, match=re.escape(f"hold features of 2 CNN models ({model_id}, {model_id}+int8)")):
        pca.run(spark, pca_args(tmp_path / "fit", features=out / "features", corpus=other))


def test_bad_requests_are_clear(spark, features_out, tmp_path):
    features = features_out / "fit_out" / "features"
    with pytest.raises(pca.PcaInputError, match="--k 5000 must be between 1 and the feature length 1280"):
        pca.run(spark, pca_args(tmp_path, k=5000, features=features))
    with pytest.raises(pca.PcaInputError, match=r"--variance 1.5 must be in \(0, 1\]"):
        pca.run(spark, pca_args(tmp_path, variance=1.5, features=features))
    with pytest.raises(pca.PcaInputError, match="cannot read features at"):
        pca.run(spark, pca_args(tmp_path / "nothing"))
    with pytest.raises(pca.PcaInputError, match=f"--model: {tmp_path}/none is not a saved PCA model folder"):
        pca.run(spark, pca_args(tmp_path, features=features, model=tmp_path / "none"))
    with pytest.raises(pca.PcaInputError, match="--corpus and --model-output belong to a fit"):
        pca.run(spark, pca_args(tmp_path, features=features, model=tmp_path / "none", corpus=features))


def test_choose_k_edges():
    cumulative = np.array([0.5, 0.8, 0.95, 1.0])
    assert pca.choose_k(cumulative, 0.95) == 3
    assert pca.choose_k(cumulative, 0.5) == 1
    assert pca.choose_k(cumulative, 1.0) == 4


def test_moments_merge_equals_one_pass():
    """Chan's merge of two halves gives the moments of the whole (what the partitions rely on)."""
    rows = np.random.default_rng(3).normal(5.0, 2.0, size=(301, 7))
    merged = pca_model.Moments.of(rows[:100]).merge(pca_model.Moments.of(rows[100:]))
    whole = pca_model.Moments.of(rows)
    assert merged.n == 301
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-10)
