"""A round of the bench: the ceiling and every Spark run its ratios compare, back to back (the
machine may be noisy, so every ratio is measured in each round; spread gives min/median/max)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench import phone
from bench.ceiling import ceiling
from bench.spark_probes import run_probe
from bench.workload import Workload

# Extra ratios measured in every round, side by side with the core ones: each takes the round's
# Workload and returns {ratio key: value}; every key gets min/median/max like the core ratios.
# (A module adds its own with EXTRA_RATIOS.append(function), e.g. an int8 engine's speedup.)
EXTRA_RATIOS: list[Callable[[Workload], dict[str, float]]] = []


def measure_round(load: Workload, log: Callable[[str], None]) -> dict:
    """One round: the ceiling, then every Spark run the core ratios compare, back to back."""
    top = ceiling(load.artifacts[load.alpha], load.contents, [load.ceiling_batch_size])
    log("  featurize full")
    full = run_probe("featurize", images=load.full, output=load.work / "out-full",
                     artifact=load.artifacts[load.alpha], batch_size=load.batch_size)
    log("  featurize incremental (5 % new)")
    inc = run_probe("featurize", manifest=load.manifest, output=load.work / "out-inc",
                    artifact=load.artifacts[load.alpha], batch_size=load.batch_size)
    log("  featurize 1x")
    one = run_probe("featurize", images=load.one_x, output=load.work / "out-1x",
                    artifact=load.artifacts[load.alpha], batch_size=load.batch_size)
    log("  seed method")
    seed = run_probe("seed_method", images=load.one_x, output=load.work / "out-seed", alpha=load.alpha)
    log("  pca")
    pca = run_probe("pca", features=load.work / "out-full" / "features")
    spark_img_s = full["images"] / full["seconds"]
    seed_img_s = seed["images"] / seed["seconds"]
    ratios = {
        "spark_over_ceiling": spark_img_s / top["img_s"],
        "spark_over_seed": spark_img_s / seed_img_s,
        "incremental_over_full": inc["seconds"] / full["seconds"],
        "rss_ratio_10x": full["peak_rss_bytes"] / one["peak_rss_bytes"],
        "pca_spark_over_sklearn": pca["spark_seconds"] / pca["sklearn_seconds"],
    }
    phone_round = phone.measure_phone_and_peers(load.work, load.phone, load.one_x, load.artifacts[load.alpha],
                                                load.batch_size, one, run_probe, log)
    ratios.update(phone_round.pop("ratios"))
    for extra in EXTRA_RATIOS:
        ratios.update(extra(load))
    return {"ratios": ratios, "ceiling": top, "ceiling_img_s": top["img_s"], "spark_img_s": spark_img_s,
            "seed_method_img_s": seed_img_s, "featurize_full": full, "featurize_incremental": inc,
            "featurize_1x": one, "seed_method": seed, "pca": pca, **phone_round}


def spread(values: list[float]) -> dict:
    """min/median/max of a figure over the rounds, and every round's value in order."""
    return {"min": min(values), "median": float(np.median(values)), "max": max(values), "runs": values}



def round_figures(rounds: list[dict]) -> dict:
    """results.json's figures of the rounds: every ratio's min/median/max (its median also top level),
    the medians of the throughputs over the rounds, the last round's runs."""
    last = rounds[-1]
    ratios = {key: spread([r["ratios"][key] for r in rounds]) for key in rounds[0]["ratios"]}
    figures: dict = {"rounds": rounds, "ratios": ratios}
    figures.update({key: spread_of["median"] for key, spread_of in ratios.items()})  # for the docs' tables
    figures["incremental_ratio"] = figures["incremental_over_full"]  # its name before rounds
    for key in ("ceiling_img_s", "spark_img_s", "seed_method_img_s", *phone.PHONE_FIGURES):
        figures[key] = spread([r[key] for r in rounds])["median"]
    figures["phone_figures"] = {key: spread([r[key] for r in rounds]) for key in phone.PHONE_FIGURES}
    figures["phone_runs"] = last["phone_runs"]
    figures.update({key: last[key] for key in ("featurize_full", "featurize_1x", "featurize_incremental", "seed_method", "pca")})
    figures["pca_spark_s"] = spread([r["pca"]["spark_seconds"] for r in rounds])["median"]
    figures["pca_sklearn_s"] = spread([r["pca"]["sklearn_seconds"] for r in rounds])["median"]
    return figures
