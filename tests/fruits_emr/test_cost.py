"""The cost of a daily run (fruits_emr.cost): a transient cluster's fixed overhead, the shape the day's
image count calls for, and the RunJobFlow request of each shape (botocore's model and moto's EMR)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from fruits_emr import artifacts, cost, emr_request, layout, pca_plan
from fruits_emr.cost import CLUSTER, PRIMARY_ONLY
from fruits_emr.settings import ConfigError, RunConfig
from fruits_emr.task_records import EmrRequest, RunSelection
from tests.support import REPO_ROOT

from .test_emr_config import ATTEMPT, WHEELHOUSE, assert_valid, resolve

RESULTS = json.loads((REPO_ROOT / "bench" / "results.json").read_text())
PRICE_FILE = cost.load_prices()
PRICES = PRICE_FILE["instances"]
MODEL = cost.cost_model(RESULTS, PRICE_FILE["assumptions"])


def config(**overrides) -> RunConfig:
    return resolve({"bucket": "fruits-data", **overrides})


def request(run_config: RunConfig, shape: str) -> dict:
    paths = layout.run_paths(run_config, "2024-06-01", ATTEMPT)
    staged = artifacts.code_layout(run_config.bucket, run_config.artifacts_prefix, "0123456789abcdef",
                                   run_config.weights, "s3://fruits-data/artifacts/models/m/model.onnx", WHEELHOUSE)
    return emr_request.job_flow_overrides(run_config, paths, staged, "fruits_features", "manual__1", shape)


def test_cost_model_takes_the_measured_figures():
    assert MODEL.img_s_per_vcpu == pytest.approx(RESULTS["spark_img_s"] / RESULTS["machine"]["cores"])
    assert MODEL.bootstrap_minutes * 60 == pytest.approx(RESULTS["bootstrap_install_seconds"]["wheelhouse"]["median"])
    assert MODEL.overhead_hours * 60 == pytest.approx(MODEL.provisioning_minutes + MODEL.bootstrap_minutes)
    with pytest.raises(ConfigError, match="bench/results.json lacks a measured figure"):
        cost.cost_model({"spark_img_s": 100.0}, PRICE_FILE["assumptions"])
    with pytest.raises(ConfigError, match="cluster_shape to primary_only or cluster"):
        cost.load_cost_model(REPO_ROOT / "no-such" / "results.json")


def test_every_node_pays_the_fixed_overhead():
    primary, cluster = (cost.cluster_shape(config(), name, PRICES) for name in (PRIMARY_ONLY, CLUSTER))
    # the default nodes: m5.xlarge primary on demand, 2 x m5.xlarge spot core nodes
    assert (primary.usd_per_hour, primary.vcpus) == (pytest.approx(0.048 + 0.192), 4)
    assert (cluster.usd_per_hour, cluster.vcpus) == (pytest.approx(0.240 + 2 * (0.048 + 0.075)), 8)
    for shape in (primary, cluster):
        assert shape.usd(0, MODEL) == pytest.approx(MODEL.overhead_hours * shape.usd_per_hour)
        assert shape.hours(100_000, MODEL) > shape.hours(10_000, MODEL) > shape.hours(0, MODEL) == MODEL.overhead_hours
    # twice the vCPUs: the images take half the time on the cluster
    compute = {s.name: s.hours(100_000, MODEL) - MODEL.overhead_hours for s in (primary, cluster)}
    assert compute[PRIMARY_ONLY] == pytest.approx(2 * compute[CLUSTER])


def test_break_even_volume_is_where_the_shapes_cost_the_same():
    eight = config(core_instance_count=8)  # spot core vCPUs cheaper than the on-demand primary's
    limits = cost.primary_only_limits(eight, PRICES, MODEL)
    below = limits["cheaper_below"]
    primary, cluster = (cost.cluster_shape(eight, name, PRICES) for name in (PRIMARY_ONLY, CLUSTER))
    assert 0 < below < float("inf")
    assert primary.usd(int(below * 0.9), MODEL) < cluster.usd(int(below * 0.9), MODEL)
    assert primary.usd(int(below * 1.1), MODEL) > cluster.usd(int(below * 1.1), MODEL)
    assert primary.usd(int(below), MODEL) == pytest.approx(cluster.usd(int(below), MODEL), rel=1e-4)
    # the primary node featurizes within_target_below images in the target compute time
    fits = limits["within_target_below"]
    assert primary.hours(int(fits), MODEL) - MODEL.overhead_hours == pytest.approx(MODEL.target_compute_minutes / 60, rel=1e-4)


def test_default_nodes_primary_alone_is_cheaper_at_every_volume():
    """2 spot core nodes cost about what the on-demand primary costs per vCPU: the cluster only buys time."""
    assert cost.primary_only_limits(config(), PRICES, MODEL)["cheaper_below"] == float("inf")
    primary, cluster = (cost.cluster_shape(config(), name, PRICES) for name in (PRIMARY_ONLY, CLUSTER))
    for images in (1_000, 100_000, 10_000_000):
        assert primary.usd(images, MODEL) < cluster.usd(images, MODEL)


def test_auto_shape_follows_the_image_count_within_the_caps():
    eight = config(core_instance_count=8)
    limits = cost.primary_only_limits(eight, PRICES, MODEL)
    limit = min(limits.values())
    shape, reason = cost.choose_shape(eight, int(limit) - 1, PRICES, lambda: MODEL)
    assert shape == PRIMARY_ONLY and "cheaper and fast enough" in reason
    shape, reason = cost.choose_shape(eight, int(limit) + 1, PRICES, lambda: MODEL)
    assert shape == CLUSTER and "8 core nodes" in reason
    # default nodes: never cheaper as a cluster, so the target time decides
    fits = cost.primary_only_limits(config(), PRICES, MODEL)["within_target_below"]
    assert cost.choose_shape(config(), int(fits) - 1, PRICES, lambda: MODEL)[0] == PRIMARY_ONLY
    assert cost.choose_shape(config(), int(fits) + 1, PRICES, lambda: MODEL)[0] == CLUSTER


def test_param_forces_the_shape_without_the_cost_model():
    def no_model():
        raise AssertionError("a forced shape needs no cost model")

    assert cost.choose_shape(config(cluster_shape="cluster"), 1, PRICES, no_model) == (CLUSTER, "set by the Param cluster_shape")
    assert cost.choose_shape(config(cluster_shape="primary_only"), 10**9, PRICES, no_model)[0] == PRIMARY_ONLY
    with pytest.raises(ConfigError, match="Param 'cluster_shape' = 'huge'"):
        config(cluster_shape="huge")


def test_unpriced_instance_type_keeps_the_configured_cluster():
    shape, reason = cost.choose_shape(config(master_instance_type="r6a.8xlarge"), 10, PRICES, lambda: MODEL)
    assert shape == CLUSTER and "r6a.8xlarge" in reason


@pytest.mark.parametrize("shape", [PRIMARY_ONLY, CLUSTER])
def test_request_of_each_shape_is_valid_and_accepted_by_emr(shape, emr_client):
    run_config = config()
    overrides = request(run_config, shape)
    assert_valid("RunJobFlow", overrides)
    fleets = [fleet["InstanceFleetType"] for fleet in overrides["Instances"]["InstanceFleets"]]
    assert fleets == (["MASTER"] if shape == PRIMARY_ONLY else ["MASTER", "CORE"])
    # moto parses the request as EMR does (it keeps no instance fleets, so it cannot list them)
    cluster_id = emr_client.run_job_flow(**overrides)["JobFlowId"]
    cluster = emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert (cluster["Name"], cluster["ReleaseLabel"]) == (overrides["Name"], run_config.release_label)


def test_emr_request_task_picks_the_shape_from_the_days_images():
    run_config = config()
    paths = layout.run_paths(run_config, "2024-06-01", ATTEMPT)
    staged = artifacts.code_layout(run_config.bucket, run_config.artifacts_prefix, "0123456789abcdef",
                                   run_config.weights, "s3://fruits-data/artifacts/models/m/model.onnx", WHEELHOUSE)
    plan = pca_plan.plan_pca(run_config, None, {}, paths)
    fits = cost.primary_only_limits(run_config, PRICES, MODEL)["within_target_below"]

    def built(images: int, cluster_for=("fruits_features", "manual__1")) -> EmrRequest:
        run = RunSelection(paths=paths, files=images, images=images, scope="test")
        return emr_request.build_request(run_config, staged, run, plan, cluster_for, None, REPO_ROOT)

    small, large = built(1_000), built(int(fits) + 1)
    assert small.cluster_shape == PRIMARY_ONLY and len(small.job_flow_overrides["Instances"]["InstanceFleets"]) == 1
    assert large.cluster_shape == CLUSTER and len(large.job_flow_overrides["Instances"]["InstanceFleets"]) == 2
    assert small.steps == large.steps
    local = built(1_000, cluster_for=None)
    assert (local.job_flow_overrides, local.cluster_shape) == (None, None) and local.steps == small.steps


def test_primary_only_cost_estimate_bills_no_core_nodes():
    start = datetime(2024, 6, 1, tzinfo=UTC)
    estimate = cost.estimate_cost(config(), start, start + timedelta(hours=1), PRICES, PRIMARY_ONLY)
    assert estimate.usd == pytest.approx(0.24) and len(estimate.lines) == 1 and estimate.lines[0].startswith("primary")


def test_usd_per_daily_run_for_the_bench():
    daily = cost.usd_per_daily_run(RESULTS)
    assert sorted(daily["runs"], key=int) == ["1000", "10000", "100000"]
    for run in daily["runs"].values():
        assert run["auto"] in (PRIMARY_ONLY, CLUSTER)
        if run["auto"] == PRIMARY_ONLY:  # only ever for the cheaper shape
            assert run[PRIMARY_ONLY]["usd"] <= run[CLUSTER]["usd"]
    usd = [daily["runs"][n][CLUSTER]["usd"] for n in ("1000", "10000", "100000")]
    assert usd[0] < usd[1] < usd[2]
    # the fixed overhead is most of a small run's cost
    overhead = MODEL.overhead_hours * cost.cluster_shape(RunConfig(), CLUSTER, PRICES).usd_per_hour
    assert daily["runs"]["1000"][CLUSTER]["usd"] < 1.5 * overhead
    assert daily["overhead_minutes"]["bootstrap"] == round(MODEL.bootstrap_minutes, 2)


def test_bench_script_writes_usd_per_daily_run(tmp_path):
    results = tmp_path / "results.json"
    shutil.copy(REPO_ROOT / "bench" / "results.json", results)
    done = subprocess.run([sys.executable, "-m", "bench.daily_cost", "--results", str(results)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    written = json.loads(results.read_text())
    assert written["usd_per_daily_run"] == cost.usd_per_daily_run(RESULTS)
    assert written["spark_img_s"] == RESULTS["spark_img_s"]  # other keys untouched


def test_the_cost_model_takes_the_throughput_measured_at_the_runs_median_object_size():
    """Small images decode ~20x faster than 12-megapixel phone photos: a day of phone photos is
    sized and priced with phone_img_s, the bench's figure on objects of that size."""
    measured = {**RESULTS, "spark_img_s": 200.0, "median_bytes": 5_000, "phone_img_s": 10.0,
                "phone_median_bytes": 2_500_000}
    assumptions = PRICE_FILE["assumptions"]
    assert [cost.matching_throughput(measured, size) for size in (None, 0, 4_000, 60_000, 900_000, 8_000_000)] == [
        "spark_img_s", "spark_img_s", "spark_img_s", "spark_img_s", "phone_img_s", "phone_img_s"]
    unsized = RESULTS | {"median_bytes": None, "phone_median_bytes": None}
    assert cost.matching_throughput(unsized, 3_000_000) == "spark_img_s"  # nothing to match
    phone = cost.cost_model(measured, assumptions, 3_100_000)
    small = cost.cost_model(measured, assumptions, 6_000)
    assert (phone.throughput_figure, small.throughput_figure) == ("phone_img_s", "spark_img_s")
    assert phone.img_s_per_vcpu * 20 == pytest.approx(small.img_s_per_vcpu)
    # the primary node alone featurizes 20x fewer phone photos in the target time: a day of 500k
    # photos needs the cluster, the same count of small images does not
    assert cost.choose_shape(config(), 500_000, PRICES, lambda: small)[0] == PRIMARY_ONLY
    shape, reason = cost.choose_shape(config(), 500_000, PRICES, lambda: phone)
    assert shape == CLUSTER and "phone_img_s" in reason


