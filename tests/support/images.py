"""Test pictures shared by the codec, training, bench and metalic tests."""

import hashlib
import io
import struct
import zlib

import numpy as np
from PIL import Image


def make_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth, textured test picture (not noise: learned codecs behave on it like on photos)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([128 + 90 * np.sin(xx / 7 + seed) * np.cos(yy / 11), 128 + 80 * np.cos((xx + yy) / 13),
                    (xx * 3 + yy * 2) % 256], -1) + rng.normal(0, 4, (height, width, 3))
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    im = Image.fromarray(rgb, "RGB")
    if mode == "L":
        return im.convert("L")
    if mode == "RGBA":
        a = (np.arange(width)[None, :].repeat(height, 0) * 255 // max(width - 1, 1)).astype(np.uint8)
        im = im.copy()
        im.putalpha(Image.fromarray(a, "L"))
        return im
    if mode == "I;16":
        g = (np.asarray(im.convert("L"), dtype=np.uint16) * 257 + rng.integers(0, 200, (height, width))).astype(np.uint16)
        return Image.fromarray(g)
    return im


def png_bytes(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def decoded_sha256(image: Image.Image) -> str:
    """sha256 of a decoded image's mode, size and raw pixels (PNG encoders differ; the pixels must not)."""
    return hashlib.sha256(f"{image.mode} {image.size[0]}x{image.size[1]}\n".encode() + image.tobytes()).hexdigest()


FILE_FORMATS = ("PNG", "TIFF", "BMP", "WEBP", "JPEG")
"""The formats the image policy reads (by magic bytes)."""


def image_in_mode(width: int, height: int, mode: str, seed: int = 0) -> Image.Image:
    """Random samples in any Pillow mode: the policy's every input, and the ones it refuses (F, I;16N)."""
    n = len(Image.new(mode, (width, height)).tobytes())
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    return Image.frombytes(mode, (width, height), data)


def file_bytes(image: Image.Image, fmt: str) -> bytes | None:
    """``image`` written in ``fmt``, or None when Pillow cannot write that mode in that format."""
    b = io.BytesIO()
    try:
        image.save(b, fmt)
    except (OSError, ValueError, KeyError):
        return None
    return b.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but carries (almost) no pixel data: a bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda tag, body: struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
