"""The int8 engine against fp32 ONNX Runtime, side by side on the same decoded images:
speed (same threads, alternating passes), per-image cosine of the features, and the accuracy of
a nearest-centroid probe on the labelled bundled images.

    python -m bench.int8 [--runs 5] [--results bench/results.json]   (merges its keys into --results)

Model: MobileNetV2 alpha 0.35 at 224 with the bundled ImageNet weights, exported fp32 and int8
(calibrated on data/sample, model_export.quantize). Speed: inference only on decoded images, one
thread per session, as a featurize task runs it (one core per task); each run times an fp32 pass
then an int8 pass over the same images. Probe split: in each label folder, sorted by file name,
every 4th image (index 0, 4, 8, ...) is a test image, the others train the centroids.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from local_spark.run_local import BUNDLED_WEIGHTS

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_IMAGES = REPO_ROOT / "tests" / "data" / "fruits-360"
BATCH = 32  # featurize's default --batch-size
TEST_EVERY = 4
THREADS = 1  # featurize gives each task's engine the task's cores: 1 by default


def labelled_images(root: Path, per_label: int | None = None) -> list[tuple[str, Path, bool]]:
    """(label, file, is_test) for the images of root/<label>/ (the first per_label of each), by the documented split."""
    from spark_jobs.contract.model_choices import has_image_extension

    rows = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        files = sorted(path for path in folder.iterdir() if has_image_extension(path.name))[:per_label]
        rows += [(folder.name, path, index % TEST_EVERY == 0) for index, path in enumerate(files)]
    return rows


def session(model: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def features(model_session, pixels: np.ndarray) -> np.ndarray:
    name = model_session.get_inputs()[0].name
    return np.concatenate([model_session.run(None, {name: pixels[i : i + BATCH]})[0] for i in range(0, len(pixels), BATCH)])


def timed_img_s(model_session, pixels: np.ndarray) -> float:
    started = time.perf_counter()
    features(model_session, pixels)
    return len(pixels) / (time.perf_counter() - started)


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def centroid_accuracy(feats: np.ndarray, labels: np.ndarray, test: np.ndarray) -> float:
    """Nearest-centroid probe (cosine): centroids of the L2-normalised train features."""
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    classes = sorted(set(labels))
    centroids = np.stack([unit[~test & (labels == c)].mean(0) for c in classes])
    predicted = np.asarray(classes)[np.argmax(unit[test] @ centroids.T, axis=1)]
    return float((predicted == labels[test]).mean())


def export_models(workdir: Path) -> dict[str, Path]:
    """The fp32 and int8 models of the bundled weights, from the machine's model cache (the int8
    fine-tuning runs once per machine, not once per bench run)."""
    from model_export.model_cache import exported_model
    from model_export.model_identity import ExportSettings
    from spark_jobs.contract.model_choices import INT8_ENGINE

    settings = ExportSettings(model="mobilenet_v2", alpha=0.35, image_size=224, weights=str(BUNDLED_WEIGHTS))
    return {"fp32": exported_model(settings), "int8": exported_model(replace(settings, engine=INT8_ENGINE))}


def int8_figures(images: Path, workdir: Path, runs: int = 5, per_label: int | None = None) -> dict:
    """int8_speedup (min/median/max over `runs` alternating passes), int8_cosine_min and
    int8_probe_accuracy_delta (points, fp32 minus int8), with what they rest on."""
    from spark_jobs.featurization.image_decode import decode_image

    workdir.mkdir(parents=True, exist_ok=True)
    rows = labelled_images(images, per_label)
    labels = np.asarray([label for label, _, _ in rows])
    test = np.asarray([is_test for _, _, is_test in rows])
    pixels = np.stack([decode_image(path.read_bytes(), 224).pixels for _, path, _ in rows]).astype(np.float32)
    sessions = {name: session(path, THREADS) for name, path in export_models(workdir).items()}
    feats = {name: features(s, pixels) for name, s in sessions.items()}  # also the warm-up pass
    img_s: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(runs):
        for name in ("fp32", "int8"):
            img_s[name].append(timed_img_s(sessions[name], pixels))
    speedups = [i / f for f, i in zip(img_s["fp32"], img_s["int8"], strict=True)]
    cos = cosines(feats["fp32"], feats["int8"])
    accuracy = {name: centroid_accuracy(f, labels, test) for name, f in feats.items()}
    return {
        "int8_speedup": statistics.median(speedups),
        "int8_cosine_min": float(cos.min()),
        "int8_probe_accuracy_delta": round(100 * (accuracy["fp32"] - accuracy["int8"]), 2),
        "int8": {
            "speedup": spread(speedups),
            "img_s": {name: spread(values) for name, values in img_s.items()},
            "threads": THREADS,
            "batch_size": BATCH,
            "images": len(rows),
            "runs": runs,
            "cosine": {"min": float(cos.min()), "median": float(np.median(cos)), "mean": float(cos.mean())},
            "probe": {"kind": "nearest centroid (cosine)", "train": int((~test).sum()), "test": int(test.sum()),
                      "accuracy_fp32": accuracy["fp32"], "accuracy_int8": accuracy["int8"]},
            "cpu_flags": cpu_flags(),
        },
    }


def cpu_flags() -> list[str]:
    """The CPU's 8-bit dot-product instructions (what makes int8 faster on x86)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in wanted if flag in present]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=BUNDLED_IMAGES, help="labelled <label>/<image> folder")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "bench" / "work")
    parser.add_argument("--runs", type=int, default=5, help="timed fp32 + int8 pass pairs (at least 3)")
    parser.add_argument("--per-label", type=int, default=None, help="only the first N images of each label")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    figures = int8_figures(args.images, args.workdir, args.runs, args.per_label)
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results.update(figures)
    args.results.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
