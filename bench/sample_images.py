"""The benchmark's images: the labelled sample and its replicas (bench.run_bench and bench.soak)."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_IMAGES = REPO_ROOT / "tests" / "data" / "fruits-360"  # 480 real images; pass --sample for more


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

