"""Featurization benchmark: measures, side by side in one run, what the pipeline's speed and
cost claims rest on, and writes bench/results.json (+ its table in docs/performance.md with --update-docs).

    python -m bench.run_bench [--smoke] [--rounds 3] [--results bench/results.json] [--update-docs]

Every Spark measurement runs in a fresh process (clean JVM and Python workers), so wall times
and peak RSS are not polluted by earlier runs. The machine may be shared and noisy, so every
ratio is measured in --rounds rounds, each running the ceiling and the Spark runs it compares back
to back, and results.json gives its min/median/max over the rounds (`ratios`; the medians also at
the top level). Nothing here is asserted on: the test suite only runs --smoke to keep the harness
from rotting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from bench import peers, phone
from bench.bootstrap_install import KEY as BOOTSTRAP_KEY  # measured there, kept from the results file
from bench.ceiling import ceiling, engine_difference
from bench.cost_per_100k import cost_figures
from bench.int8 import int8_figures
from bench.machine_facts import local_jvm_options_in_use, machine, versions
from bench.pca_scaling import PCA_FIT_SIZES, PCA_FIT_SIZES_SMOKE, pca_fit_scaling, probe_pca_fit
from bench.results_table import readme_table, update_docs
from bench.rounds import measure_round, round_figures, spread
from bench.sample_images import BUNDLED_IMAGES, REPO_ROOT, sample_files
from bench.spark_probes import probe_featurize, probe_pca, probe_seed_method, run_probe
from bench.workload import cached_model, prepare
from local_spark.run_local import BUNDLED_WEIGHTS

SMOKE_INT8_PER_LABEL = 4  # 16 of the bundled images: 3 train + 1 test image per label


def bench(args: argparse.Namespace) -> dict:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    load = prepare(args, work)
    images_full = sum(1 for _ in load.full.rglob("*.jpg"))
    log = lambda message: print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)  # noqa: E731
    log("local Spark's class archive (built once, as make setup does)")
    results: dict = {"smoke": args.smoke, "date": dt.date.today().isoformat(), "alpha": args.alpha,
                     "images_1x": len(load.contents), "replicas": images_full // len(load.contents),
                     "images_full": images_full, "local_jvm_options": local_jvm_options_in_use()}

    log("ceiling by batch size")
    sweep = ceiling(load.artifacts[args.alpha], load.contents, [8, 32] if args.smoke else [8, 16, 32, 64])
    load.ceiling_batch_size = sweep["batch_size"]
    rounds = []
    for number in range(args.rounds):
        log(f"round {number + 1} of {args.rounds}")
        rounds.append(measure_round(load, log))
        (work / "rounds.json").write_text(json.dumps(rounds, indent=2) + "\n")  # progress of a long run
    results.update(round_figures(rounds))
    results["phone_corpus"] = phone.corpus_summary(load.phone, phone.SMOKE_SIZE if args.smoke else phone.PHONE_SIZE,
                                                   rounds[-1]["phone_runs"]["phone_ceiling"])
    results["median_bytes"] = phone.median_bytes(sorted(load.one_x.rglob("*.jpg")))  # the small images
    results["phone_median_bytes"] = phone.median_bytes(phone.corpus_files(load.phone))
    results["ceiling"] = {**sweep, "img_s_by_round": [r["ceiling_img_s"] for r in rounds]}

    log("engine difference")
    results["engine_max_abs_diff_rel"] = engine_difference(load.contents, work)
    log("int8 engine")  # its own side-by-side runs, min/median/max (bench/int8.py)
    results.update(int8_figures(Path(args.sample), work, runs=3 if args.smoke else 5, per_label=SMOKE_INT8_PER_LABEL if args.smoke else None))
    if args.skip_pca_fit:
        log("pca fit at growing corpus sizes: kept from the previous results (--skip-pca-fit)")
    else:
        log("pca fit at growing corpus sizes")
        results.update(pca_fit_scaling(work / "out-full" / "features", work, PCA_FIT_SIZES_SMOKE if args.smoke else PCA_FIT_SIZES))
    log("alpha 0.35")
    top_035 = ceiling(load.artifacts[0.35], load.contents, [load.ceiling_batch_size])
    run_035 = run_probe("featurize", images=load.full, output=work / "out-035", artifact=load.artifacts[0.35], batch_size=args.batch_size)
    results["alpha_0_35"] = {"ceiling_img_s": top_035["img_s"], "spark_img_s": run_035["images"] / run_035["seconds"]}

    results["machine"] = machine()
    results["versions"] = versions()
    return results


def pca_fit_only(args: argparse.Namespace) -> int:
    """Featurize the sample once (bundled 0.35 weights) and measure the PCA fit at every corpus size."""
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    artifact = cached_model(0.35, str(BUNDLED_WEIGHTS))
    source = work / "out-pca-source"
    run_probe("featurize", images=args.sample, output=source, artifact=artifact, batch_size=args.batch_size)
    figures = pca_fit_scaling(source / "features", work, PCA_FIT_SIZES_SMOKE if args.smoke else PCA_FIT_SIZES)
    path = Path(args.results)
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update(figures)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: figures[k] for k in ("pca_fit_seconds_by_rows", "pca_fit_peak_rss_by_rows")}, indent=2))
    return 0


def phone_only(args: argparse.Namespace) -> int:
    """Only the phone corpus and the peers (--rounds rounds: featurize on the sample, then
    phone.measure_phone_and_peers), merged into --results with the cost figures and the docs'
    table; the other figures of record stay as measured."""
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sources = sample_files(Path(args.sample), 6 if args.smoke else None)
    artifact = cached_model(args.alpha, "random")  # the machine's model cache: exported once per machine
    chosen = sources[:: max(1, len(sources) // args.phone_photos)][: args.phone_photos]
    size = phone.SMOKE_SIZE if args.smoke else phone.PHONE_SIZE
    log = lambda message: print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)  # noqa: E731
    log(f"phone corpus: {len(chosen)} photos x {len(phone.PHONE_FORMATS)} formats at {size[0]} x {size[1]}")
    corpus = phone.make_phone_corpus(work / f"phone-{len(chosen)}", chosen, size)
    rounds = []
    for number in range(args.rounds):
        log(f"round {number + 1} of {args.rounds}: featurize on the sample")
        one = run_probe("featurize", images=args.sample, output=work / "out-sample", artifact=artifact,
                        batch_size=args.batch_size)
        rounds.append(phone.measure_phone_and_peers(work, corpus, Path(args.sample), artifact, args.batch_size, one,
                                                    run_probe, log))
        rounds[-1]["small_img_s"] = one["images"] / one["seconds"]
        rounds[-1]["load_average"] = os.getloadavg()
    path = Path(args.results)
    results = json.loads(path.read_text()) if path.exists() else {}
    ratios = {key: spread([r["ratios"][key] for r in rounds]) for key in rounds[0]["ratios"]}
    results.setdefault("ratios", {}).update(ratios)
    results.update({key: figures["median"] for key, figures in ratios.items()})
    results["phone_figures"] = {key: spread([r[key] for r in rounds]) for key in (*phone.PHONE_FIGURES, "small_img_s")}
    results.update({key: results["phone_figures"][key]["median"] for key in phone.PHONE_FIGURES})
    results["phone_corpus"] = phone.corpus_summary(corpus, size, rounds[-1]["phone_runs"]["phone_ceiling"])
    results["median_bytes"] = phone.median_bytes([p for p in sorted(Path(args.sample).rglob("*")) if p.is_file()])
    results["phone_median_bytes"] = phone.median_bytes(phone.corpus_files(corpus))
    results["phone_runs"] = rounds[-1]["phone_runs"]
    results["phone_rounds"] = {"date": dt.date.today().isoformat(), "rounds": len(rounds), "sample": str(args.sample),
                               "load_average_by_round": [r["load_average"] for r in rounds], "alpha": args.alpha}
    if BOOTSTRAP_KEY in results and "machine" in results:
        results.update(cost_figures(results))
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps({key: results[key] for key in (*phone.PHONE_FIGURES, *ratios)}, indent=2))
    if args.update_docs and "rounds" in results:
        update_docs(results)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a handful of images: checks the harness, measures nothing useful")
    parser.add_argument("--sample", default=str(BUNDLED_IMAGES),
                        help="folder of <label>/<image> files to replicate (default: the 480 bundled test images)")
    parser.add_argument("--results", default=str(REPO_ROOT / "bench" / "results.json"))
    parser.add_argument("--workdir", default=str(REPO_ROOT / "bench" / "work"))
    parser.add_argument("--replicas", type=int, default=10, help="the full run uses this many copies of the sample")
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 alpha of the headline figures")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--phone-photos", type=int, default=24,
                        help="photos of the phone corpus, each in every format of bench/phone.py (smoke: 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of side-by-side runs; every ratio gets min/median/max over them (smoke: 1)")
    parser.add_argument("--skip-pca-fit", action="store_true",
                        help="keep the PCA fit scaling figures of --results instead of measuring them again")
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/performance.md")
    # probe mode (internal): one measurement in this fresh process, JSON on the last stdout line
    parser.add_argument("--phone-only", action="store_true",
                        help="only the phone corpus and the peers (--rounds rounds), merged into --results")
    parser.add_argument("--pca-fit-only", action="store_true",
                        help="only the PCA fit scaling figures (features of the bundled images), merged into --results")
    parser.add_argument("--probe", choices=("featurize", "seed_method", "pca", "pca_fit", "predict_batch_udf", "ray"),
                        help=argparse.SUPPRESS)
    for name in ("images", "manifest", "output", "artifact", "features"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        probe = {"featurize": probe_featurize, "seed_method": probe_seed_method, "pca": probe_pca,
                 "pca_fit": probe_pca_fit, "predict_batch_udf": peers.probe_predict_batch_udf,
                 "ray": peers.probe_ray}[args.probe]
        print(json.dumps(probe(args)))
        return 0
    if not Path(args.sample).is_dir():
        print(f"bench: error: --sample {args.sample} is not a folder of <label>/<image> files", file=sys.stderr)
        return 2
    if args.smoke and args.rounds == parser.get_default("rounds"):
        args.rounds = 1  # the harness's check: every figure once (bench.rounds.round_figures has its own test)
    if args.smoke and args.phone_photos == parser.get_default("phone_photos"):
        args.phone_photos = 1  # one photo in every format
    if args.pca_fit_only:
        return pca_fit_only(args)
    if args.phone_only:
        return phone_only(args)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    previous = json.loads(Path(args.results).read_text()) if Path(args.results).is_file() else {}
    if BOOTSTRAP_KEY not in previous:  # before the measurements: the cost figures need it
        print(f"bench: error: {args.results} has no {BOOTSTRAP_KEY} (the cost model's bootstrap time):"
              " run `python -m bench.bootstrap_install` first", file=sys.stderr)
        return 2
    results = bench(args)
    kept = [BOOTSTRAP_KEY]
    if args.skip_pca_fit:
        kept += ["pca_fit_seconds_by_rows", "pca_fit_peak_rss_by_rows", "pca_fit_runs"]
    results.update({key: previous[key] for key in kept if key in previous})
    results.update(cost_figures(results))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(readme_table(results))
    if args.update_docs:
        update_docs(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
