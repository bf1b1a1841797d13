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

