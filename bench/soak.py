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
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from bench.run_bench import (
    BUNDLED_IMAGES,
    REPO_ROOT,
    PeakRss,
    cpu_model,
    make_replicas,
    sample_files,
    versions,
)
from local_spark.run_local import BUNDLED_WEIGHTS

PERFORMANCE_DOC = REPO_ROOT / "docs" / "performance.md"  # the section goes between its <!-- soak:start/end --> markers
RSS_INTERVAL_SECONDS = 0.25
SERIES_BINS = 40  # soak.json keeps the RSS time series as the max over this many equal bins
DEFAULT_MAX_RSS_RATIO = 1.5
KINDS = ("driver", "jvm", "python_workers")
KIND_NAMES = {"driver": "driver", "jvm": "JVM", "python_workers": "Python workers"}
GIB = 2**30


class SoakError(RuntimeError):
    """A run that failed or cannot be checked; the message says which and where its log is."""


# ---------------------------------------------------------------- inputs

def broken_files(sources: list[Path]) -> dict[str, tuple[bytes, str]]:
    """<label>/<file name> -> (bytes, start of the quarantine reason the pipeline must give),
    made from the first real photo of each label. The .txt file is no photo by name: the pipeline
    must not read it, and must list it as ignored (reason "")."""
    first: dict[str, Path] = {}
    for source in sources:
        first.setdefault(source.parent.name, source)
    labels = sorted(first)
    photo = lambda i: first[labels[i % len(labels)]].read_bytes()  # noqa: E731
    label = lambda i: labels[i % len(labels)]  # noqa: E731
    return {
        f"{label(0)}/truncated_half.jpg": (photo(0)[: len(photo(0)) // 2], "truncated image"),
        f"{label(1)}/truncated_quarter.jpg": (photo(1)[: len(photo(1)) // 4], "truncated image"),
        f"{label(2)}/truncated_nine_tenths.jpg": (photo(2)[: len(photo(2)) * 9 // 10], "truncated image"),
        f"{label(2)}/zero_bytes.jpg": (b"", "empty file (0 bytes)"),
        f"{label(3)}/not_an_image.jpg": (b"a shopping list, not a photo\n" * 40, "not a JPEG, PNG, WebP"),
        f"{label(3)}/notes.txt": (b"not a photo: ignored, listed in the report\n", ""),
    }


def plant_broken_files(target: Path, sources: list[Path]) -> dict[Path, str]:
    """Write the broken files under target; return image path -> expected quarantine reason."""
    shutil.rmtree(target, ignore_errors=True)
    planted = {}
    for name, (content, reason) in broken_files(sources).items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        if reason:
            planted[path.resolve()] = reason
    return planted


def undecodable(sources: list[Path]) -> list[str]:
    """Sample images the pipeline's own decoder rejects (the soak assumes there are none)."""
    from spark_jobs.featurization.image_decode import QuarantineError, decode_image

    rejected = []
    for source in sources:
        try:
            decode_image(source.read_bytes(), 224)
        except QuarantineError as exc:
            rejected.append(f"{source}: {exc}")
    return rejected


def prepare_inputs(root: Path, sources: list[Path], copies: int) -> tuple[Path, int, dict[Path, str]]:
    """root/replicas (perturbed copies of the sample) + root/broken; returns the image root,
    the number of good images and the planted broken files."""
    good = make_replicas(root / "replicas", sources, copies)
    if len(good) != copies * len(sources):
        raise SoakError(f"{root / 'replicas'} holds {len(good)} images, expected {copies * len(sources)}; delete it and rerun")
    planted = plant_broken_files(root / "broken", sources)
    return root, len(good), planted


# ---------------------------------------------------------------- memory

class RssSeries(PeakRss):
    """PeakRss that keeps the time series, split into the run's driver process, the Spark JVM
    and its Python workers, and the machine's load average while it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.peak_by_kind = dict.fromkeys(KINDS, 0)
        self.samples: list[tuple[float, int, int, int]] = []  # (seconds, *KINDS)
        self.load: list[float] = []

    def _run(self) -> None:
        import psutil

        started = time.monotonic()
        while not self._stop.is_set():
            by_kind = dict.fromkeys(KINDS, 0)
            for child in self._me.children(recursive=True):
                try:
                    if "java" in child.name():
                        kind = "jvm"
                    elif child.ppid() == self._me.pid:
                        kind = "driver"
                    else:
                        kind = "python_workers"
                    by_kind[kind] += child.memory_info().rss
                except psutil.Error:
                    pass
            self.samples.append((time.monotonic() - started, *by_kind.values()))
            self.peak = max(self.peak, sum(by_kind.values()))
            for kind, value in by_kind.items():
                self.peak_by_kind[kind] = max(self.peak_by_kind[kind], value)
            self.load.append(os.getloadavg()[0])
            self._stop.wait(RSS_INTERVAL_SECONDS)


def binned_peaks(samples: list[tuple[float, int, int, int]], seconds: float, bins: int) -> list[int]:
    """Max total RSS in each of `bins` equal slices of the run (0 where a slice has no sample)."""
    peaks = [0] * bins
    for at, *by_kind in samples:
        index = min(bins - 1, int(at / seconds * bins)) if seconds > 0 else 0
        peaks[index] = max(peaks[index], sum(by_kind))
    return peaks


# ---------------------------------------------------------------- one run

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


def parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in folder.glob("part-*.parquet"))


def quarantined_paths(folder: Path) -> dict[Path, str]:
    import pyarrow.parquet as pq

    table = pq.read_table(folder, columns=["path", "reason"]).to_pylist()
    return {Path(urlparse(row["path"]).path): row["reason"] for row in table}


def reconcile(report: dict, output: Path, expected_images: int, good: int, planted: dict[Path, str]) -> list[str]:
    """Every way the run's counts can disagree with what was planted, as readable problems."""
    problems = []
    seen, rows, quarantined = report["images_seen"], report["features_rows"], report["quarantined"]
    if seen != expected_images:
        problems.append(f"images_seen {seen} != {expected_images} expected ({good} replicas + {len(planted)} broken)")
    if rows + quarantined != seen:
        problems.append(f"features_rows {rows} + quarantined {quarantined} != images_seen {seen}")
    if rows != good:
        problems.append(f"features_rows {rows} != {good} good images")
    if quarantined != len(planted):
        problems.append(f"quarantined {quarantined} != {len(planted)} planted broken files")
    # the planted notes.txt is ignored and listed (so is the replicas' own .complete stamp file)
    ignored = [Path(urlparse(uri).path).name for uri in report.get("ignored_files", [])]
    if "notes.txt" not in ignored or report.get("files_seen") != seen + len(ignored) or any(
            name.lower().endswith((".jpg", ".jpeg", ".png")) for name in ignored):
        problems.append(f"ignored {ignored} (files_seen {report.get('files_seen')}), expected the planted notes.txt")
    written = parquet_rows(output / "features")
    if written != rows:
        problems.append(f"features Parquet holds {written} rows, report says {rows}")
    reduced = parquet_rows(output / "pca")
    if reduced != rows or report.get("pca_rows") != rows:
        problems.append(f"pca Parquet holds {reduced} rows (report pca_rows {report.get('pca_rows')}), expected {rows}")
    found = quarantined_paths(output / "quarantine")
    if set(found) != set(planted):
        unexpected = sorted(map(str, set(found) - set(planted)))[:5]
        missed = sorted(map(str, set(planted) - set(found)))[:5]
        problems.append(f"quarantine differs from the planted files: unexpected {unexpected}, missed {missed}")
    for path, reason in planted.items():
        if path in found and not found[path].startswith(reason):
            problems.append(f"{path} quarantined as {found[path]!r}, expected {reason!r}")
    return problems


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
    results["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(),
                          "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1)}
    results["versions"] = versions()
    return results


# ---------------------------------------------------------------- report

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
