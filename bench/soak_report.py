"""The soak's section (markdown) for the console and docs/performance.md (between its
<!-- soak:start/end --> markers)."""

from __future__ import annotations

from bench.sample_images import REPO_ROOT
from bench.soak_memory import KINDS

PERFORMANCE_DOC = REPO_ROOT / "docs" / "performance.md"
KIND_NAMES = {"driver": "driver", "jvm": "JVM", "python_workers": "Python workers"}
GIB = 2**30


def gb(value: int) -> str:
    return f"{value / GIB:.2f}"


def docs_section(results: dict) -> str:
    runs = results["runs"]
    names = [name for name in ("1x", "full") if name in runs]
    heads = {"1x": "1× (baseline)", "full": f"{results['replicas']}×"}

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(runs[name]) for name in names) + " |"

    reasons = lambda r: ", ".join(f"{n} {kind}" for kind, n in sorted(r["quarantine_reasons"].items()))  # noqa: E731
    full, machine, v = runs["full"], results["machine"], results["versions"]
    lines = [
        "`make soak` (`python -m bench.soak`; not part of `make test`, which runs only its `--smoke`) runs"
        " `local_spark.run_local` (featurize + PCA) in a child process on 1× and then on"
        f" {results['replicas']}× the sample with broken files planted among the replicas, checks every count"
        " against what it planted, samples the RSS of the whole process tree, and writes `bench/soak.json`.",
        "",
        f"Measured {results['date']} on {machine['cpu']} ({machine['cores']} cores, {machine['memory_gb']} GB),"
        f" pyspark {v['pyspark']}, onnxruntime {v['onnxruntime']}, Python {v['python']}, {v['java']};"
        f" MobileNetV2 α {results['alpha']} at 224 with the bundled ImageNet weights, `{results['master']}`"
        f"{' — SMOKE RUN' if results['smoke'] else ''}.",
        "",
        "| figure | " + " | ".join(heads[name] for name in names) + " |",
        "| --- |" + " --- |" * len(names),
        row("images seen (expected)", lambda r: f"{r['images_seen']:,} ({r['images_expected']:,})"),
        row("featurized + quarantined", lambda r: f"{r['features_rows']:,} + {r['quarantined']}"),
        row("quarantine reasons", reasons),
        row("counts reconciled", lambda r: "yes" if r["reconciled"] else "**NO**"),
        row("PCA rows, k (variance reached)", lambda r: f"{r['pca_rows']:,}, {r['k']} ({r['variance_reached']:.3f})"),
        row("wall time: whole run (featurize / pca)",
            lambda r: f"{r['seconds']:.0f} s ({r['featurize_seconds']:.0f} / {r['pca_seconds']:.0f} s)"),
        row("img/s: whole run / featurize job", lambda r: f"{r['img_s']:.0f} / {r['featurize_img_s']:.0f}"),
        row("peak RSS, GB: total (driver / JVM / Python workers)",
            lambda r: f"{gb(r['peak_rss_bytes'])} ({' / '.join(gb(r['peak_rss_by_kind_bytes'][k]) for k in KINDS)})"),
        row("peak RSS per quarter of the run, GB", lambda r: " / ".join(gb(q) for q in r["peak_rss_by_quarter_bytes"])),
        row("load average while running (mean / max)", lambda r: f"{r['load_average_mean']:.1f} / {r['load_average_max']:.1f}"),
    ]
    if results["rss_ratio"] is not None:
        by_kind = ", ".join(f"{KIND_NAMES[kind]} {value:.2f}" for kind, value in results["rss_ratio_by_kind"].items())
        verdict = "bounded" if results["memory_bounded"] else "**NOT bounded**"
        lines.append(f"| peak RSS {heads['full']} ÷ 1× | | {results['rss_ratio']:.2f} ({by_kind}); {verdict}"
                     f" (limit {results['max_rss_ratio']}) |")
    quarters = full["peak_rss_by_quarter_bytes"]
    paragraph = (
        f"The {heads['full']} run read {full['images_seen']:,} files: {results['replicas']} brightness-perturbed"
        f" replicas of the {results['sample_images']:,}-image sample (which all decode) plus {full['broken_planted']}"
        " planted broken files (truncated JPEGs, a zero-byte file, text named .jpg), and a planted `.txt` that"
        " must be ignored (never read) and listed by name. "
    )
    if full["reconciled"]:
        paragraph += ("Exactly the planted files were quarantined, with the expected reasons, and the features,"
                      " quarantine and PCA outputs reconcile with the input.")
    else:
        paragraph += "The counts do NOT reconcile (problems below)."
    if results["rss_ratio"] is not None:
        by_kind = results["rss_ratio_by_kind"]
        grew = max(by_kind, key=by_kind.get)
        others = ", ".join(f"{KIND_NAMES[kind]} {value:.2f}×" for kind, value in by_kind.items() if kind != grew)
        heap = ", using more of its fixed heap" if grew == "jvm" else ""
        late, early = quarters[3], max(quarters[:3])
        paragraph += (
            f" Peak RSS was {results['rss_ratio']:.2f}× the 1× run's for {results['replicas']}× the images"
            f" ({'within' if results['memory_bounded'] else 'ABOVE'} the {results['max_rss_ratio']}× limit):"
            f" the {KIND_NAMES[grew]} grew most ({by_kind[grew]:.2f}×{heap}), {others}. Within the {heads['full']} run"
            f" the last quarter peaked at {gb(late)} GB against {gb(early)} GB before"
            + (": no growth as more images went through" if late <= early else "")
            + " (RSS double-counts pages the forked Python workers share)."
        )
    paragraph += (
        f" Wall times and img/s are noisy: the load average during the {heads['full']} run averaged"
        f" {full['load_average_mean']:.1f} on {machine['cores']} cores, where this pipeline alone accounts for about 2."
    )
    if results["note"]:
        paragraph += " " + results["note"]
    if results["problems"]:
        paragraph += " Problems: " + "; ".join(results["problems"]) + "."
    return "\n".join([*lines, "", paragraph])


def update_docs(results: dict) -> None:
    from scripts.doc_blocks import write_block

    write_block(PERFORMANCE_DOC, "soak", docs_section(results))

