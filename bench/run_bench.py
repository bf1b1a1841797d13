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
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from bench import peers, phone
from bench.bootstrap_install import KEY as BOOTSTRAP_KEY  # measured there, kept from the results file
from bench.int8 import int8_figures
from fruits_emr.cost import cost_model, load_prices
from local_spark.run_local import BUNDLED_WEIGHTS
from model_export.model_cache import exported_model
from model_export.model_identity import ExportSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_IMAGES = REPO_ROOT / "tests" / "data" / "fruits-360"  # 480 real images; pass --images for more
PERFORMANCE_DOC = REPO_ROOT / "docs" / "performance.md"  # the table goes between its <!-- bench:start/end --> markers
PCA_FIT_SIZES = [20_000, 200_000, 1_000_000]  # feature rows in the corpus the pca job fits on
PCA_FIT_SIZES_SMOKE = [100, 1_000]


# ---------------------------------------------------------------- data

def sample_files(root: Path, per_label: int | None = None) -> list[Path]:
    """The images of root/<label>/, the first `per_label` of each label (sorted by name)."""
    files = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files += sorted(label_dir.iterdir())[:per_label]
    return files


def make_replicas(target: Path, sources: list[Path], copies: int) -> list[Path]:
    """`copies` replicas of the sample, each but the first with a small brightness change,
    re-encoded, so the images are all different files with realistic JPEG content."""
    from PIL import Image, ImageEnhance

    stamp = target / f".complete-{len(sources)}x{copies}"
    if not stamp.exists():
        shutil.rmtree(target, ignore_errors=True)
        for copy in range(copies):
            for source in sources:
                out = target / f"rep{copy:02d}" / source.parent.name / source.name
                out.parent.mkdir(parents=True, exist_ok=True)
                if copy == 0:
                    shutil.copy(source, out)
                else:
                    with Image.open(source) as image:
                        ImageEnhance.Brightness(image.convert("RGB")).enhance(1 + 0.01 * copy).save(out, quality=95)
        stamp.touch()
    return sorted(p for p in target.rglob("*.jpg"))


# ---------------------------------------------------------------- probes (fresh processes)

class PeakRss:
    """Samples the summed RSS of this process's descendants (the Spark JVM and its Python
    workers) every 0.2 s."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self.peak = 0
        self.peak_by_kind = {"jvm": 0, "python": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            by_kind = {"jvm": 0, "python": 0}
            for child in self._me.children(recursive=True):
                try:
                    kind = "jvm" if "java" in child.name() else "python"
                    by_kind[kind] += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, sum(by_kind.values()))
            for kind, value in by_kind.items():
                self.peak_by_kind[kind] = max(self.peak_by_kind[kind], value)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def probe_featurize(args: argparse.Namespace) -> dict:
    from local_spark.session import local_spark
    from spark_jobs import featurize

    spark = local_spark("local[2]", "2g")
    source = ["--manifest", args.manifest] if args.manifest else ["--images", args.images]
    job = featurize.build_parser().parse_args(
        [*source, "--output", args.output, "--model-artifact", args.artifact, "--batch-size", str(args.batch_size)]
    )
    with PeakRss() as rss:
        started = time.perf_counter()
        summary = featurize.run(spark, job)
        wall = time.perf_counter() - started
    spark.stop()
    return {"images": summary["images_seen"], "features_rows": summary["features_rows"], "seconds": wall,
            "peak_rss_bytes": rss.peak, "peak_rss_jvm_bytes": rss.peak_by_kind["jvm"],
            "peak_rss_python_workers_bytes": rss.peak_by_kind["python"], "partitions": summary["partitions"],
            "phase_seconds": summary["phase_seconds"]}


def probe_seed_method(args: argparse.Namespace) -> dict:
    """The seed notebook's featurization: Keras model built from broadcast weights in a
    scalar-iterator pandas UDF, `img_to_array` + `preprocess_input` per image, `model.predict`
    on every Arrow batch."""
    from pyspark.sql import functions as F

    from local_spark.session import local_spark
    from spark_jobs.cnn.backbones import ModelSpec, build_model

    spark = local_spark("local[2]", "2g")
    spec = ModelSpec(alpha=args.alpha, weights="random")
    backbone = build_model(spec).layers[-1]  # calibrated MobileNetV2, no preprocessing layer
    broadcast_weights = spark.sparkContext.broadcast(backbone.get_weights())
    alpha, size = args.alpha, 224

    def model_fn():
        from keras.applications import MobileNetV2

        model = MobileNetV2(weights=None, include_top=False, pooling="avg", alpha=alpha, input_shape=(size, size, 3))
        model.set_weights(broadcast_weights.value)
        return model

    def preprocess(content):
        from keras.applications.mobilenet_v2 import preprocess_input
        from keras.utils import img_to_array
        from PIL import Image

        image = Image.open(io.BytesIO(content)).resize([size, size])
        return preprocess_input(img_to_array(image))

    @F.pandas_udf("array<float>")
    def featurize_udf(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        model = model_fn()
        for contents in batches:
            arrays = np.stack([preprocess(c) for c in contents])
            preds = model.predict(arrays, verbose=0)
            yield pd.Series([p.flatten() for p in preds])

    images = spark.read.format("binaryFile").option("pathGlobFilter", "*.jpg").option("recursiveFileLookup", "true").load(args.images)
    started = time.perf_counter()
    count = images.count()
    images.repartition(8).select("path", featurize_udf("content").alias("features")).write.mode("overwrite").parquet(args.output)
    wall = time.perf_counter() - started
    spark.stop()
    return {"images": count, "seconds": wall}


def probe_pca(args: argparse.Namespace) -> dict:
    """The job's fit (Spark aggregates the covariance, numpy's eigh) against scikit-learn's PCA."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from local_spark.session import local_spark
    from spark_jobs.pca import fit_pca

    spark = local_spark("local[2]", "4g")
    features = spark.read.parquet(args.features).select("features").persist()
    rows = features.count()
    started = time.perf_counter()
    spectrum = np.asarray(fit_pca(spark, features, 0.95, None).info["explained_variance"])
    spark_seconds = time.perf_counter() - started
    matrix = np.stack(features.toPandas().features).astype(np.float64)
    spark.stop()
    started = time.perf_counter()
    sk = PCA(svd_solver="full").fit(StandardScaler().fit_transform(matrix))
    sklearn_seconds = time.perf_counter() - started
    agree = float(np.abs(sk.explained_variance_ratio_ - spectrum[: len(sk.explained_variance_ratio_)]).max())
    return {"rows": rows, "dim": int(matrix.shape[1]), "spark_seconds": spark_seconds,
            "sklearn_seconds": sklearn_seconds, "spectrum_max_abs_diff": agree}


