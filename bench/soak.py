"""Scale/soak run: the whole local pipeline (featurize + PCA) on 10x the sample with broken
files planted among the replicas; checks that every count reconciles and that memory stays
bounded, and writes bench/soak.json (+ its section in docs/performance.md with --update-docs).

    python -m bench.soak [--replicas 10] [--smoke] [--results bench/soak.json] [--update-docs]

Each run is `python -m local_spark.run_local` in a child process, exactly as a user runs it; the
RSS of its whole process tree (driver, Spark JVM, Python workers) is sampled while it runs.
A 1x run of the same pipeline comes first as the memory baseline. "Bounded" means the 10x
run's peak RSS stays within --max-rss-ratio of the 1x run's. Exits 1 when a run fails, a count
does not reconcile or memory is not bounded. A script to run by hand (`make soak`), not a CI
test: the suite only runs --smoke, and nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.machine_facts import machine, versions
from bench.sample_images import BUNDLED_IMAGES, REPO_ROOT, sample_files
from bench.soak_checks import reconcile
from bench.soak_inputs import SoakError, prepare_inputs, undecodable
from bench.soak_memory import KINDS, SERIES_BINS, RssSeries, binned_peaks
from bench.soak_report import GIB, docs_section, update_docs
from local_spark.run_local import BUNDLED_WEIGHTS

DEFAULT_MAX_RSS_RATIO = 1.5


def run_pipeline(images: Path, output: Path, weights: str, alpha: float, log_path: Path) -> dict:
    """run_local on `images` in a child process, its process tree's RSS sampled throughout."""
    shutil.rmtree(output, ignore_errors=True)
    argv = [sys.executable, "-m", "local_spark.run_local", "--images", str(images), "--output", str(output),
            "--weights", weights, "--alpha", str(alpha)]
    with log_path.open("w") as log, RssSeries() as rss:
        started = time.monotonic()
        child = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        returncode = child.wait()
        seconds = time.monotonic() - started
    if returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise SoakError(f"the run on {images} failed (exit {returncode}); full log {log_path}, last lines:\n{tail}")
    report_path = output / "report.json"
    if not report_path.is_file():
        raise SoakError(f"the run on {images} exited 0 but wrote no {report_path}; log {log_path}")
    return {"seconds": seconds, "report": json.loads(report_path.read_text()), "rss": rss, "argv": argv[1:]}


def run_figures(run: dict, expected_images: int, planted: dict[Path, str]) -> dict:
    report, rss, seconds = run["report"], run["rss"], run["seconds"]
    return {
        "images_expected": expected_images,
        "broken_planted": len(planted),
        "images_seen": report["images_seen"],
        "features_rows": report["features_rows"],
        "quarantined": report["quarantined"],
        "quarantine_reasons": report["quarantine_reasons"],
        "pca_rows": report["pca_rows"],
        "k": report["k"],
        "variance_reached": report["variance_reached"],
        "model": report["model"],
        "partitions": report["partitions"],
        "seconds": round(seconds, 2),
        "featurize_seconds": report["featurize_seconds"],
        "pca_seconds": report["pca_seconds"],
        "phase_seconds": report["phase_seconds"],
        "img_s": report["images_seen"] / seconds,
        "featurize_img_s": report["images_seen"] / report["featurize_seconds"],
        "peak_rss_bytes": rss.peak,
        "peak_rss_by_kind_bytes": rss.peak_by_kind,
        "peak_rss_by_quarter_bytes": binned_peaks(rss.samples, seconds, 4),
        "rss_series_bytes": {"bins": SERIES_BINS, "seconds_per_bin": round(seconds / SERIES_BINS, 2),
                             "max_total": binned_peaks(rss.samples, seconds, SERIES_BINS)},
        "rss_samples": len(rss.samples),
        "load_average_mean": round(sum(rss.load) / max(1, len(rss.load)), 2),
        "load_average_max": round(max(rss.load, default=0.0), 2),
        "command": "python " + " ".join(run["argv"]),
    }


# ---------------------------------------------------------------- the soak

def local_master() -> str:
    """The Spark master run_local uses by default (the soak runs it with its defaults)."""
    from local_spark.run_local import build_parser

    return build_parser().get_default("master")


