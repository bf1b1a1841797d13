"""What a run's cluster costs: instance-hours x (EMR fee + EC2 price), from the price table in
prices.json (beside this module, shared with bench/cost_per_100k.py) or the Variable fruits_emr_prices;
and the cost model of a daily run (docs/cost.md): a transient cluster's fixed overhead, the
cluster shape a day's image count calls for, and usd_per_daily_run for bench/results.json."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from fruits_emr.settings import ConfigError, RunConfig

PRICES_VARIABLE = "fruits_emr_prices"
PRIMARY_ONLY, CLUSTER = "primary_only", "cluster"  # the shapes of settings.CLUSTER_SHAPES besides auto
PRICES_FILE = Path(__file__).with_name("prices.json")
BENCH_RESULTS = Path("bench") / "results.json"  # in the repo root: the measured figures of the cost model


def load_prices(path: Path = PRICES_FILE) -> dict[str, Any]:
    """The price file: instances (USD per instance-hour: emr fee, on_demand, spot; vcpu), as_of, notes."""
    return json.loads(path.read_text())


# Approximate us-east-1 USD per instance-hour; override with the Airflow Variable fruits_emr_prices (same shape).
PRICE_TABLE: dict[str, dict[str, float]] = load_prices()["instances"]


@dataclass(frozen=True)
class CostEstimate:
    hours: float
    usd: float
    lines: list[str] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)


def estimate_cost(
    config: RunConfig, started: datetime, ended: datetime, prices: Mapping[str, Mapping[str, float]],
    shape: str = CLUSTER,
) -> CostEstimate:
    """Instance-hours x (EMR fee + EC2 price): primary on-demand, core (shape cluster) at spot or on-demand.

    Core nodes are priced as the first (preferred) fleet type; spot that fell back to on-demand costs more.
    """
    hours = max((ended - started).total_seconds(), 0.0) / 3600
    market = "spot" if config.use_spot else "on_demand"
    nodes = [("primary", config.master_instance_type, 1, "on_demand")]
    if shape == CLUSTER:
        nodes.append(("core", config.core_instance_types[0], config.core_instance_count, market))
    usd, lines, unpriced = 0.0, [], []
    for role, instance_type, count, node_market in nodes:
        price = prices.get(instance_type)
        if not price or node_market not in price or "emr" not in price:
            unpriced.append(instance_type)
            continue
        rate = count * (float(price["emr"]) + float(price[node_market]))
        usd += rate * hours
        lines.append(f"{role}: {count} x {instance_type} {node_market} at ${rate:.3f}/h")
    return CostEstimate(hours=hours, usd=round(usd, 4), lines=lines, unpriced=unpriced)


def merge_prices(overrides: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    table = {k: dict(v) for k, v in PRICE_TABLE.items()}
    for instance_type, price in (overrides or {}).items():
        if not isinstance(price, Mapping):
            raise ConfigError(
                f"Variable {PRICES_VARIABLE}[{instance_type!r}] must be an object like"
                ' {"emr": 0.048, "on_demand": 0.192, "spot": 0.075}.'
            )
        table.setdefault(instance_type, {}).update({k: float(v) for k, v in price.items()})
    return table


# --- the cost of a daily run: a transient cluster's fixed overhead, and the cluster's shape ----


@dataclass(frozen=True)
class RunCostModel:
    """What a run costs besides its instance prices: the fixed overhead every transient cluster
    pays before its first step, and how fast a vCPU featurizes."""

    img_s_per_vcpu: float  # measured: bench/results.json spark_img_s (or phone_img_s: matching_throughput) / cores
    bootstrap_minutes: float  # measured: bench/results.json bootstrap_install_seconds (wheelhouse, median)
    provisioning_minutes: float  # documented: prices.json assumptions (EC2 launch + EMR's own start)
    vcpu_efficiency: float  # prices.json assumptions: a node's vCPU against one of the bench machine
    target_compute_minutes: float  # prices.json assumptions: auto takes the primary node alone only within this
    throughput_figure: str = "spark_img_s"  # which measured figure img_s_per_vcpu comes from

    @property
    def overhead_hours(self) -> float:
        """Billed on every node before the first step: provisioning, then the bootstrap action."""
        return (self.provisioning_minutes + self.bootstrap_minutes) / 60


# The bench's throughput figures and the median object size of the corpus each was measured on:
# the small Fruits-360 images (~5 KB) and the 12-megapixel phone photos (~1-3 MB, bench/phone.py).
THROUGHPUT_FIGURES = (("spark_img_s", "median_bytes"), ("phone_img_s", "phone_median_bytes"))


def matching_throughput(results: Mapping[str, Any], median_bytes: float | None) -> str:
    """The measured figure whose corpus is nearest a run's median object size (on a log scale:
    decoding time grows with the pixels, about with the bytes); spark_img_s without a size."""
    measured = [(figure, results.get(size)) for figure, size in THROUGHPUT_FIGURES if results.get(figure)]
    known = [(figure, float(size)) for figure, size in measured if size]
    if not median_bytes or median_bytes <= 0 or not known:
        return "spark_img_s"
    return min(known, key=lambda item: abs(math.log(item[1]) - math.log(median_bytes)))[0]


def cost_model(
    results: Mapping[str, Any], assumptions: Mapping[str, Any], median_bytes: float | None = None
) -> RunCostModel:
    """The cost model from the bench's measured figures (bench/results.json) and the price file's
    assumptions, at the throughput measured on objects the size of the run's median (None: the
    small images' spark_img_s)."""
    figure = matching_throughput(results, median_bytes)
    try:
        img_s_per_vcpu = float(results[figure]) / int(results["machine"]["cores"])
        bootstrap_seconds = float(results["bootstrap_install_seconds"]["wheelhouse"]["median"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ConfigError(
            f"bench/results.json lacks a measured figure of the cost model ({exc!r}): run `make bench` and"
            " `python -m bench.bootstrap_install`, or set the Param cluster_shape to primary_only or cluster."
        ) from None
    return RunCostModel(
        img_s_per_vcpu=img_s_per_vcpu,
        bootstrap_minutes=bootstrap_seconds / 60,
        provisioning_minutes=float(assumptions["provisioning_minutes"]),
        vcpu_efficiency=float(assumptions["vcpu_efficiency"]),
        target_compute_minutes=float(assumptions["target_compute_minutes"]),
        throughput_figure=figure,
    )


def load_cost_model(results_path: Path, median_bytes: float | None = None) -> RunCostModel:
    """cost_model() of a results file (the DAG: FRUITS_REPO_ROOT/bench/results.json) for a run
    whose photos' median size is median_bytes."""
    if not results_path.is_file():
        raise ConfigError(
            f"{results_path} is missing: cluster_shape auto sizes the cluster from its measured throughput."
            " Deploy bench/results.json beside spark_jobs/, or set the Param cluster_shape to primary_only or cluster."
        )
    return cost_model(json.loads(results_path.read_text()), load_prices()["assumptions"], median_bytes)


@dataclass(frozen=True)
class ClusterShape:
    """A cluster's nodes as the cost model sees them: what an hour costs and how many vCPUs featurize."""

    name: str
    usd_per_hour: float
    vcpus: int

    def hours(self, images: int, model: RunCostModel) -> float:
        img_s = model.img_s_per_vcpu * model.vcpu_efficiency * self.vcpus
        return model.overhead_hours + images / img_s / 3600

    def usd(self, images: int, model: RunCostModel) -> float:
        return self.hours(images, model) * self.usd_per_hour


def node_price(prices: Mapping[str, Mapping[str, float]], instance_type: str, market: str) -> tuple[float, int]:
    """(USD per hour: EMR fee + EC2 price in the market, vCPUs) of one node; KeyError naming an
    instance type the table does not price."""
    price = prices.get(instance_type) or {}
    if not {"emr", market, "vcpu"} <= set(price):
        raise KeyError(instance_type)
    return float(price["emr"]) + float(price[market]), int(price["vcpu"])


def cluster_shape(config: RunConfig, name: str, prices: Mapping[str, Mapping[str, float]]) -> ClusterShape:
    """primary_only: the primary node (on-demand) runs driver and executors; cluster: the primary node
    runs the driver, config.core_instance_count core nodes the executors (priced as the first type)."""
    primary_usd, primary_vcpus = node_price(prices, config.master_instance_type, "on_demand")
    if name == PRIMARY_ONLY:
        return ClusterShape(name, primary_usd, primary_vcpus)
    core_usd, core_vcpus = node_price(prices, config.core_instance_types[0], "spot" if config.use_spot else "on_demand")
    count = config.core_instance_count
    return ClusterShape(name, primary_usd + count * core_usd, count * core_vcpus)


def primary_only_limits(config: RunConfig, prices: Mapping[str, Mapping[str, float]], model: RunCostModel) -> dict[str, float]:
    """The image volumes under which the primary node alone is the better shape:
    `cheaper_below` (inf: at every volume) and `within_target_below` (it featurizes them within
    the target compute time)."""
    small, large = cluster_shape(config, PRIMARY_ONLY, prices), cluster_shape(config, CLUSTER, prices)
    img_s = model.img_s_per_vcpu * model.vcpu_efficiency
    # USD per image, once the cluster is up
    small_rate = small.usd_per_hour / (img_s * small.vcpus * 3600)
    large_rate = large.usd_per_hour / (img_s * large.vcpus * 3600)
    fixed_saving = model.overhead_hours * (large.usd_per_hour - small.usd_per_hour)
    cheaper = math.inf if small_rate <= large_rate else fixed_saving / (small_rate - large_rate)
    return {"cheaper_below": cheaper, "within_target_below": model.target_compute_minutes * 60 * img_s * small.vcpus}


def choose_shape(
    config: RunConfig, images: int, prices: Mapping[str, Mapping[str, float]], model: Callable[[], RunCostModel]
) -> tuple[str, str]:
    """The cluster shape of a run of `images` new images, and why: the Param cluster_shape when it
    forces one; auto: the primary node alone while it is cheaper than the configured cluster and
    featurizes the images within the target compute time, else the configured cluster (the
    Param caps: never more core nodes than core_instance_count)."""
    if config.cluster_shape != "auto":
        return config.cluster_shape, "set by the Param cluster_shape"
    measured = model()
    try:
        limits = primary_only_limits(config, prices, measured)
    except KeyError as exc:
        return CLUSTER, f"no price or vCPU count for {exc} (Variable {PRICES_VARIABLE}): the configured cluster"
    limit = min(limits["cheaper_below"], limits["within_target_below"])
    rate = f"at {measured.img_s_per_vcpu:.1f} images/s per vCPU ({measured.throughput_figure})"
    if images < limit:
        return PRIMARY_ONLY, f"{images} images, under {limit:,.0f} {rate}: the primary node alone is cheaper and fast enough"
    return CLUSTER, f"{images} images, not under {limit:,.0f} {rate}: {config.core_instance_count} core nodes"


DAILY_VOLUMES = (1_000, 10_000, 100_000)
CORE_NODE_COUNTS = (1, 2, 4, 8)


def _volume(images: float) -> int | None:
    return None if math.isinf(images) else round(images)


def usd_per_daily_run(
    results: Mapping[str, Any], price_file: Mapping[str, Any] | None = None, config: RunConfig | None = None,
    volumes: tuple[int, ...] = DAILY_VOLUMES,
) -> dict[str, Any]:
    """For bench/results.json: USD and hours of a daily run of each volume of new images, per shape
    (the default RunConfig's nodes, fixed overhead included), the shape auto picks, and the volumes
    under which the primary node alone is cheaper / fast enough."""
    price_file = price_file or load_prices()
    config = config or RunConfig()
    model = cost_model(results, price_file["assumptions"])
    prices = price_file["instances"]
    shapes = {name: cluster_shape(config, name, prices) for name in (PRIMARY_ONLY, CLUSTER)}
    runs = {}
    for images in volumes:
        runs[str(images)] = {
            **{name: {"usd": round(shape.usd(images, model), 4), "hours": round(shape.hours(images, model), 3)}
               for name, shape in shapes.items()},
            "auto": choose_shape(config, images, prices, lambda: model)[0],
        }
    limits = primary_only_limits(config, prices, model)
    by_core_nodes = {
        str(count): _volume(primary_only_limits(replace(config, core_instance_count=count), prices, model)["cheaper_below"])
        for count in CORE_NODE_COUNTS
    }
    return {
        "runs": runs,
        # null: the primary node alone is cheaper at every volume (the cluster only buys time)
        "primary_only_cheaper_below_images": _volume(limits["cheaper_below"]),
        "primary_only_cheaper_below_images_by_core_nodes": by_core_nodes,
        "primary_only_within_target_below_images": round(limits["within_target_below"]),
        "target_compute_minutes": model.target_compute_minutes,
        "cluster": {"primary": config.master_instance_type, "core": f"{config.core_instance_count} x"
                    f" {config.core_instance_types[0]} {'spot' if config.use_spot else 'on_demand'}"},
        "overhead_minutes": {"provisioning": model.provisioning_minutes, "bootstrap": round(model.bootstrap_minutes, 2)},
        "img_s_per_vcpu": round(model.img_s_per_vcpu, 2),
        "prices_as_of": price_file["as_of"],
    }
