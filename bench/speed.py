"""Side-by-side encode and decode timing of metalic and the anchors (AVIF first).

Absolute times depend on the machine and on whatever else it runs, so
DESIGN.md section 4 asks for ratios measured side by side in one run, with the
machine named. For each image:

1. metalic encodes at one λ (one untimed warm-up run, then ``runs`` timed
   runs); the size of its stream sets the target rate;
2. each anchor is set, by :func:`bench.anchors.search_param`, to the
   parameter that lands closest to that rate, so both sides code the same
   number of bits; it is warmed up and timed the same way;
3. the median of the timed runs is kept, and ratios are formed per image.

Over images, the report gives the median of the per-image medians and the
median of the per-image ratios (robust to one slow outlier run).

.. note::
   Threads are not pinned: torch uses ``torch.get_num_threads()`` threads and
   libavif uses Pillow's default (all cores). Both are recorded in
   :func:`machine_info` so a reader can judge the comparison.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import PIL
from PIL import features

from . import anchors
from codec.metrics import bpp
from .report import METALIC_CURVE
from .runners import MetalicRunner

__all__ = ["machine_info", "median_time", "time_image", "summarize_timing"]


def machine_info() -> dict[str, Any]:
    """Name the machine the timings come from (CPU model, cores, threads, versions)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # not Linux: platform.processor() is the best we have
    import torch

    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "libavif": features.version("avif") if features.check("avif") else None,
    }
    info["description"] = f"{cpu}, {info['cores']} cores, torch {info['torch_threads']} threads, {info['platform']}"
    return info


def median_time(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Median wall time of ``runs`` calls of ``fn`` after one untimed warm-up call.

    The warm-up absorbs one-off costs (lazy imports, allocator growth, torch
    kernel selection) that a service pays once per process, not per image.

    Returns:
        tuple ``(seconds, result of the warm-up call)``.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    result = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def time_image(
    img: np.ndarray,
    metalic: MetalicRunner | None,
    lmbda: float,
    codecs: Sequence[str] = ("avif",),
    runs: int = 5,
    target_bpp: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Median encode and decode times for metalic and each anchor on one image.

    Args:
        img: np.ndarray. HxWx3 uint8 RGB.
        metalic: MetalicRunner or None. None times the anchors alone, at ``target_bpp``.
        lmbda: float. metalic's rate parameter.
        codecs: sequence of str. Anchors to time next to metalic.
        runs: int. Timed runs per measurement (plus one warm-up).
        target_bpp: float or None. Rate for the anchors; None uses metalic's.

    Returns:
        dict. Codec -> ``{"param", "bpp", "encode_s", "decode_s"}``; anchors
        also get ``encode_ratio`` and ``decode_ratio`` = metalic time / anchor
        time (above 1: metalic is slower) when metalic was timed.
    """
    height, width = img.shape[:2]
    out: dict[str, dict[str, Any]] = {}
    if metalic is not None:
        enc_s, data = median_time(lambda: metalic.encode(img, lmbda), runs)
        dec_s, _ = median_time(lambda: metalic.decode(data), runs)
        rate = bpp(len(data), width, height)
        out[METALIC_CURVE] = {"param": lmbda, "bpp": rate, "encode_s": enc_s, "decode_s": dec_s}
        target_bpp = rate if target_bpp is None else target_bpp
    if target_bpp is None:
        raise ValueError("target_bpp is required when metalic is not timed")
    for codec in codecs:
        param, data = anchors.search_param(codec, img, target_bpp)
        enc_s, _ = median_time(lambda: anchors.encode(codec, img, param), runs)
        dec_s, _ = median_time(lambda: anchors.decode(data), runs)
        row = {"param": param, "bpp": bpp(len(data), width, height), "encode_s": enc_s, "decode_s": dec_s}
        if METALIC_CURVE in out:
            row["encode_ratio"] = out[METALIC_CURVE]["encode_s"] / enc_s
            row["decode_ratio"] = out[METALIC_CURVE]["decode_s"] / dec_s
        out[codec] = row
    return out


def summarize_timing(per_image: Sequence[Mapping[str, Mapping[str, Any]]], runs: int) -> dict[str, Any]:
    """Median over images of per-image medians and ratios, with the machine named."""
    median: dict[str, dict[str, Any]] = {}
    codecs = list(dict.fromkeys(codec for row in per_image for codec in row))
    for codec in codecs:
        rows = [row[codec] for row in per_image if codec in row]
        median[codec] = {
            key: statistics.median(r[key] for r in rows)
            for key in ("bpp", "encode_s", "decode_s", "encode_ratio", "decode_ratio")
            if all(key in r for r in rows)
        }
    return {"runs": runs, "machine": machine_info(), "median": median}
