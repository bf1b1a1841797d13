"""The soak's inputs: perturbed replicas of the sample with broken files planted among them, and
the quarantine reason the pipeline must give each."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.sample_images import make_replicas


class SoakError(RuntimeError):
    """A run that failed or cannot be checked; the message says which and where its log is."""


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

