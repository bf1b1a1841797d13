"""Odd-but-valid and broken image files, made in the test from real sample photos."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * (width * 3 + 1) * 2)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def odd_valid_images(photo: Path) -> dict[str, bytes]:
    """file name -> bytes of a real photo saved in every odd-but-valid mode we accept."""
    rgb = Image.open(photo).convert("RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    sixteen = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    return {
        "gray_L.jpg": encode(rgb.convert("L"), "JPEG"),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "palette_P.png": encode(palette, "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "gray_alpha_LA.png": encode(rgba.convert("LA"), "PNG"),
        "bilevel_1.png": encode(rgb.convert("1"), "PNG"),
        "sixteen_bit.png": encode(sixteen, "PNG"),
        "UPPER_CASE.JPEG": encode(rgb, "JPEG"),
    }


def broken_images(photo: Path) -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, words the quarantine reason must contain)."""
    real = photo.read_bytes()
    return {
        "zero_bytes.jpg": (b"", "empty file"),
        "truncated.jpg": (real[: len(real) // 2], "truncated"),
        "not_an_image.jpg": (b"these are not the pixels you are looking for\n" * 20, "cannot identify image data"),
        # a real image format the pipeline does not read, under a photo's name
        "jpeg2000_renamed.png": (encode(Image.open(photo), "JPEG2000"), "cannot identify image data"),
        "bomb.png": (png_claiming_size(30_000, 30_000), "decompression bomb"),
        "near_bomb.png": (png_claiming_size(10_000, 10_000), "decompression bomb"),
    }


def write_files(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


# --- the formats phones and browsers save (issue 24) ----------------------------------------------

# file extension -> (Pillow format, save options): what each real encoder writes (HEIF: pillow-heif's
# libheif + x265, AVIF: Pillow's libavif, the rest: Pillow's own)
PHOTO_FORMATS = {
    "jpg": ("JPEG", {"quality": 92}),
    "png": ("PNG", {}),
    "webp": ("WEBP", {"quality": 90}),
    "heic": ("HEIF", {"quality": 90}),
    "avif": ("AVIF", {"quality": 90}),
    "tiff": ("TIFF", {"compression": "tiff_lzw"}),
    "bmp": ("BMP", {}),
    "gif": ("GIF", {}),
}
EXIF_FORMATS = ("jpg", "png", "webp", "heic", "avif", "tiff")  # BMP and GIF carry no EXIF
ORIENTATION = 0x0112
# Files that are no photos, as phones and photo tools leave them beside the photos: a Live Photo's
# video, a Lightroom sidecar, notes, a macOS folder index.
NON_PHOTOS = {
    "IMG_0001.MOV": b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  " + b"\x00" * 64,
    "IMG_0001.xmp": b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>\n',
    "notes.txt": b"apples from the market\n",
    ".DS_Store": b"\x00\x00\x00\x01Bud1" + b"\x00" * 32,
}


def photo(path: Path, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A real photo as RGB, upscaled to `size` (landscape, so orientation shows; larger than the
    model input, so the reduced-scale decoding paths run)."""
    return Image.open(path).convert("RGB").resize(size, Image.Resampling.BICUBIC)


def encode_as(image: Image.Image, extension: str, **extra) -> bytes:
    fmt, options = PHOTO_FORMATS[extension]
    return encode(image, fmt, **{**options, **extra})


def with_orientation(image: Image.Image, extension: str, orientation: int) -> bytes:
    """The image saved with an EXIF orientation tag (HEIF: pillow-heif turns it into the HEIF
    rotation, as iPhones store it; TIFF: the tag in the image's own IFD)."""
    if extension == "tiff":
        return encode_as(image, extension, tiffinfo={ORIENTATION: orientation})
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encode_as(image, extension, exif=exif.tobytes())


def sixteen_bit_heic(image: Image.Image) -> bytes:
    """A 10-bit HEIC (what a phone's HDR mode saves) from 16-bit RGB pixels."""
    import pillow_heif

    pixels = np.asarray(image.convert("RGB"), dtype=np.uint16) * 257
    heif = pillow_heif.from_bytes(mode="RGB;16", size=image.size, data=pixels.tobytes())
    buffer = io.BytesIO()
    heif.save(buffer, quality=95)
    return buffer.getvalue()


ODD_PHOTO_NAMES = ("hdr_10bit.heic", "with_thumbnail.heic", "alpha.webp", "lossless.webp", "animated.webp",
                   "animated.gif", "webp_named.jpg", "heic_named.png")


def odd_photo_files(image: Image.Image) -> dict[str, tuple[bytes, bytes]]:
    """file name -> (bytes of an odd-but-valid file in a phone format, a PNG of the pixels it shows):
    the animated ones show their first frame, the alpha one its transparent strip on white."""
    rgba = image.convert("RGBA")
    alpha = Image.new("L", image.size, 255)
    alpha.paste(0, (0, 0, image.size[0] // 8, image.size[1]))  # a transparent strip on the left
    rgba.putalpha(alpha)
    blue = Image.new("RGB", image.size, (0, 0, 255))
    gif = encode(image, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    png = encode(image, "PNG")
    return {
        "hdr_10bit.heic": (sixteen_bit_heic(image), png),
        "with_thumbnail.heic": (encode_as(image, "heic", thumbnails=[320]), png),
        "alpha.webp": (encode(rgba, "WEBP", quality=90), encode(rgba, "PNG")),
        "lossless.webp": (encode(image, "WEBP", lossless=True), png),
        "animated.webp": (encode(image, "WEBP", quality=90, save_all=True, append_images=[blue], duration=100, loop=0), png),
        "animated.gif": (gif, encode(Image.open(io.BytesIO(gif)).convert("RGB"), "PNG")),  # 256 colours
        "webp_named.jpg": (encode_as(image, "webp"), png),  # identified by content, whatever the name
        "heic_named.png": (encode_as(image, "heic"), png),
    }
