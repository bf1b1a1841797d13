"""USD per 100k images (small images and phone photos), per priced instance and scenario, from the
bench's throughput and the daily-run cost model (fruits_emr.cost)."""

from __future__ import annotations

from fruits_emr.cost import cost_model, load_prices


def cost_figures(results: dict) -> dict:
    """cost_usd_per_100k_images and its scenarios, from this run's throughput and the daily-run
    cost model's fixed overhead (fruits_emr.cost: provisioning + the measured bootstrap)."""
    prices = load_prices()
    model = cost_model(results, prices["assumptions"])
    scenarios = cost_per_100k(model.img_s_per_vcpu, prices, model.overhead_hours)
    headline = prices["assumptions"]["scenarios"][0]["name"]
    phone_model = cost_model(results, prices["assumptions"], results.get("phone_median_bytes"))
    phone_scenarios = cost_per_100k(phone_model.img_s_per_vcpu, prices, phone_model.overhead_hours)
    return {
        "cost_usd_per_100k_phone_photos": phone_scenarios[headline]["best_spot"]["usd"],
        "cost_phone_photos": {"scenarios": phone_scenarios, "per_core_img_s": phone_model.img_s_per_vcpu,
                              "throughput_figure": phone_model.throughput_figure},
        "cost_usd_per_100k_images": scenarios[headline]["best_spot"]["usd"],
        "cost": {"scenarios": scenarios, "headline_scenario": headline, "per_core_img_s": model.img_s_per_vcpu,
                 "overhead_minutes": round(model.overhead_hours * 60, 2),
                 "assumptions": prices["assumptions"], "prices_as_of": prices["as_of"]},
    }


def cost_per_100k(per_core_img_s: float, prices: dict, overhead_hours: float) -> dict:
    """USD per 100k images for each priced instance type and market, per scenario: the
    cluster's fixed overhead and the on-demand master node are billed too, and amortised over
    the scenario's run size."""
    assumptions = prices["assumptions"]
    master = prices["instances"][assumptions["master_instance"]]
    master_hourly = master[assumptions["master_market"]] + master["emr"]
    scenarios = {}
    for scenario in assumptions["scenarios"]:
        run_images, nodes = scenario["run_images"], scenario["core_nodes"]
        table = {}
        for name, instance in prices["instances"].items():
            img_s_per_node = per_core_img_s * instance["vcpu"] * assumptions["vcpu_efficiency"]
            compute_hours = run_images / (img_s_per_node * nodes) / 3600
            cluster_hours = compute_hours + overhead_hours
            for market in ("spot", "on_demand"):
                run_cost = cluster_hours * (nodes * (instance[market] + instance["emr"]) + master_hourly)
                table[f"{name}/{market}"] = round(run_cost / run_images * 100_000, 4)
        best = min((v, k) for k, v in table.items() if k.endswith("/spot"))
        scenarios[scenario["name"]] = {**scenario, "usd_per_100k": table, "best_spot": {"instance": best[1], "usd": best[0]}}
    return scenarios

