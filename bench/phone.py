"""Phone-size photos for the benchmark (issue 24): a corpus made from the bundled images at 12
megapixels, and the standalone decode + inference ceiling on it.

How a photo is made (nothing of it is stored in the repo; bench/work caches the corpus):
- the source (a 100 x 100 Fruits-360 image) is scaled (bicubic) to 3024 x 3024 and centred on a
  4032 x 3024 canvas of its own background colour: a 12 MP, 4:3 frame as phones take;
- sensor noise: signal-dependent Gaussian noise (shot + read noise, sigma^2 = 0.1 x + 4 in 8-bit
  levels, about ISO 400 after a phone's processing) plus chroma noise at half resolution, seeded;
- EXIF orientation: every other photo is stored as a phone stores a portrait shot, its pixels
  turned 90 degrees with Orientation 6 (HEIF: the same as HEIF's rotation, as iPhones write it);
- encoded by the real encoders, each at the settings that give phone-like sizes: JPEG quality 92
  (libjpeg), HEIC quality 75 with a 320-pixel thumbnail as iPhones embed (pillow-heif: libheif +
  x265, preset ultrafast to keep the corpus cheap to make), WebP quality 90 (libwebp), AVIF quality
  75 (libavif, speed 8), PNG (zlib level 3; what a screenshot tool saves).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

PHONE_SIZE = (4032, 3024)  # 12 MP
SMOKE_SIZE = (2016, 1512)  # 3 MP: the harness's own check, not a phone
# extension -> (Pillow format, options): the formats phones and browsers save photos in
PHONE_FORMATS = {
    "jpg": ("JPEG", {"quality": 92}),
    "heic": ("HEIF", {"quality": 75, "thumbnails": [320], "enc_params": {"preset": "ultrafast"}}),
    "webp": ("WEBP", {"quality": 90, "method": 2}),
    "avif": ("AVIF", {"quality": 75, "speed": 8}),
    "png": ("PNG", {"compress_level": 3}),
}
PORTRAIT_ORIENTATION = 6  # displayed turned 90 degrees clockwise


def phone_photo(source: Path, size: tuple[int, int], seed: int):
    """The source photo as a noisy phone-size frame (an RGB PIL image)."""
    from PIL import Image

    width, height = size
    with Image.open(source) as opened:
        small = opened.convert("RGB")
    canvas = Image.new("RGB", size, small.getpixel((0, 0)))
    canvas.paste(small.resize((height, height), Image.Resampling.BICUBIC), ((width - height) // 2, 0))
    rng = np.random.default_rng(seed)
    pixels = np.asarray(canvas, dtype=np.float32)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.sqrt(0.1 * pixels + 4.0)
    chroma = rng.standard_normal((height // 2, width // 2, 3), dtype=np.float32) * 1.5
    pixels += np.repeat(np.repeat(chroma, 2, axis=0), 2, axis=1)[:height, :width]
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


def encode_phone_photo(image, extension: str, portrait: bool) -> bytes:
    """The photo in a format; a portrait one with its pixels turned and EXIF Orientation 6."""
    from PIL import Image

    fmt, options = PHONE_FORMATS[extension]
    extra = {}
    if portrait:
        image = image.transpose(Image.Transpose.ROTATE_90)  # undone by Orientation 6 on display
        exif = Image.Exif()
        exif[0x0112] = PORTRAIT_ORIENTATION
        extra["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options, **extra)
    return buffer.getvalue()


def _make_one(job: tuple[Path, Path, tuple[int, int], int, bool]) -> None:
    import pillow_heif  # noqa: F401  (registers the HEIF encoder in this worker process)

    from spark_jobs.featurization import image_decode  # noqa: F401  (registers pillow-heif as the decoders do)

    source, target, size, seed, portrait = job
    image = phone_photo(source, size, seed)
    for extension in PHONE_FORMATS:
        out = target / source.parent.name / f"{source.stem}.{extension}"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(encode_phone_photo(image, extension, portrait))


def make_phone_corpus(target: Path, sources: list[Path], size: tuple[int, int] = PHONE_SIZE) -> Path:
    """target/<label>/<name>.<extension> for every source and format (the formats of a photo side
    by side, as a day's uploads mix them), made once (the encoders are slow: HEIC ~5 s a photo)
    with every core, reused while complete."""
    stamp = target / f".complete-v2-{len(sources)}x{size[0]}x{size[1]}"
    if not stamp.exists():
        import shutil

        shutil.rmtree(target, ignore_errors=True)
        jobs = [(source, target, size, index, index % 2 == 1) for index, source in enumerate(sources)]
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(_make_one, jobs))
        stamp.touch()
    return target


def corpus_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file() and not path.name.startswith("."))


def median_bytes(files: list[Path]) -> int:
    return int(np.median([path.stat().st_size for path in files]))


# ---------------------------------------------------------------- the standalone ceiling

def _ceiling_worker(job: tuple[str, list[str], int]) -> tuple[int, float, float, dict[str, float]]:
    """Decode + inference of a share of the files in one process with one ONNX Runtime thread (as a
    Spark task runs them, without Spark): (images, decode seconds, inference seconds, decode
    seconds per extension)."""
    import onnxruntime as ort

    from spark_jobs.featurization.image_decode import decode_image, set_decoder_threads

    artifact, paths, batch_size = job
    set_decoder_threads(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: np.zeros((1, 224, 224, 3), np.float32)})  # warm, as a worker's first task is
    decode_s = infer_s = 0.0
    by_extension: dict[str, float] = {}
    for start in range(0, len(paths), batch_size):
        pixels = []
        for path in paths[start : start + batch_size]:
            began = time.perf_counter()
            pixels.append(decode_image(Path(path).read_bytes(), 224).pixels)
            spent = time.perf_counter() - began
            decode_s += spent
            extension = path.rsplit(".", 1)[-1]
            by_extension[extension] = by_extension.get(extension, 0.0) + spent
        began = time.perf_counter()
        session.run(None, {name: np.stack(pixels).astype(np.float32)})
        infer_s += time.perf_counter() - began
    return len(paths), decode_s, infer_s, by_extension


def decode_inference_ceiling(artifact: Path, files: list[Path], batch_size: int = 8) -> dict:
    """The best a single machine does on these files without Spark: one process per core, each
    reading, decoding (the job's decode_image) and running the model (one thread) on its share,
    files dealt round-robin (formats mixed as in the corpus). Pool start and the model's load are
    outside the timed wall; the file reads from the page cache are inside, as in Spark."""
    cores = os.cpu_count() or 1
    shares = [[str(path) for path in files[index::cores]] for index in range(cores)]
    with ProcessPoolExecutor(max_workers=cores) as pool:
        list(pool.map(_ceiling_worker, [(str(artifact), share[:1], batch_size) for share in shares]))  # start + load
        began = time.perf_counter()
        results = list(pool.map(_ceiling_worker, [(str(artifact), share, batch_size) for share in shares]))
        wall = time.perf_counter() - began
    images = sum(r[0] for r in results)
    decode_s, infer_s = sum(r[1] for r in results), sum(r[2] for r in results)
    counts: dict[str, int] = {}
    for path in files:
        counts[path.suffix.lstrip(".")] = counts.get(path.suffix.lstrip("."), 0) + 1
    by_extension: dict[str, float] = {}
    for result in results:
        for extension, seconds in result[3].items():
            by_extension[extension] = by_extension.get(extension, 0.0) + seconds
    return {"img_s": images / wall, "images": images, "processes": cores, "batch_size": batch_size,
            "decode_share": decode_s / (decode_s + infer_s),
            "decode_ms_per_image": 1000 * decode_s / images, "inference_ms_per_image": 1000 * infer_s / images,
            "decode_ms_by_format": {ext: round(1000 * seconds / counts[ext], 1) for ext, seconds in sorted(by_extension.items())}}


# ---------------------------------------------------------------- a round of the bench

# figures of the phone corpus and the peers, per round, whose medians are top-level keys of results.json
PHONE_FIGURES = ("phone_img_s", "phone_ceiling_img_s", "decode_share", "predict_batch_udf_phone_img_s",
                 "predict_batch_udf_small_img_s", "ray_phone_img_s", "ray_small_img_s")


def measure_phone_and_peers(
    work: Path, corpus: Path, small: Path, artifact: Path, batch_size: int, one: dict,
    run_probe: Callable[..., dict], log: Callable[[str], None],
) -> dict:
    """One round on the phone corpus (the ceiling, the featurize job) and of the peers on it and on
    the small images (`small`, the 1x sample), back to back; `one` is the round's featurize run on
    the 1x sample, run_probe runs a probe of bench.run_bench in a fresh process."""
    log("  phone corpus: ceiling (decode + inference, a process per core)")
    top = decode_inference_ceiling(artifact, corpus_files(corpus))
    log("  phone corpus: featurize")
    job = run_probe("featurize", images=corpus, output=work / "out-phone", artifact=artifact, batch_size=batch_size)
    runs = {"phone_featurize": job, "phone_ceiling": top}
    for peer in ("predict_batch_udf", "ray"):
        for name, root in (("phone", corpus), ("small", small)):
            log(f"  {peer} on the {name} images")
            runs[f"{peer}_{name}"] = run_probe(peer, images=root, output=work / f"out-{peer}-{name}", artifact=artifact)
    img_s = {name: run["images"] / run["seconds"] for name, run in runs.items() if "seconds" in run}
    small_img_s = one["images"] / one["seconds"]
    figures = {"phone_img_s": img_s["phone_featurize"], "phone_ceiling_img_s": top["img_s"],
               "decode_share": top["decode_share"],
               **{f"{peer}_{corpus}_img_s": img_s[f"{peer}_{corpus}"] for peer in ("predict_batch_udf", "ray")
                  for corpus in ("phone", "small")}}
    ratios = {
        "phone_over_ceiling": figures["phone_img_s"] / top["img_s"],
        "spark_over_predict_batch_udf": figures["phone_img_s"] / figures["predict_batch_udf_phone_img_s"],
        "spark_over_predict_batch_udf_small": small_img_s / figures["predict_batch_udf_small_img_s"],
        "spark_over_ray": figures["phone_img_s"] / figures["ray_phone_img_s"],
        "spark_over_ray_small": small_img_s / figures["ray_small_img_s"],
    }
    return {"ratios": ratios, **figures, "phone_runs": runs}


def corpus_summary(root: Path, size: tuple[int, int], ceiling_run: dict) -> dict:
    """What results.json says about the phone corpus: photos, formats, sizes, decode time by format."""
    files = corpus_files(root)
    formats = sorted({path.suffix.lstrip(".") for path in files})
    return {
        "photos": len(files), "formats": formats, "size": list(size),
        "bytes_by_format": {ext: median_bytes([p for p in files if p.suffix == f".{ext}"]) for ext in formats},
        "decode_ms_by_format": ceiling_run["decode_ms_by_format"],
        "made": __doc__.split("\n\n", 1)[1].strip(),
    }
