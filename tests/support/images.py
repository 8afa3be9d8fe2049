"""Test pictures shared by the codec, training, bench and metalic tests."""

import hashlib
import io

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
