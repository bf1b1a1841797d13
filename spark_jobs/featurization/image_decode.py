"""Image decoding for featurization: bytes -> RGB pixel array, or a quarantine reason.

Pure Pillow (+ pillow-heif for HEIF/HEIC)/numpy: no Spark, no TensorFlow, so it is cheap to test
and to run on executors. Which files are candidates is spark_jobs.contract.model_choices (by name); what a
candidate is, is decided here by its content.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import AvifImagePlugin, Image, ImageOps, UnidentifiedImageError

# HEIF/HEIC (iPhones, recent Android) through libheif. Depth and auxiliary images are never read
# (the primary image only); thumbnails are kept: draft() decodes one instead of the full image
# when it is a scaled copy at least the model's input size (pillow-heif checks orientation, crop,
# aspect ratio and colour profile), as libjpeg's reduced-scale decoding does for JPEG.
pillow_heif.register_heif_opener(depth_images=False, aux_images=False)

# What the bytes must be, whatever the file is called, tried in this order (Pillow's content
# sniffing: each plugin checks its magic bytes); anything else is quarantined. AVIF before HEIF:
# both are ISO-BMFF ("ftyp"); Pillow's AVIF plugin hands a non-AVIF file on to the next plugin.
# The JPEG plugin also opens MPO (multi-picture JPEG); animated WebP/GIF/AVIF: the first frame.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "HEIF", "TIFF", "BMP", "GIF")
# When no plugin can open the bytes, Pillow then warns naming each plugin that recognised their
# magic and why it failed: a truncated AVIF is "AVIF opening failed", not "cannot identify image data".
Image.WARN_POSSIBLE_FORMATS = True
FORMAT_NAMES = "JPEG, PNG, WebP, AVIF, HEIF/HEIC, TIFF, BMP or GIF"
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own default bomb limit
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
SUPPORTED_MODES = frozenset(
    ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F")
    + _SIXTEEN_BIT_MODES
)
# Image.reduce (box filter by an integer factor) works in these modes; the others are converted first.
_REDUCIBLE_MODES = frozenset(("L", "LA", "La", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F"))
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # rotated by 90 degrees: width and height swap


class QuarantineError(Exception):
    """An input image that cannot be featurized; the message is the quarantine reason."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (size, size, 3) uint8 RGB
    width: int  # of the full image after EXIF orientation, before any reduced-scale decoding or resizing
    height: int
    mode: str  # the source mode, before conversion to RGB
    format: str  # what the content is (Pillow's format name: JPEG, PNG, WEBP, AVIF, HEIF, TIFF, BMP, GIF, MPO)


def set_decoder_threads(threads: int) -> None:
    """Threads of the HEIF and AVIF decoders in this process: the task's cores on executors, so
    tasks do not oversubscribe the node (libheif and libavif start several by default)."""
    pillow_heif.options.DECODE_THREADS = max(1, threads)
    AvifImagePlugin.DEFAULT_MAX_THREADS = max(1, threads)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any supported mode to 8-bit RGB; transparency is composited on white."""
    mode = image.mode
    if mode not in SUPPORTED_MODES:
        raise QuarantineError(f"unsupported image mode {mode!r}")
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        # Pillow's own I/F -> L conversion clips at 255, which turns 16-bit photos white.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode in _SIXTEEN_BIT_MODES or values.max(initial=0) > 255 else 255.0
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def reduce_for(image: Image.Image, size: int) -> Image.Image:
    """Shrink a much larger image by an integer factor (a box filter, fast) while it stays at least
    twice the model's input: converting and resizing 12 MP cost ~5x more than this step."""
    factor = min(image.size) // (2 * size)
    if factor < 2 or image.mode not in _REDUCIBLE_MODES:
        return image
    return image.reduce(factor)


@contextmanager
def _bomb_limit(max_image_pixels: int) -> Iterator[None]:
    """Pillow's bomb limit is process-global: set it for one decode, then put it back."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    """The full image's size as displayed (EXIF orientation applied), read before draft() shrinks it.
    TIFF and HEIF report it so already: Pillow's TIFF plugin and libheif orient while they load."""
    width, height = image.size
    if image.format != "TIFF" and image.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING_ORIENTATIONS:
        return height, width
    return width, height


def decode_image(
    content: bytes | None, size: int, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> DecodedImage:
    """Identify the format by content, decode (at a reduced scale where the format allows), orient,
    convert and resize one image; raise QuarantineError with the reason."""
    if content is None or len(content) == 0:
        raise QuarantineError("empty file (0 bytes)")
    try:
        with _bomb_limit(max_image_pixels), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Pillow only warns between 1x and 2x the limit; treat both as bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content), formats=ACCEPTED_FORMATS) as image:
                source_mode, source_format = image.mode, image.format
                width, height = _oriented_size(image)
                # JPEG: libjpeg decodes at 1/2, 1/4 or 1/8 scale; HEIF: an embedded thumbnail; both
                # only while the result stays at least size x size. Other formats: a no-op.
                image.draft(None, (size, size))
                image.load()
                image = ImageOps.exif_transpose(reduce_for(image, size))
                rgb = to_rgb(image).resize((size, size), Image.Resampling.BILINEAR)
                pixels = np.asarray(rgb, dtype=np.uint8)
    except QuarantineError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise QuarantineError(f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        failed = [str(warning.message) for warning in caught if " opening failed. " in str(warning.message)]
        if failed:
            raise QuarantineError(f"corrupt image: {'; '.join(failed)}") from None
        raise QuarantineError(f"not a {FORMAT_NAMES} image (cannot identify image data)") from None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text:
            raise QuarantineError(f"truncated image: {text}") from None
        raise QuarantineError(f"corrupt image: {text}") from None
    except (ValueError, SyntaxError, EOFError, MemoryError, RuntimeError) as exc:
        raise QuarantineError(f"corrupt image: {type(exc).__name__}: {exc}") from None
    if pixels.shape != (size, size, 3):
        raise QuarantineError(f"unexpected decoded shape {pixels.shape}")
    return DecodedImage(pixels=pixels, width=width, height=height, mode=source_mode, format=source_format)
