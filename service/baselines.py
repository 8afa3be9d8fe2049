"""Classical codecs at a byte budget: what the page compares a metalic file against.

For each of JPEG, WebP and AVIF (through Pillow), :func:`at_budget` finds the
highest quality whose file is not larger than the metalic file, so that every
codec on the page spends at most the same number of bytes. The encoder settings
are the benchmarks' anchor settings (docs/BENCHMARKS.md), so the page and the
RD tables show the same codecs:

=====  ============  ====================================================
codec  quality       Pillow ``save`` arguments
=====  ============  ====================================================
jpeg   1..95         ``subsampling="4:2:0", optimize=True`` (libjpeg)
webp   0..100        ``method=6`` (libwebp, lossy)
avif   0..100        ``speed=6, subsampling="4:2:0"`` (libavif)
=====  ============  ====================================================

Sizes are the real byte counts of what Pillow writes, headers included, and
PSNR is measured on the file Pillow decodes back, over all pixels and the three
channels of the 8-bit RGB image (the codec's definition).

.. note:: The search assumes the file size grows with quality. Encoders are
   not strictly monotone, so two neighbouring qualities can swap order by a few
   bytes; the search keeps the best fitting quality it tried, never one over
   the budget when any fits.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, features


@dataclass(frozen=True)
class BaselineCodec:
    """One Pillow codec with an integer quality.

    Attributes:
        name: str. Lowercase key, the only spelling used (``jpeg``, ``webp``, ``avif``).
        pil_format: str. Pillow format name for ``Image.save``.
        media_type: str. What a browser is told the file is.
        feature: str. ``PIL.features`` name that says whether this Pillow has it.
        quality_min: int. Lowest quality (smallest file).
        quality_max: int. Highest quality searched.
        save_kwargs: callable. Quality -> ``Image.save`` keyword arguments.
    """

    name: str
    pil_format: str
    media_type: str
    feature: str
    quality_min: int
    quality_max: int
    save_kwargs: Callable[[int], dict[str, Any]] = field(repr=False)


CODECS: dict[str, BaselineCodec] = {
    codec.name: codec
    for codec in (
        BaselineCodec("jpeg", "JPEG", "image/jpeg", "jpg", 1, 95,
                      lambda q: {"quality": q, "subsampling": "4:2:0", "optimize": True}),
        BaselineCodec("webp", "WEBP", "image/webp", "webp", 0, 100,
                      lambda q: {"quality": q, "method": 6, "lossless": False}),
        BaselineCodec("avif", "AVIF", "image/avif", "avif", 0, 100,
                      lambda q: {"quality": q, "speed": 6, "subsampling": "4:2:0"}),
    )
}
"""The baselines, in the order the page lists them."""

PSNR_CAP_DB = 100.0
"""dB. PSNR reported for identical images (the codec's cap)."""


@dataclass(frozen=True)
class Baseline:
    """One codec's file at a byte budget.

    Attributes:
        codec: str. Key in :data:`CODECS`.
        quality: int. The quality setting that produced ``data``.
        data: bytes. The encoded file.
        psnr: float. dB, of the decoded file against the input.
        fits: bool. True: ``len(data) <= budget``. False: even the lowest
            quality is larger than the budget, and ``data`` is that smallest file.
    """

    codec: str
    quality: int
    data: bytes
    psnr: float
    fits: bool


def available() -> list[str]:
    """Codec keys this Pillow can write, in :data:`CODECS` order."""
    return [name for name, codec in CODECS.items() if features.check(codec.feature)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two HxWx3 uint8 images, at most :data:`PSNR_CAP_DB`."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def encode(name: str, image: Image.Image, quality: int) -> bytes:
    """The file ``name`` writes for an RGB image at ``quality``."""
    codec = CODECS[name]
    buffer = io.BytesIO()
    image.save(buffer, format=codec.pil_format, **codec.save_kwargs(quality))
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """HxWx3 uint8 RGB of an encoded file, as Pillow decodes it."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def at_budget(name: str, rgb: np.ndarray, budget: int) -> Baseline:
    """The highest-quality file of codec ``name`` not larger than ``budget`` bytes.

    Args:
        name: str. Key in :data:`CODECS`.
        rgb: np.ndarray. HxWx3 uint8, the image as the metalic encoder saw it.
        budget: int. Bytes; the metalic file size.

    Returns:
        Baseline. With ``fits=False`` when the lowest quality is already over the budget.
    """
    if name not in CODECS:
        raise ValueError(f"unknown baseline codec {name!r}; known: {', '.join(CODECS)}")
    if budget < 1:
        raise ValueError("the byte budget must be at least 1")
    codec = CODECS[name]
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    sizes: dict[int, bytes] = {}

    def size_at(q: int) -> int:
        if q not in sizes:
            sizes[q] = encode(name, image, q)
        return len(sizes[q])

    lo, hi = codec.quality_min, codec.quality_max
    if size_at(lo) > budget:
        best, fits = lo, False
    elif size_at(hi) <= budget:
        best, fits = hi, True
    else:
        # Invariant: size_at(lo) <= budget < size_at(hi).
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if size_at(mid) <= budget:
                lo = mid
            else:
                hi = mid
        fitting = [q for q, data in sizes.items() if len(data) <= budget]
        best, fits = max(fitting), True
    data = sizes[best]
    return Baseline(codec=name, quality=best, data=data, psnr=psnr(rgb, decode(data)), fits=fits)


def compare(rgb: np.ndarray, budget: int, names: list[str] | None = None) -> list[Baseline]:
    """:func:`at_budget` for each named codec (default: every available one)."""
    return [at_budget(name, rgb, budget) for name in (names if names is not None else available())]
