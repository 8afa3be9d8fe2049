"""Classical anchor codecs (JPEG, WebP, JPEG 2000, AVIF) through Pillow, in memory.

Every anchor is one :class:`AnchorCodec` entry in :data:`ANCHORS`, keyed by the
one spelling used everywhere (``jpeg``, ``webp``, ``jpeg2000``, ``avif``). Each
has a single rate parameter (``quality`` or, for JPEG 2000, the compression
``ratio``) and fixed, documented encoder settings, so RD curves are repeatable:

=========  ===========  ==================================================================
codec      parameter    Pillow ``save`` arguments
=========  ===========  ==================================================================
jpeg       quality 1-95 ``quality=q, subsampling="4:2:0", optimize=True`` (libjpeg)
webp       quality 0-100 ``quality=q, method=6`` (libwebp, lossy, slowest = best)
jpeg2000   ratio 2-2000 ``quality_mode="rates", quality_layers=[ratio], mct=1,
                        irreversible=True, no_jp2=True`` (OpenJPEG)
avif       quality 0-100 ``quality=q, speed=6, subsampling="4:2:0"`` (libavif)
=========  ===========  ==================================================================

Why these settings:

* JPEG ``optimize=True`` builds per-image Huffman tables; it costs nothing in
  quality and makes the anchor stronger (cjpeg's ``-optimize``).
* JPEG 2000 uses the irreversible 9/7 wavelet and the colour transform
  (``mct=1``, RCT/ICT), as lossy JPEG 2000 is meant to be used; Pillow's
  defaults (5/3 reversible wavelet, no MCT) are for lossless coding. The raw
  codestream (``no_jp2``) is written, without the JP2 box wrapper, as
  ``opj_compress -o x.j2k`` would.
* Sizes are the real byte counts of what Pillow writes, headers included.
* JPEG, WebP and AVIF are :data:`codec.baselines.CODECS`, the codecs the page's
  compare view and ``metalic demo`` put next to metalic, so every table and the
  page code them the same way (and write and decode files through the same
  functions); JPEG 2000 is only a benchmark anchor, so it lives here.

Typical workflow::

    data, x_hat = encode_at("webp", x, 75)              # one point
    data, x_hat = encode_at_bpp("avif", x, 0.5)         # closest to 0.5 bpp
    for name in available_codecs(): ...                  # skip what Pillow lacks
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL
from PIL import Image, features

from codec import baselines
from codec.baselines import check_image, decode
from codec.metrics import bpp as _bpp

__all__ = [
    "AnchorCodec",
    "ANCHORS",
    "available_codecs",
    "unavailable_codecs",
    "get_anchor",
    "check_image",
    "encode",
    "decode",
    "encode_at",
    "search_param",
    "encode_at_bpp",
]


@dataclass(frozen=True)
class AnchorCodec:
    """One classical codec reachable through Pillow, with one rate parameter.

    Attributes:
        name: str. Registry key (lowercase, the only spelling used).
        pil_format: str. Pillow format name passed to ``Image.save``.
        feature: str. ``PIL.features`` name that tells whether Pillow has it.
        param_name: str. What the rate parameter means (``quality`` or ``ratio``).
        param_min: float. Smallest accepted parameter.
        param_max: float. Largest accepted parameter.
        integer_param: bool. True: the parameter is an integer (quality levels).
            False: a real number, searched on a log scale.
        size_increases: bool. True: a larger parameter gives a larger file
            (quality). False: the opposite (compression ratio).
        sweep: tuple of float. Default RD sweep, chosen to span about
            0.05 to 2.5 bpp on Kodak.
        save_kwargs: callable. Parameter -> ``Image.save`` keyword arguments.
    """

    name: str
    pil_format: str
    feature: str
    param_name: str
    param_min: float
    param_max: float
    integer_param: bool
    size_increases: bool
    sweep: tuple[float, ...]
    save_kwargs: Callable[[float], dict[str, Any]] = field(repr=False)

    def check_param(self, param: float) -> float | int:
        """Validate ``param`` and cast it to the type the encoder expects."""
        if not (isinstance(param, (int, float, np.integer, np.floating)) and math.isfinite(param)):
            raise ValueError(f"{self.name}: {self.param_name} must be a finite number, got {param!r}")
        if not self.param_min <= param <= self.param_max:
            raise ValueError(
                f"{self.name}: {self.param_name} must be in [{self.param_min:g}, {self.param_max:g}], got {param}"
            )
        if self.integer_param:
            if param != int(param):
                raise ValueError(f"{self.name}: {self.param_name} must be an integer, got {param}")
            return int(param)
        return float(param)


# Ratios for JPEG 2000 are 24 / target bpp (24-bit RGB input): the JPEG-AI
# targets 0.06 .. 2.0 bpp plus 0.03 and 2.5 at the ends.
_J2K_SWEEP = tuple(round(24.0 / t, 3) for t in (2.5, 2.0, 1.5, 1.0, 0.75, 0.5, 0.25, 0.12, 0.06, 0.03))


def _baseline_anchor(name: str, sweep: tuple[float, ...]) -> AnchorCodec:
    """The anchor of one :data:`codec.baselines.CODECS` entry: its format, quality range and settings."""
    b = baselines.CODECS[name]
    return AnchorCodec(name=name, pil_format=b.pil_format, feature=b.feature, param_name="quality",
                       param_min=b.quality_min, param_max=b.quality_max, integer_param=True, size_increases=True,
                       sweep=sweep, save_kwargs=b.save_kwargs)


ANCHORS: dict[str, AnchorCodec] = {
    c.name: c
    for c in (
        _baseline_anchor("jpeg", (1, 3, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)),
        _baseline_anchor("webp", (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)),
        AnchorCodec(
            name="jpeg2000",
            pil_format="JPEG2000",
            feature="jpg_2000",
            param_name="ratio",
            param_min=2.0,
            param_max=2000.0,
            integer_param=False,
            size_increases=False,
            sweep=_J2K_SWEEP,
            save_kwargs=lambda r: {
                "quality_mode": "rates",
                "quality_layers": [float(r)],
                "mct": 1,
                "irreversible": True,
                "no_jp2": True,
            },
        ),
        _baseline_anchor("avif", (0, 10, 20, 30, 40, 50, 60, 70, 80, 90)),
    )
}
"""Every anchor codec, keyed by name, in the order reports list them."""


def unavailable_codecs() -> dict[str, str]:
    """Anchors this Pillow build cannot run, each with the reason.

    Returns:
        dict. Codec name -> human-readable reason; empty when all are present.
    """
    missing = {}
    for codec in ANCHORS.values():
        if not features.check(codec.feature):
            reason = f"Pillow {PIL.__version__} was built without {codec.feature!r} support"
            if codec.name == "avif":
                reason += " (AVIF is built in from Pillow 11.3 when libavif is present)"
            missing[codec.name] = reason
    return missing


def available_codecs() -> list[str]:
    """Names of the anchors this Pillow build can encode and decode, in report order."""
    missing = unavailable_codecs()
    return [name for name in ANCHORS if name not in missing]


def get_anchor(name: str) -> AnchorCodec:
    """Look an anchor up by name, with a clear error for unknown or missing ones."""
    if name not in ANCHORS:
        raise ValueError(f"unknown anchor codec {name!r}; known: {', '.join(ANCHORS)}")
    reason = unavailable_codecs().get(name)
    if reason is not None:
        raise ValueError(f"anchor codec {name!r} is unavailable: {reason}")
    return ANCHORS[name]


def encode(name: str, img: np.ndarray, param: float, options: Mapping[str, Any] | None = None) -> bytes:
    """Encode an RGB image with one anchor at one parameter value.

    Args:
        name: str. Anchor name (see :data:`ANCHORS`).
        img: np.ndarray. HxWx3 uint8 RGB.
        param: float. The anchor's rate parameter (quality, or ratio for JPEG 2000).
        options: mapping or None. Extra ``Image.save`` arguments that override
            the defaults (for example ``{"subsampling": "4:4:4"}`` for JPEG).

    Returns:
        bytes. The complete file, exactly as it would be written to disk.
    """
    codec = get_anchor(name)
    value = codec.check_param(param)
    kwargs = codec.save_kwargs(value)
    kwargs.update(options or {})
    return baselines.write(Image.fromarray(check_image(img), mode="RGB"), codec.pil_format, kwargs)


def encode_at(
    name: str, img: np.ndarray, param: float, options: Mapping[str, Any] | None = None
) -> tuple[bytes, np.ndarray]:
    """Encode then decode: ``(file bytes, HxWx3 uint8 reconstruction)``. See :func:`encode`."""
    data = encode(name, img, param, options)
    return data, decode(data)


def search_param(
    name: str,
    img: np.ndarray,
    target_bpp: float,
    options: Mapping[str, Any] | None = None,
    rel_tol: float = 0.01,
    max_steps: int = 30,
) -> tuple[float | int, bytes]:
    """Find the parameter whose real file size is closest to ``target_bpp``.

    Bisection on the parameter, assuming file size is monotone in it (true up
    to tiny wiggles for all four anchors). Integer parameters end on the
    neighbouring pair that brackets the target and keep the closer one; the
    JPEG 2000 ratio is bisected on a log scale until within ``rel_tol``.
    When the target is out of reach the nearest end of the range is returned.

    Args:
        name: str. Anchor name.
        img: np.ndarray. HxWx3 uint8 RGB.
        target_bpp: float. Wanted bits per pixel, > 0.
        options: mapping or None. Extra ``Image.save`` arguments.
        rel_tol: float. Relative bpp error that stops a real-valued search early.
        max_steps: int. Bound on the number of encodes of a real-valued search.

    Returns:
        tuple ``(param, data)``: the chosen parameter and its encoded bytes.
    """
    codec = get_anchor(name)
    img = check_image(img)
    if not (math.isfinite(target_bpp) and target_bpp > 0):
        raise ValueError(f"target_bpp must be a positive number, got {target_bpp}")
    height, width = img.shape[:2]
    cache: dict[float, bytes] = {}

    def rate(p: float) -> float:
        if p not in cache:
            cache[p] = encode(name, img, p, options)
        return _bpp(len(cache[p]), width, height)

    # Work on a knob t where a larger t always means a larger file, so one
    # bisection serves both quality (increasing) and ratio (decreasing).
    if codec.integer_param:
        lo, hi = int(codec.param_min), int(codec.param_max)
        to_param = (lambda t: t) if codec.size_increases else (lambda t: lo + hi - t)
        t_lo, t_hi = lo, hi
        if rate(to_param(t_lo)) >= target_bpp:
            best = to_param(t_lo)
        elif rate(to_param(t_hi)) <= target_bpp:
            best = to_param(t_hi)
        else:
            while t_hi - t_lo > 1:
                mid = (t_lo + t_hi) // 2
                if rate(to_param(mid)) <= target_bpp:
                    t_lo = mid
                else:
                    t_hi = mid
            best = min((to_param(t_lo), to_param(t_hi)), key=lambda p: abs(rate(p) - target_bpp))
        return best, cache[best]

    sign = 1.0 if codec.size_increases else -1.0
    # Clamped: exp(log(x)) can land one ulp outside the range check.
    to_param = lambda t: min(codec.param_max, max(codec.param_min, math.exp(sign * t)))  # noqa: E731
    t_lo, t_hi = sorted((sign * math.log(codec.param_min), sign * math.log(codec.param_max)))
    if rate(to_param(t_lo)) >= target_bpp:
        best = to_param(t_lo)
    elif rate(to_param(t_hi)) <= target_bpp:
        best = to_param(t_hi)
    else:
        best = to_param(t_lo)
        for _ in range(max_steps):
            mid = 0.5 * (t_lo + t_hi)
            p = to_param(mid)
            if abs(rate(p) - target_bpp) < abs(rate(best) - target_bpp):
                best = p
            if abs(rate(p) - target_bpp) <= rel_tol * target_bpp:
                break
            if rate(p) <= target_bpp:
                t_lo = mid
            else:
                t_hi = mid
    return best, cache[best]


def encode_at_bpp(
    name: str, img: np.ndarray, target_bpp: float, options: Mapping[str, Any] | None = None
) -> tuple[bytes, np.ndarray]:
    """Encode at the parameter closest to ``target_bpp`` and decode it.

    Returns:
        tuple ``(data, decoded)``: file bytes and HxWx3 uint8 reconstruction.
        Use :func:`search_param` to also learn which parameter was chosen.
    """
    _, data = search_param(name, img, target_bpp, options)
    return data, decode(data)