def test_the_emr_request_task_sizes_the_cluster_by_the_runs_median_photo_size(tmp_path):
    """build_request reads bench/results.json beside the repo and takes the run's median photo size."""
    measured = {**RESULTS, "spark_img_s": 200.0, "median_bytes": 5_000, "phone_img_s": 10.0,
                "phone_median_bytes": 2_500_000}
    (tmp_path / "bench").mkdir()
    (tmp_path / cost.BENCH_RESULTS).write_text(json.dumps(measured))
    run_config = config()
    paths = layout.run_paths(run_config, "2024-06-01", ATTEMPT)
    staged = artifacts.code_layout(run_config.bucket, run_config.artifacts_prefix, "0123456789abcdef",
                                   run_config.weights, "s3://fruits-data/artifacts/models/m/model.onnx", WHEELHOUSE)
    plan = pca_plan.plan_pca(run_config, None, {}, paths)
    shapes = {}
    for median in (6_000, 3_000_000):
        run = RunSelection(paths=paths, files=500_000, images=500_000, scope="test", median_bytes=median)
        shapes[median] = emr_request.build_request(run_config, staged, run, plan, ("fruits_features", "manual__1"),
                                                   None, tmp_path).cluster_shape
    assert shapes == {6_000: PRIMARY_ONLY, 3_000_000: CLUSTER}
