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
        "not_an_image.jpg": (b"these are not the pixels you are looking for\n" * 20, "not a JPEG/PNG"),
        "gif_renamed.png": (encode(Image.open(photo), "GIF"), "not a JPEG/PNG"),
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
