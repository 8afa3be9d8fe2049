"""Evaluation: metrics, BD-rate, classical anchors, RD and speed benchmarks.

No web imports and no dependency on the model code: metalic is reached
through the :class:`MetalicRunner` protocol (see :mod:`bench.runners`).
The ``metalic bench`` CLI commands live in :mod:`bench.rd`.
"""

from typing import Any

from .anchors import ANCHORS, AnchorCodec, available_codecs, encode_at, encode_at_bpp, unavailable_codecs
from .bdrate import bd_psnr, bd_rate
from codec.metrics import bpp, ms_ssim, psnr
from .runners import MetalicRunner, metalic_runner

__all__ = [
    "ANCHORS",
    "AnchorCodec",
    "MetalicRunner",
    "RDConfig",
    "add_bench_subparsers",
    "available_codecs",
    "bd_psnr",
    "bd_rate",
    "bpp",
    "encode_at",
    "encode_at_bpp",
    "load_images",
    "main_rd",
    "metalic_runner",
    "ms_ssim",
    "psnr",
    "run_rd",
    "unavailable_codecs",
]

_RD_NAMES = {"RDConfig", "add_bench_subparsers", "load_images", "main_rd", "run_rd"}


def __getattr__(name: str) -> Any:
    # bench.rd is loaded on first use, not here: importing it eagerly
    # makes ``python -m bench.rd`` warn that the module was imported twice.
    if name in _RD_NAMES:
        from . import rd

        return getattr(rd, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