def make_fit_rows(source: Path, target: Path, rows: int, chunk: int = 20_000) -> Path:
    """`rows` feature rows drawn around real ones (a random real row + Gaussian noise of 5 % of each
    feature's spread), written as Parquet files of `chunk` rows; reused when already complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamp = target / f".complete-{rows}"
    if stamp.exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    real = np.stack(pq.read_table(source, columns=["features"]).column("features").to_numpy(zero_copy_only=False))
    real = real.astype(np.float32)
    noise = 0.05 * real.std(axis=0) + 1e-6
    rng = np.random.default_rng(11)
    for first in range(0, rows, chunk):
        n = min(chunk, rows - first)
        drawn = real[rng.integers(0, len(real), n)] + rng.normal(size=(n, real.shape[1])).astype(np.float32) * noise
        offsets = pa.array(np.arange(0, (n + 1) * real.shape[1], real.shape[1], dtype=np.int32))
        column = pa.ListArray.from_arrays(offsets, pa.array(drawn.astype(np.float32).ravel()))
        table = pa.table({"path": [f"synthetic/{first + i}.jpg" for i in range(n)], "label": ["synthetic"] * n,
                          "features": column})
        pq.write_table(table, target / f"part-{first // chunk:05d}.parquet")
    stamp.touch()
    return target


def probe_pca_fit(args: argparse.Namespace) -> dict:
    """The pca job's fit path on a features dataset: count, bounded sample, moments, eigh."""
    from local_spark.session import local_spark
    from spark_jobs import pca

    spark = local_spark("local[2]", "4g")
    with PeakRss() as rss:
        started = time.perf_counter()
        features = pca.read_features(spark, [args.features])
        rows = features.count()
        model = pca.fit_pca(spark, pca.fit_sample(features, rows, pca.MAX_FIT_ROWS), 0.95, None)
        wall = time.perf_counter() - started
    spark.stop()
    return {"rows": rows, "fit_rows": model.info["fit_rows"], "k": model.k, "seconds": wall,
            "peak_rss_bytes": rss.peak, "peak_rss_jvm_bytes": rss.peak_by_kind["jvm"],
            "peak_rss_python_workers_bytes": rss.peak_by_kind["python"]}


