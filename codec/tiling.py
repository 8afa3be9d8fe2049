"""Fixed tiles of a latent grid, run in parallel, stitched: a decode that uses every core and stays exact.

With several intra-op threads oneDNN may split a convolution's work in
another way and change the last bit of a result (:mod:`codec.determinism`),
so a parallel decode cannot come from torch's threads. It comes from tiles:
the latent is cut into strips whose number and bounds depend on the latent's
size alone, each strip (with a halo that covers the synthesis' receptive
field) runs on one Python thread with one intra-op thread, and the strips'
interiors are stitched. Every decoder, whatever its core count, computes the
same strips the same way; only how many run at once changes.

Typical workflow::

    strips = plan(h, w)
    x = run(lambda s: synth(y[..., s.rows_in, s.cols_in]), strips, scale=16, workers=torch.get_num_threads())
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import torch

STRIP_CELLS = 24
"""Latent cells. Strips are at least this long along the cut side (384 pixels at 16 pixels a cell),
so the halo (3 cells a cut) stays a small share of the work."""

MAX_STRIPS = 16
"""Count. The most strips an image is cut into (a power of two, like every count :func:`plan` gives)."""

HALO_BEFORE, HALO_AFTER = 1, 2
"""Latent cells. What a strip reads beyond its own cells, above/left and below/right. Each k=5,
stride-2 transposed convolution (padding 2, output padding 1) makes an output pixel o from inputs
(o-2)/2 .. (o+2)/2, so at its own resolution a cut strip loses 1 output pixel before and 2 after its
input's end; over the four synthesis blocks that is 8+4+2+1 = 15 pixels before and 30 after, under
one and two 16-pixel cells. Pointwise layers (modulation, GDN, bias offsets) add nothing."""


@dataclass(frozen=True)
class Strip:
    """One strip: the cells it owns (``rows``, ``cols``) and the cells it reads (``rows_in``, ``cols_in``)."""

    rows: slice
    cols: slice
    rows_in: slice
    cols_in: slice

    def owned(self, scale: int) -> tuple[slice, slice]:
        """Where the owned cells lie in the strip's own output, at ``scale`` pixels a cell."""
        r0, c0 = self.rows.start - self.rows_in.start, self.cols.start - self.cols_in.start
        return (slice(r0 * scale, (r0 + self.rows.stop - self.rows.start) * scale),
                slice(c0 * scale, (c0 + self.cols.stop - self.cols.start) * scale))


def strip_count(length: int) -> int:
    """Strips along a side of ``length`` cells: the largest power of two that keeps them STRIP_CELLS long."""
    n = 1
    while n * 2 <= min(MAX_STRIPS, length // STRIP_CELLS):
        n *= 2
    return n


def whole(h: int, w: int) -> Strip:
    """The whole h x w grid as one strip."""
    return Strip(slice(0, h), slice(0, w), slice(0, h), slice(0, w))


def plan(h: int, w: int) -> list[Strip]:
    """The strips of an h x w latent grid: cut across its longer side, a function of (h, w) only."""
    along_rows = h > w
    length = h if along_rows else w
    n = strip_count(length)
    bounds = [length * i // n for i in range(n + 1)]
    strips = []
    for a, b in zip(bounds, bounds[1:]):
        own, read = slice(a, b), slice(max(0, a - HALO_BEFORE), min(length, b + HALO_AFTER))
        full = slice(0, w if along_rows else h)
        strips.append(Strip(own, full, read, full) if along_rows else Strip(full, own, full, read))
    return strips


_POOL_LOCK = threading.Lock()
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="metalic-strip")
        return _POOLS[workers]


def run_all(fns: list[Callable[[], torch.Tensor]], workers: int = 1) -> list[torch.Tensor]:
    """Each of ``fns`` called once, up to ``workers`` at a time on pool threads; their results in order.

    Each call gets one intra-op thread and the caller's grad mode, so a result
    is the same bits whatever ``workers`` is. Call it with one intra-op thread
    (:func:`codec.determinism.single_thread`): with ``workers`` 1 the calls
    run on the caller's thread.
    """
    grad = torch.is_grad_enabled()
    inference = torch.is_inference_mode_enabled()

    def one(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        # thread-local settings: a pool thread has its own intra-op count and grad mode
        torch.set_num_threads(1)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn()

    if workers > 1 and len(fns) > 1:
        return list(_pool(min(workers, len(fns))).map(one, fns))
    return [fn() for fn in fns]


def run(fn: Callable[[Strip], torch.Tensor], strips: list[Strip], scale: int, workers: int = 1) -> torch.Tensor:
    """``fn`` of every strip, the owned parts stitched into one (B, C, h*scale, w*scale) tensor.

    With ``workers`` > 1 the strips run on that many Python threads (torch
    releases the GIL inside an op), each with one intra-op thread and the
    caller's grad mode; the result is the same bits as ``workers=1``. Call it
    with one intra-op thread (:func:`codec.determinism.single_thread`): the
    strips run on the caller's thread when ``workers`` is 1.
    """
    outs = run_all([lambda s=s: fn(s) for s in strips], workers)
    if len(strips) == 1:
        return outs[0]
    first = outs[0]
    h = max(s.rows.stop for s in strips) * scale
    w = max(s.cols.stop for s in strips) * scale
    out = torch.empty((first.shape[0], first.shape[1], h, w), dtype=first.dtype, device=first.device,
                      memory_format=torch.channels_last)
    for s, o in zip(strips, outs):
        r, c = s.owned(scale)
        out[..., s.rows.start * scale:s.rows.stop * scale, s.cols.start * scale:s.cols.stop * scale] = o[..., r, c]
    return out