def soak(args: argparse.Namespace) -> dict:
    log = lambda message: print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)  # noqa: E731
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sources = sample_files(Path(args.sample), 3 if args.smoke else None)
    replicas = 2 if args.smoke else args.replicas
    rejected = undecodable(sources)
    if rejected:
        raise SoakError(f"{len(rejected)} sample images do not decode, so the expected counts would be wrong: {rejected[:3]}")
    plan = [("full", replicas)] if args.skip_baseline or args.smoke else [("1x", 1), ("full", replicas)]
    results: dict = {"smoke": args.smoke, "date": dt.date.today().isoformat(), "alpha": args.alpha,
                     "weights": args.weights, "sample_images": len(sources), "sample_undecodable": 0,
                     "replicas": replicas, "master": local_master(), "note": args.note, "max_rss_ratio": args.max_rss_ratio, "runs": {}}
    problems: list[str] = []
    for name, copies in plan:
        log(f"{name}: preparing {copies} x {len(sources)} images")
        images, good, planted = prepare_inputs(work / f"images-{len(sources)}x{copies}", sources, copies)
        expected = good + len(planted)
        log(f"{name}: run_local on {expected} images ({len(planted)} broken)")
        run = run_pipeline(images, work / f"out-{name}", args.weights, args.alpha, work / f"run-{name}.log")
        figures = run_figures(run, expected, planted)
        found = reconcile(run["report"], work / f"out-{name}", expected, good, planted)
        figures["reconciled"] = not found
        problems += [f"{name} run: {problem}" for problem in found]
        results["runs"][name] = figures
        log(f"{name}: {figures['images_seen']} seen, {figures['features_rows']} featurized, "
            f"{figures['quarantined']} quarantined, {figures['seconds']:.0f} s, peak RSS {figures['peak_rss_bytes'] / GIB:.2f} GB")
    full = results["runs"]["full"]
    if "1x" in results["runs"]:
        base = results["runs"]["1x"]
        ratio = full["peak_rss_bytes"] / base["peak_rss_bytes"]
        results["rss_ratio"] = ratio
        results["rss_ratio_by_kind"] = {kind: full["peak_rss_by_kind_bytes"][kind] / base["peak_rss_by_kind_bytes"][kind]
                                        for kind in KINDS if base["peak_rss_by_kind_bytes"][kind]}
        results["memory_bounded"] = ratio <= args.max_rss_ratio
        if not results["memory_bounded"]:
            problems.append(f"memory not bounded: peak RSS {ratio:.2f}x the 1x run's (limit {args.max_rss_ratio})")
    else:
        results["rss_ratio"], results["rss_ratio_by_kind"], results["memory_bounded"] = None, {}, None
    results["problems"] = problems
    results["passed"] = not problems
    results["machine"] = machine()
    results["versions"] = versions()
    return results



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", default=str(BUNDLED_IMAGES),
                        help="folder of <label>/<image> files to replicate (default: the 480 bundled test images)")
    parser.add_argument("--replicas", type=int, default=10, help="the soak runs on this many perturbed copies of the sample")
    parser.add_argument("--smoke", action="store_true", help="12 images x 2 replicas, no baseline: checks the harness only")
    parser.add_argument("--skip-baseline", action="store_true", help="no 1x run (and so no memory ratio)")
    parser.add_argument("--weights", default=str(BUNDLED_WEIGHTS), help="weights passed to run_local (default: the bundled ImageNet file)")
    parser.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 alpha; must match --weights")
    parser.add_argument("--max-rss-ratio", type=float, default=DEFAULT_MAX_RSS_RATIO,
                        help="fail when the full run's peak RSS exceeds this multiple of the 1x run's")
    parser.add_argument("--note", default="", help="a sentence added to the docs paragraph (e.g. what else ran)")
    parser.add_argument("--results", default=str(REPO_ROOT / "bench" / "soak.json"))
    parser.add_argument("--workdir", default=str(REPO_ROOT / "bench" / "work" / "soak"))
    parser.add_argument("--update-docs", action="store_true", help="write the section into docs/performance.md")
    args = parser.parse_args(argv)
    if not Path(args.sample).is_dir():
        print(f"soak: error: --sample {args.sample} is not a folder of <label>/<image> files", file=sys.stderr)
        return 2
    if args.replicas < 1 or args.max_rss_ratio <= 0:
        print("soak: error: --replicas must be at least 1 and --max-rss-ratio positive", file=sys.stderr)
        return 2
    try:
        results = soak(args)
    except SoakError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 1
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(docs_section(results))
    if args.update_docs:
        update_docs(results)
    if not results["passed"]:
        print("soak: error: " + "; ".join(results["problems"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