def pca_fit_scaling(source: Path, work: Path, sizes: list[int]) -> dict:
    """pca_fit_seconds_by_rows and pca_fit_peak_rss_by_rows: one fresh process per corpus size."""
    runs = {}
    for rows in sizes:
        runs[str(rows)] = run_probe("pca_fit", features=make_fit_rows(source, work / f"fit-rows-{rows}", rows))
    return {"pca_fit_seconds_by_rows": {rows: run["seconds"] for rows, run in runs.items()},
            "pca_fit_peak_rss_by_rows": {rows: run["peak_rss_bytes"] for rows, run in runs.items()},
            "pca_fit_runs": runs}


def run_probe(kind: str, **options) -> dict:
    """Run one probe in a fresh Python process and return its JSON result."""
    argv = [sys.executable, "-m", "bench.run_bench", "--probe", kind]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"probe {kind} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- in-process measurements

def decode_all(contents: list[bytes], size: int) -> np.ndarray:
    from spark_jobs.featurization.image_decode import decode_image

    return np.stack([decode_image(c, size).pixels for c in contents]).astype(np.float32)


def ceiling(artifact: Path, contents: list[bytes], batch_sizes: list[int]) -> dict:
    """Single process, ONNX Runtime with every core, decode + preprocessing + inference from
    in-memory bytes; the best batch size."""
    import onnxruntime as ort

    from spark_jobs.featurization.image_decode import decode_image

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: decode_all(contents[:8], 224)})
    by_batch = {}
    for batch in batch_sizes:
        started = time.perf_counter()
        for start in range(0, len(contents), batch):
            pixels = np.stack([decode_image(c, 224).pixels for c in contents[start : start + batch]]).astype(np.float32)
            session.run(None, {name: pixels})
        by_batch[batch] = len(contents) / (time.perf_counter() - started)
    best = max(by_batch, key=by_batch.get)
    return {"img_s": by_batch[best], "batch_size": best, "by_batch_size": {str(k): round(v, 1) for k, v in by_batch.items()},
            "threads": options.intra_op_num_threads}


def engine_difference(contents: list[bytes], workdir: Path) -> float:
    """max |onnx - tf| / max |tf| over the sample, real ImageNet weights (alpha 0.35)."""
    import onnxruntime as ort

    from spark_jobs.cnn.backbones import ModelSpec, build_model

    spec = ModelSpec(alpha=0.35, weights=str(BUNDLED_WEIGHTS))
    artifact = cached_model(0.35, str(BUNDLED_WEIGHTS))
    model = build_model(spec)
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    worst, scale = 0.0, 0.0
    for start in range(0, len(contents), 64):
        pixels = decode_all(contents[start : start + 64], 224)
        reference = np.asarray(model(pixels, training=False))
        worst = max(worst, float(np.abs(session.run(None, {name: pixels})[0] - reference).max()))
        scale = max(scale, float(np.abs(reference).max()))
    return worst / scale


# ---------------------------------------------------------------- cost

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


# ---------------------------------------------------------------- report

def versions() -> dict:
    names = ("pyspark", "onnxruntime", "tensorflow-cpu", "keras", "numpy", "pandas", "pyarrow", "pillow")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    found["java"] = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return found


def local_jvm_options_in_use() -> str:
    """The JVM options every local Spark of the bench runs with, its class archive built first."""
    from local_spark.class_archive import ensure_archive
    from local_spark.jvm_options import local_jvm_options

    ensure_archive()
    return local_jvm_options()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


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


# ---------------------------------------------------------------- rounds (side by side)

@dataclass
class Workload:
    """What every round measures on: the sample, its replicas, the 5 % manifest, the ONNX models."""

    work: Path
    contents: list[bytes]  # the 1x sample's bytes (the ceiling decodes these from memory)
    one_x: Path
    full: Path
    manifest: Path
    artifacts: dict[float, Path]
    alpha: float
    batch_size: int
    phone: Path  # the phone-size corpus (bench/phone.py): <label>/<photo>.<extension>
    ceiling_batch_size: int = 32


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


def cached_model(alpha: float, weights: str, engine: str = "onnxruntime") -> Path:
    """MobileNetV2 at 224 px from the machine's model cache (exported once per machine)."""
    return exported_model(ExportSettings(model="mobilenet_v2", alpha=alpha, image_size=224, weights=weights,
                                         engine=engine))


