"""Image decoding for featurization: bytes -> RGB pixel array, or a quarantine reason.

Pure Pillow/numpy: no Spark, no TensorFlow, so it is cheap to test and to run on executors.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# What the bytes must be, whatever the file is called; anything else is quarantined.
ACCEPTED_FORMATS = ("JPEG", "PNG")  # the JPEG plugin also opens MPO (multi-picture JPEG)
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own default bomb limit
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
SUPPORTED_MODES = frozenset(
    ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F")
    + _SIXTEEN_BIT_MODES
)


class QuarantineError(Exception):
    """An input image that cannot be featurized; the message is the quarantine reason."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (size, size, 3) uint8 RGB
    width: int  # after EXIF orientation, before resizing
    height: int
    mode: str  # the source mode, before conversion to RGB


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


@contextmanager
def _bomb_limit(max_image_pixels: int) -> Iterator[None]:
    """Pillow's bomb limit is process-global: set it for one decode, then put it back."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def decode_image(
    content: bytes | None, size: int, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> DecodedImage:
    """Decode, orient, convert and resize one image; raise QuarantineError with the reason."""
    if content is None or len(content) == 0:
        raise QuarantineError("empty file (0 bytes)")
    try:
        with _bomb_limit(max_image_pixels), warnings.catch_warnings():
            # Pillow only warns between 1x and 2x the limit; treat both as bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content), formats=ACCEPTED_FORMATS) as image:
                source_mode = image.mode
                if image.format == "JPEG" or image.format == "MPO":
                    # Let libjpeg decode at a reduced scale when the photo is much larger.
                    image.draft(None, (size, size))
                image.load()
                image = ImageOps.exif_transpose(image)
                width, height = image.size
                rgb = to_rgb(image).resize((size, size), Image.Resampling.BILINEAR)
                pixels = np.asarray(rgb, dtype=np.uint8)
    except QuarantineError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise QuarantineError(f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise QuarantineError(
            f"not a {'/'.join(ACCEPTED_FORMATS)} image (cannot identify image data)"
        ) from None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text:
            raise QuarantineError(f"truncated image: {text}") from None
        raise QuarantineError(f"corrupt image: {text}") from None
    except (ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise QuarantineError(f"corrupt image: {type(exc).__name__}: {exc}") from None
    if pixels.shape != (size, size, 3):
        raise QuarantineError(f"unexpected decoded shape {pixels.shape}")
    return DecodedImage(pixels=pixels, width=width, height=height, mode=source_mode)
