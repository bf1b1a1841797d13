"""What every round of the bench measures on (Workload: the sample, its replicas, the 5 % manifest,
the ONNX models from the machine's model cache, the phone corpus) and how it is prepared."""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

from bench import phone
from bench.sample_images import make_replicas, sample_files
from local_spark.run_local import BUNDLED_WEIGHTS
from model_export.model_cache import exported_model
from model_export.model_identity import ExportSettings


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

