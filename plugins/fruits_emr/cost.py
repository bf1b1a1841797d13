"""What a run's cluster cost: instance-hours x (EMR fee + EC2 price), from the price table in
prices.json (beside this module, shared with bench/run_bench.py) or the Variable fruits_emr_prices."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fruits_emr.settings import ConfigError, RunConfig

PRICES_VARIABLE = "fruits_emr_prices"
PRICES_FILE = Path(__file__).with_name("prices.json")


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
    config: RunConfig, started: datetime, ended: datetime, prices: Mapping[str, Mapping[str, float]]
) -> CostEstimate:
    """Instance-hours x (EMR fee + EC2 price): primary on-demand, core at spot or on-demand.

    Core nodes are priced as the first (preferred) fleet type; spot that fell back to on-demand costs more.
    """
    hours = max((ended - started).total_seconds(), 0.0) / 3600
    market = "spot" if config.use_spot else "on_demand"
    nodes = [("primary", config.master_instance_type, 1, "on_demand"),
             ("core", config.core_instance_types[0], config.core_instance_count, market)]
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