def prepare(args: argparse.Namespace, work: Path) -> Workload:
    sources = sample_files(Path(args.sample), 6 if args.smoke else None)
    full = make_replicas(work / f"replicas-{len(sources)}", sources, 2 if args.smoke else args.replicas)
    manifest = work / "manifest-5pct.txt"
    chosen = random.Random(7).sample(full, max(1, round(0.05 * len(full))))
    manifest.write_text("\n".join(map(str, chosen)) + "\n")
    artifacts = {}
    for alpha, weights in ((args.alpha, "random"), (0.35, str(BUNDLED_WEIGHTS))):
        artifacts[alpha] = cached_model(alpha, weights)
    # phone photos from sources spread over the labels (every k-th, sorted by label then name)
    chosen = sources[:: max(1, len(sources) // args.phone_photos)][: args.phone_photos]
    size = phone.SMOKE_SIZE if args.smoke else phone.PHONE_SIZE
    phone_root = phone.make_phone_corpus(work / f"phone-{len(chosen)}", chosen, size)
    return Workload(work, [p.read_bytes() for p in sources], work / f"replicas-{len(sources)}" / "rep00",
                    work / f"replicas-{len(sources)}", manifest, artifacts, args.alpha, args.batch_size, phone_root)


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
    last = rounds[-1]
    results["rounds"] = rounds
    results["ratios"] = {key: spread([r["ratios"][key] for r in rounds]) for key in rounds[0]["ratios"]}
    for key, figures in results["ratios"].items():  # the medians, top level, for the docs' tables
        results[key] = figures["median"]
    results["incremental_ratio"] = results["incremental_over_full"]  # its name before rounds
    for key in ("ceiling_img_s", "spark_img_s", "seed_method_img_s", *phone.PHONE_FIGURES):
        results[key] = spread([r[key] for r in rounds])["median"]
    results["phone_figures"] = {key: spread([r[key] for r in rounds]) for key in phone.PHONE_FIGURES}
    results["phone_corpus"] = phone.corpus_summary(load.phone, phone.SMOKE_SIZE if args.smoke else phone.PHONE_SIZE,
                                                   last["phone_runs"]["phone_ceiling"])
    results["median_bytes"] = phone.median_bytes(sorted(load.one_x.rglob("*.jpg")))  # the small images
    results["phone_median_bytes"] = phone.median_bytes(phone.corpus_files(load.phone))
    results["phone_runs"] = last["phone_runs"]
    results["ceiling"] = {**sweep, "img_s_by_round": [r["ceiling_img_s"] for r in rounds]}
    results.update({key: last[key] for key in ("featurize_full", "featurize_1x", "featurize_incremental", "seed_method", "pca")})
    results["pca_spark_s"] = spread([r["pca"]["spark_seconds"] for r in rounds])["median"]
    results["pca_sklearn_s"] = spread([r["pca"]["sklearn_seconds"] for r in rounds])["median"]

    log("engine difference")
    results["engine_max_abs_diff_rel"] = engine_difference(load.contents, work)
    log("int8 engine")  # its own side-by-side runs, min/median/max (bench/int8.py)
    results.update(int8_figures(Path(args.sample), work, runs=3 if args.smoke else 5, per_label=6 if args.smoke else None))
    if args.skip_pca_fit:
        log("pca fit at growing corpus sizes: kept from the previous results (--skip-pca-fit)")
    else:
        log("pca fit at growing corpus sizes")
        results.update(pca_fit_scaling(work / "out-full" / "features", work, PCA_FIT_SIZES_SMOKE if args.smoke else PCA_FIT_SIZES))
    log("alpha 0.35")
    top_035 = ceiling(load.artifacts[0.35], load.contents, [load.ceiling_batch_size])
    run_035 = run_probe("featurize", images=load.full, output=work / "out-035", artifact=load.artifacts[0.35], batch_size=args.batch_size)
    results["alpha_0_35"] = {"ceiling_img_s": top_035["img_s"], "spark_img_s": run_035["images"] / run_035["seconds"]}

    results["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}
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
    from model_export.export_model import export_onnx
    from spark_jobs.cnn.backbones import ModelSpec

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sources = sample_files(Path(args.sample), 6 if args.smoke else None)
    artifact = work / f"model-a{args.alpha}.onnx"
    export_onnx(ModelSpec(alpha=args.alpha, weights="random"), artifact)
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
                        help="photos of the phone corpus, each in every format of bench/phone.py (smoke: 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of side-by-side runs; every ratio gets min/median/max over them (smoke: 2)")
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
    if args.pca_fit_only:
        return pca_fit_only(args)
    if args.phone_only:
        if args.smoke and args.phone_photos == parser.get_default("phone_photos"):
            args.phone_photos = 2
        return phone_only(args)
    if args.smoke and args.rounds == parser.get_default("rounds"):
        args.rounds = 2
    if args.smoke and args.phone_photos == parser.get_default("phone_photos"):
        args.phone_photos = 2
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
