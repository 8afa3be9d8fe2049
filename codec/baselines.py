"""Classical codecs through Pillow: JPEG, WebP and AVIF at a quality, or fitted under a byte budget.

What metalic is compared against wherever one image is shown next to another
codec: the page's compare view (``POST /compare``), ``metalic demo`` and the
benchmarks' anchors (:mod:`bench.anchors` takes these three entries as they
are). It needs only Pillow and numpy, so it sits in the codec library, below
the service and the CLI.

For each codec, :func:`at_budget` finds the highest quality whose file is not
larger than the metalic file, so that every codec spends at most the same
number of bytes. The encoder settings are the benchmarks' anchor settings
(docs/BENCHMARKS.md):

=====  ============  ===============  ====================================================
codec  quality       file             Pillow ``save`` arguments
=====  ============  ===============  ====================================================
jpeg   1..95         ``.jpg``         ``subsampling="4:2:0", optimize=True`` (libjpeg)
webp   0..100        ``.webp``        ``method=6, lossless=False`` (libwebp, lossy)
avif   0..100        ``.avif``        ``speed=6, subsampling="4:2:0"`` (libavif)
=====  ============  ===============  ====================================================

Sizes are the real byte counts of what Pillow writes, headers included, and
PSNR is :func:`codec.metrics.psnr` of the file Pillow decodes back.

Typical workflow::

    data = encode("webp", rgb, 75)                    # one file at one quality
    rgb_hat = decode(data)
    for b in compare(rgb, len(mlic)):                  # each available codec at <= len(mlic) bytes
        print(b.codec, b.quality, len(b.data), b.psnr)

.. note:: The search assumes the file size grows with quality. Encoders are
   not strictly monotone, so two neighbouring qualities can swap order by a few
   bytes; the search keeps the best fitting quality it tried, never one over
   the budget when any fits.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, features

from .metrics import psnr

__all__ = ["BaselineCodec", "CODECS", "Baseline", "available", "check_image", "write", "encode", "decode",
           "at_budget", "compare"]


@dataclass(frozen=True)
class BaselineCodec:
    """One Pillow codec with an integer quality.

    Attributes:
        name: str. Lowercase key, the only spelling used (``jpeg``, ``webp``, ``avif``).
        pil_format: str. Pillow format name for ``Image.save``.
        media_type: str. What a browser is told the file is.
        extension: str. File name suffix, with the dot.
        feature: str. ``PIL.features`` name that says whether this Pillow has it.
        quality_min: int. Lowest quality (smallest file).
        quality_max: int. Highest quality searched.
        save_kwargs: callable. Quality -> ``Image.save`` keyword arguments.
    """

    name: str
    pil_format: str
    media_type: str
    extension: str
    feature: str
    quality_min: int
    quality_max: int
    save_kwargs: Callable[[int], dict[str, Any]] = field(repr=False)


CODECS: dict[str, BaselineCodec] = {
    codec.name: codec
    for codec in (
        # Pillow's JPEG above 95 only grows the file
        BaselineCodec("jpeg", "JPEG", "image/jpeg", ".jpg", "jpg", 1, 95,
                      lambda q: {"quality": int(q), "subsampling": "4:2:0", "optimize": True}),
        BaselineCodec("webp", "WEBP", "image/webp", ".webp", "webp", 0, 100,
                      lambda q: {"quality": int(q), "method": 6, "lossless": False}),
        BaselineCodec("avif", "AVIF", "image/avif", ".avif", "avif", 0, 100,
                      lambda q: {"quality": int(q), "speed": 6, "subsampling": "4:2:0"}),
    )
}
"""The baselines, in the order tables and the page list them."""


@dataclass(frozen=True)
class Baseline:
    """One codec's file at a byte budget.

    Attributes:
        codec: str. Key in :data:`CODECS`.
        quality: int. The quality setting that produced ``data``.
        data: bytes. The encoded file.
        rgb: np.ndarray. HxWx3 uint8, ``data`` as Pillow decodes it.
        psnr: float. dB, of ``rgb`` against the input.
        fits: bool. True: ``len(data) <= budget``. False: even the lowest
            quality is larger than the budget, and ``data`` is that smallest file.
    """

    codec: str
    quality: int
    data: bytes = field(repr=False)
    rgb: np.ndarray = field(repr=False)
    psnr: float
    fits: bool


def available() -> list[str]:
    """Codec keys this Pillow can write, in :data:`CODECS` order."""
    return [name for name, codec in CODECS.items() if features.check(codec.feature)]


def check_image(img: np.ndarray) -> np.ndarray:
    """Return ``img`` as an array, or raise ValueError unless it is non-empty HxWx3 uint8."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise ValueError(f"expected a non-empty HxWx3 uint8 image, got {img.dtype} {img.shape}")
    return img


def write(image: Image.Image, pil_format: str, kwargs: Mapping[str, Any]) -> bytes:
    """The complete file Pillow writes for ``image``, exactly as it would land on disk."""
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format, **kwargs)
    return buffer.getvalue()


def _codec(name: str) -> BaselineCodec:
    if name not in CODECS:
        raise ValueError(f"unknown baseline codec {name!r}; known: {', '.join(CODECS)}")
    return CODECS[name]


def _rgb_image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(check_image(rgb)), "RGB")


def encode(name: str, rgb: np.ndarray, quality: int, options: Mapping[str, Any] | None = None) -> bytes:
    """The file codec ``name`` writes for an image at ``quality``.

    Args:
        name: str. Key in :data:`CODECS`.
        rgb: np.ndarray. HxWx3 uint8.
        quality: int. In ``[quality_min, quality_max]`` of the codec.
        options: mapping or None. ``Image.save`` arguments that override the
            defaults (for example ``{"subsampling": "4:4:4"}``).
    """
    codec = _codec(name)
    integer = isinstance(quality, (int, np.integer)) and not isinstance(quality, bool)
    if not (integer and codec.quality_min <= quality <= codec.quality_max):
        raise ValueError(f"{name}: quality must be an integer in [{codec.quality_min}, {codec.quality_max}], "
                         f"got {quality!r}")
    return write(_rgb_image(rgb), codec.pil_format, {**codec.save_kwargs(quality), **(options or {})})


def decode(data: bytes) -> np.ndarray:
    """HxWx3 uint8 RGB of any file Pillow reads (it sniffs the format)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.array(im.convert("RGB"), dtype=np.uint8)


def at_budget(name: str, rgb: np.ndarray, budget: int) -> Baseline:
    """The highest-quality file of codec ``name`` not larger than ``budget`` bytes.

    Args:
        name: str. Key in :data:`CODECS`.
        rgb: np.ndarray. HxWx3 uint8, the image as the metalic encoder saw it.
        budget: int. Bytes; the metalic file size.

    Returns:
        Baseline. With ``fits=False`` when the lowest quality is already over the budget.
    """
    codec = _codec(name)
    if budget < 1:
        raise ValueError("the byte budget must be at least 1")
    image = _rgb_image(rgb)
    sizes: dict[int, bytes] = {}

    def size_at(q: int) -> int:
        if q not in sizes:
            sizes[q] = write(image, codec.pil_format, codec.save_kwargs(q))
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
    rgb_hat = decode(data)
    return Baseline(codec=name, quality=best, data=data, rgb=rgb_hat, psnr=psnr(rgb, rgb_hat), fits=fits)


def compare(rgb: np.ndarray, budget: int, names: list[str] | None = None) -> list[Baseline]:
    """:func:`at_budget` for each named codec (default: every available one)."""
    return [at_budget(name, rgb, budget) for name in (names if names is not None else available())]
