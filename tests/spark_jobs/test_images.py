"""Decoding units: every odd-but-valid mode decodes to RGB, every broken class gets a reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spark_jobs.contract.model_choices import has_image_extension
from spark_jobs.featurization.image_decode import QuarantineError, decode_image, to_rgb
from spark_jobs.featurization.image_listing import IMAGE_GLOB
from tests.support import SAMPLE
from tests.support.images import broken_images, encode, odd_valid_images

PHOTO = sorted((SAMPLE / "lemon").iterdir())[0]


def test_real_photo_is_resized_and_keeps_its_colours():
    decoded = decode_image(PHOTO.read_bytes(), 224)
    original = np.asarray(Image.open(PHOTO).convert("RGB"), dtype=np.float64)
    assert decoded.pixels.shape == (224, 224, 3) and decoded.pixels.dtype == np.uint8
    assert (decoded.width, decoded.height, decoded.mode) == (100, 100, "RGB")
    # Resizing keeps the average colour of the lemon photo.
    assert np.abs(decoded.pixels.reshape(-1, 3).mean(0) - original.reshape(-1, 3).mean(0)).max() < 3


@pytest.mark.parametrize("name", sorted(odd_valid_images(PHOTO)))
def test_odd_but_valid_modes_decode_to_rgb(name):
    data = odd_valid_images(PHOTO)[name]
    source_mode = Image.open(__import__("io").BytesIO(data)).mode
    decoded = decode_image(data, 96)
    assert decoded.pixels.shape == (96, 96, 3)
    assert decoded.mode == source_mode
    assert (decoded.width, decoded.height) == (100, 100)
    # Real content survives: the image is neither blank nor saturated.
    assert 20 < decoded.pixels.mean() < 250 and decoded.pixels.std() > 5


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    gray = np.asarray(Image.open(PHOTO).convert("L"))
    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)
    decoded = decode_image(encode(sixteen, "PNG"), 100)
    assert np.abs(decoded.pixels[..., 0].astype(int) - gray.astype(int)).max() <= 1


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    decoded = decode_image(encode(clear, "PNG"), 32)
    assert decoded.pixels.min() == 255


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    wide.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: left half ends on top
    decoded = decode_image(encode(wide, "JPEG", exif=exif, quality=95), 64)
    assert (decoded.width, decoded.height) == (20, 40)
    top, bottom = decoded.pixels[5, 32], decoded.pixels[58, 32]
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


@pytest.mark.parametrize("name", sorted(broken_images(PHOTO)))
def test_broken_inputs_raise_a_readable_reason(name):
    data, words = broken_images(PHOTO)[name]
    with pytest.raises(QuarantineError) as caught:
        decode_image(data, 224)
    assert words in str(caught.value)


def test_bomb_limit_is_configurable():
    with pytest.raises(QuarantineError, match="decompression bomb"):
        decode_image(PHOTO.read_bytes(), 64, max_image_pixels=2_000)
    assert decode_image(PHOTO.read_bytes(), 64, max_image_pixels=20_000).pixels.shape == (64, 64, 3)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # the process-wide limit is left as it was


def test_unsupported_mode_is_named():
    with pytest.raises(QuarantineError, match="unsupported image mode 'LAB'"):
        to_rgb(Image.new("LAB", (4, 4)))


def test_image_extensions_any_case():
    assert all(has_image_extension(p) for p in ("a/b.jpg", "a/b.JPG", "a/b.JpEg", "s3://x/y.PNG", "a/..jpg", "a/.PNG"))
    assert not any(has_image_extension(p) for p in ("a/b.gif", "a/b.jpg.txt", "a/README"))
    assert "[jJ][pP][eE][gG]" in IMAGE_GLOB and "[pP][nN][gG]" in IMAGE_GLOB
