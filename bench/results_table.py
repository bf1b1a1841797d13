"""The bench's table (markdown) for the console and docs/performance.md (between its
<!-- bench:start/end --> markers)."""

from __future__ import annotations

from pathlib import Path

from bench.sample_images import REPO_ROOT

PERFORMANCE_DOC = REPO_ROOT / "docs" / "performance.md"


def readme_table(results: dict) -> str:
    targets = {
        "spark_over_ceiling": ("spark_img_s / ceiling_img_s", ">= 0.90"),
        "spark_over_seed": ("spark_img_s / seed_method_img_s", ">= 4"),
        "engine_max_abs_diff_rel": ("engine_max_abs_diff_rel", "<= 1e-4"),
        "incremental_over_full": ("incremental_over_full (5 % new images)", "<= 0.10"),
        "rss_ratio_10x": ("rss_ratio_10x", "<= 1.2"),
        "pca_spark_over_sklearn": ("pca_spark_s / pca_sklearn_s", "<= 3"),
        "cost_usd_per_100k_images": ("cost_usd_per_100k_images (spot)", "<= 0.10"),
        "phone_over_ceiling": ("phone_over_ceiling (12 MP photos: spark / decode + inference ceiling)", ">= 0.90"),
        "spark_over_predict_batch_udf": ("spark_over_predict_batch_udf (12 MP photos)", "> 1"),
        "spark_over_predict_batch_udf_small": ("spark_over_predict_batch_udf_small (1x sample)", "> 1"),
        "spark_over_ray": ("spark_over_ray (12 MP photos)", "> 1"),
        "spark_over_ray_small": ("spark_over_ray_small (1x sample)", "> 1"),
    }
    ratios = results["ratios"]
    lines = [
        f"Measured {results['date']} on {results['machine']['cpu']} ({results['machine']['cores']} cores),"
        f" MobileNetV2 alpha {results['alpha']} at 224, {results['images_full']} images"
        f" ({results['replicas']}x the sample); ratios: median (min–max) of {len(results['rounds'])} rounds"
        f"{' — SMOKE RUN' if results['smoke'] else ''}.",
        *phone_rounds_note(results),
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        f"| ceiling_img_s (1 process, all cores, decode + ONNX Runtime) | {results['ceiling_img_s']:.1f} | — |",
        f"| spark_img_s (featurize job, local[2]) | {results['spark_img_s']:.1f} | — |",
        f"| seed_method_img_s (Keras predict per Arrow batch) | {results['seed_method_img_s']:.1f} | — |",
        f"| phone_img_s (featurize job, {results['phone_corpus']['photos']} phone photos:"
        f" {', '.join(results['phone_corpus']['formats'])}) | {results['phone_img_s']:.2f} | — |",
        f"| phone_ceiling_img_s (a process per core, decode + ONNX Runtime) | {results['phone_ceiling_img_s']:.2f} | — |",
        f"| decode_share (phone photos: decode ÷ decode + inference) | {results['decode_share']:.2f} | — |",
        f"| predict_batch_udf / ray img/s (phone photos) | {results['predict_batch_udf_phone_img_s']:.2f} /"
        f" {results['ray_phone_img_s']:.2f} | — |",
        f"| predict_batch_udf / ray img/s (1x sample) | {results['predict_batch_udf_small_img_s']:.1f} /"
        f" {results['ray_small_img_s']:.1f} | — |",
    ]
    for key, (label, target) in targets.items():
        if key in ratios:
            value = f"{ratios[key]['median']:.3g} ({ratios[key]['min']:.3g}–{ratios[key]['max']:.3g})"
        else:
            value = f"{results[key]:.3g}"
        lines.append(f"| {label} | {value} | {target} |")
    lines += [
        f"| pca_spark_s / pca_sklearn_s on {results['pca']['rows']}x{results['pca']['dim']} | "
        f"{results['pca_spark_s']:.1f} s / {results['pca_sklearn_s']:.1f} s | — |",
        *[f"| cost, {name} ({sc['run_images']:,} images, {sc['core_nodes']} core node(s)), best spot |"
          f" {sc['best_spot']['usd']:.3f} USD / 100k on {sc['best_spot']['instance']} | — |"
          for name, sc in results["cost"]["scenarios"].items()],
        *[f"| cost, {name} of 12 MP phone photos, best spot | {sc['best_spot']['usd']:.3f} USD / 100k on"
          f" {sc['best_spot']['instance']} | — |" for name, sc in results["cost_phone_photos"]["scenarios"].items()],
        f"| alpha 0.35: ceiling / spark img/s | {results['alpha_0_35']['ceiling_img_s']:.1f} /"
        f" {results['alpha_0_35']['spark_img_s']:.1f} | — |",
        *pca_fit_lines(results),
    ]
    return "\n".join(lines)


def phone_rounds_note(results: dict) -> list[str]:
    """When the phone and peer figures come from their own run (--phone-only): its date, rounds and load."""
    run = results.get("phone_rounds")
    if not run:
        return []
    loads = ", ".join("/".join(f"{value:.1f}" for value in load) for load in run["load_average_by_round"])
    return ["", f"Phone-corpus and peer figures (`--phone-only`): {run['date']}, {run['rounds']} rounds, alpha"
                f" {run['alpha']}, small images = {Path(run['sample']).name}; load average (1/5/15 min) after each"
                f" round: {loads}."]


def pca_fit_lines(results: dict) -> list[str]:
    """Table rows of the PCA fit at each corpus size: seconds, peak RSS (GB), rows the fit sampled."""
    return [
        f"| pca fit on {int(rows):,} rows (fit sample {run['fit_rows']:,}) | {run['seconds']:.0f} s,"
        f" peak RSS {run['peak_rss_bytes'] / 2**30:.2f} GB | — |"
        for rows, run in sorted(results.get("pca_fit_runs", {}).items(), key=lambda item: int(item[0]))
    ]


def update_docs(results: dict) -> None:
    from scripts.doc_blocks import write_block

    write_block(PERFORMANCE_DOC, "bench", readme_table(results))

