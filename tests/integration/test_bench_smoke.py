"""The benchmark harness on a handful of images, so it cannot rot. Checks what it produced
(keys, counts, agreement figures), never how fast anything was."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pyspark
import pytest

from tests.support import REPO_ROOT

REQUIRED = (
    "ceiling_img_s", "spark_img_s", "seed_method_img_s", "engine_max_abs_diff_rel", "incremental_ratio",
    "rss_ratio_10x", "pca_spark_s", "pca_sklearn_s", "cost_usd_per_100k_images", "machine", "versions", "date",
    "pca_fit_seconds_by_rows", "pca_fit_peak_rss_by_rows", "spark_over_ceiling", "incremental_over_full", "ratios",
    # the phone-size corpus (bench/phone.py) and the peers (bench/peers.py)
    "phone_img_s", "phone_ceiling_img_s", "decode_share", "cost_usd_per_100k_phone_photos",
    "phone_median_bytes", "median_bytes", "phone_corpus", "phone_figures",
)
RATIOS = ("spark_over_ceiling", "spark_over_seed", "incremental_over_full", "rss_ratio_10x", "pca_spark_over_sklearn",
          "phone_over_ceiling", "spark_over_predict_batch_udf", "spark_over_predict_batch_udf_small", "spark_over_ray",
          "spark_over_ray_small")


@pytest.mark.spark  # the bench's Spark runs
def test_smoke_benchmark_produces_every_figure(tmp_path):
    results_path = tmp_path / "results.json"
    # as `make bench` finds it: the bootstrap time measured by bench/bootstrap_install.py
    bootstrap = json.loads((REPO_ROOT / "bench" / "results.json").read_text())["bootstrap_install_seconds"]
    results_path.write_text(json.dumps({"bootstrap_install_seconds": bootstrap}))
    done = subprocess.run(
        [sys.executable, "-m", "bench.run_bench", "--smoke", "--results", str(results_path), "--workdir", str(tmp_path / "work")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(results_path.read_text())
    assert set(REQUIRED) <= set(results)
    for key in REQUIRED[:9]:
        assert isinstance(results[key], float) and math.isfinite(results[key]) and results[key] > 0, key
    for key in RATIOS:  # 1 round in smoke mode (how rounds combine: the test below)
        figures = results["ratios"][key]
        assert len(figures["runs"]) == 1 and all(math.isfinite(v) and v > 0 for v in figures["runs"]), key
        assert figures["min"] == min(figures["runs"]) and figures["max"] == max(figures["runs"]), key
        assert figures["min"] <= results[key] == figures["median"] <= figures["max"], key
    assert all(set(RATIOS) <= set(r["ratios"]) for r in results["rounds"]) and len(results["rounds"]) == 1
    assert results["ceiling"]["img_s_by_round"] == [results["rounds"][0]["ceiling_img_s"]]
    assert results["smoke"] is True and results["images_1x"] == 24 and results["images_full"] == 48
    assert results["featurize_full"]["features_rows"] == 48 and results["featurize_1x"]["features_rows"] == 24
    assert results["featurize_incremental"]["images"] == 2  # 5 % of 48, rounded
    assert results["seed_method"]["images"] == 24
    assert results["engine_max_abs_diff_rel"] <= 1e-4  # agreement, not speed
    assert results["pca"]["rows"] == 48 and results["pca"]["spectrum_max_abs_diff"] < 1e-6
    assert set(results["cost"]["scenarios"]) == {"large run", "daily run"}
    # the daily-run cost model's fixed overhead: provisioning + the measured bootstrap
    provisioning = results["cost"]["assumptions"]["provisioning_minutes"]
    assert results["cost"]["overhead_minutes"] == round(provisioning + bootstrap["wheelhouse"]["median"] / 60, 2)
    assert results["bootstrap_install_seconds"] == bootstrap
    # the PCA fit path at growing corpus sizes (one tiny size in smoke mode): every row counted, all fitted on
    assert set(results["pca_fit_seconds_by_rows"]) == set(results["pca_fit_peak_rss_by_rows"]) == {"1000"}
    assert (results["pca_fit_runs"]["1000"]["rows"], results["pca_fit_runs"]["1000"]["fit_rows"]) == (1000, 1000)
    assert all(v > 0 for v in results["pca_fit_peak_rss_by_rows"].values())
    assert results["machine"]["cores"] >= 1 and results["versions"]["pyspark"] == pyspark.__version__
    # the int8 figures on 4 images per label (3 train, 1 test), the models from the machine's cache
    assert (results["int8"]["images"], results["int8"]["runs"]) == (16, 3)
    assert (results["int8"]["probe"]["train"], results["int8"]["probe"]["test"]) == (12, 4)
    assert 0.9 < results["int8_cosine_min"] <= 1.0
    # the phone corpus: 1 photo x 5 formats, made by the real encoders, every one featurized by every pipeline
    corpus = results["phone_corpus"]
    assert (corpus["photos"], corpus["formats"]) == (5, ["avif", "heic", "jpg", "png", "webp"])
    assert set(corpus["decode_ms_by_format"]) == set(corpus["formats"]) and 0 < results["decode_share"] < 1
    runs = results["phone_runs"]
    assert runs["phone_featurize"]["features_rows"] == runs["phone_ceiling"]["images"] == 5
    assert all(runs[f"{peer}_phone"]["images"] == 5 and runs[f"{peer}_small"]["images"] == 24
               for peer in ("predict_batch_udf", "ray"))
    assert results["phone_median_bytes"] > 20 * results["median_bytes"]  # 3 MP in smoke mode vs 100 x 100
    assert results["cost_phone_photos"]["throughput_figure"] == "phone_img_s"
    assert results["cost_usd_per_100k_phone_photos"] > results["cost_usd_per_100k_images"] > 0
    assert "| spark_img_s / ceiling_img_s |" in done.stdout and "SMOKE RUN" in done.stdout
    assert "| phone_over_ceiling (12 MP photos" in done.stdout


def test_the_benchmark_stops_before_measuring_without_the_bootstrap_time(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.run_bench", "--smoke", "--results", str(tmp_path / "results.json"),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    assert "has no bootstrap_install_seconds" in done.stderr and "bench.bootstrap_install" in done.stderr
    assert not (tmp_path / "work").exists()


def test_rounds_combine_into_min_median_max_and_keep_the_last_rounds_runs():
    """What --rounds adds to one round (the smoke runs one): bench.rounds.round_figures on three rounds."""
    from bench import phone
    from bench.rounds import round_figures

    def a_round(number: int) -> dict:
        return {"ratios": {key: number / 10 for key in RATIOS},
                **{key: 100.0 * number for key in ("ceiling_img_s", "spark_img_s", "seed_method_img_s",
                                                   *phone.PHONE_FIGURES)},
                "phone_runs": {"round": number}, "pca": {"spark_seconds": number, "sklearn_seconds": 2 * number},
                **{key: {"round": number} for key in ("featurize_full", "featurize_1x", "featurize_incremental",
                                                       "seed_method")}}

    rounds = [a_round(3), a_round(1), a_round(2)]
    figures = round_figures(rounds)
    assert figures["rounds"] == rounds
    for key in RATIOS:
        assert figures["ratios"][key] == {"min": 0.1, "median": 0.2, "max": 0.3, "runs": [0.3, 0.1, 0.2]}, key
        assert figures[key] == 0.2, key
    assert figures["incremental_ratio"] == figures["incremental_over_full"] == 0.2
    assert all(figures[key] == 200.0 for key in ("ceiling_img_s", "spark_img_s", *phone.PHONE_FIGURES))
    assert figures["phone_figures"]["phone_img_s"] == {"min": 100.0, "median": 200.0, "max": 300.0,
                                                       "runs": [300.0, 100.0, 200.0]}
    assert (figures["pca_spark_s"], figures["pca_sklearn_s"]) == (2, 4)
    assert figures["phone_runs"] == figures["featurize_full"] == figures["seed_method"] == {"round": 2}  # the last


def test_selection_bench_takes_the_last_day_only_in_both_measurements(tmp_path):
    """bench.selection_scaling on 3,650 keys (10 a day over a year, every day committed but the
    last): the generated listing and the whole selection against moto take the same 10 images."""
    results_path = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.selection_scaling", "--keys", "3650", "--moto-keys", "3650", "--rounds", "1",
         "--results", str(results_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(results_path.read_text())["selection_seconds_by_keys"]["3650"]
    assert figures["generated"]["taken"] == figures["moto"]["taken"] == 10
    assert figures["generated"]["ledger_gets"] == figures["moto"]["ledger_gets"] == 365  # 364 dates + the pointer
    assert figures["generated"]["list_requests"] == 4
    assert set(figures["moto"]["seconds_spread"]) == {"min", "median", "max"}
