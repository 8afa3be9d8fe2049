"""The scale index of every y symbol, the same on every machine.

Each y symbol is coded with the CDF that the index of its predicted scale in
the scale table selects, so the encoder and every decoder must take the same
index, or the string decodes to other symbols (and the canonical check of
:mod:`codec.rans` refuses it). The hyper-synthesis is float32 convolution,
whose last bits depend on the CPU's kernels (oneDNN picks AVX2, AVX-512 or
AMX code; kodim23's scales computed by its SSE4.1 and AVX2 kernels differ
by up to 5.7e-5 relative): a scale within that of a table edge falls
on one side on one machine and on the other side on another. A stream
encoded on an AMX machine did fail to decode on an AVX2-only one.

So the index comes from a value that is the same everywhere to far below the
margin that matters:

1. The layers before the last run in float64 (machines differ there by
   float64 rounding, about 1e-16); their output, cast to float32, feeds the
   last convolution in float32, which gives the scales and means.
2. A scale within :data:`INDEX_MARGIN` (relative) of a table edge is
   recomputed as a float64 dot product over its receptive field, and its
   index taken from that value.

Every machine sorts every scale alike: a float32 scale farther than the
margin from an edge lies on the same side as the float64 value (a machine's
float32 error is orders of magnitude below the margin), and one nearer is
settled by float64 everywhere. The means stay float32: they shift ŷ, never
which symbols decode.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

INDEX_MARGIN = 1e-4
"""Relative. A float32 scale this close to a table edge is recomputed in float64. From the float64
head's input, the last layer's float32 scales differ between oneDNN's SSE4.1 and AVX2 kernels by up to
6.9e-7 relative (kodim23; 5.7e-5 when the whole h_s is float32), 145 times below this; the table's
steps are 13% apart, so a few tenths of a percent of the scales are recomputed."""

CHUNK = 2048
"""Scales recomputed per gather: bounds the float64 patches in memory (2048 x 9 x 288 x 8 bytes = 42 MB)."""


def near_edges(scales: torch.Tensor, edges: torch.Tensor, margin: float = INDEX_MARGIN) -> torch.Tensor:
    """Which scales lie within ``margin`` (relative) of an edge of the ascending table ``edges``."""
    k = torch.searchsorted(edges, scales.contiguous())
    above = edges[k.clamp(max=len(edges) - 1)]
    below = edges[(k - 1).clamp(min=0)]
    return ((k < len(edges)) & (above - scales < margin * above)) | ((k > 0) & (scales - below < margin * below))


def settle(indexes: torch.Tensor, scales: torch.Tensor, edges: torch.Tensor, floor: float,
           exact: Callable[[torch.Tensor], torch.Tensor], margin: float = INDEX_MARGIN,
           near: torch.Tensor | None = None) -> torch.Tensor:
    """``indexes`` (of the float32 ``scales`` in ``edges``) with every scale near an edge re-indexed from ``exact``.

    Args:
        indexes: Tensor int32, the float32 scales' indexes (changed in place and returned).
        scales: Tensor float32, same shape.
        edges: Tensor (L,) float32, ascending: the scale table without its last entry.
        floor: float. The scales' lower bound (a scale below it takes index 0).
        exact: callable, bool mask -> float64 values of the masked scales, in ``mask.nonzero()`` order.
        near: Tensor bool or None. ``near_edges(scales, edges, margin)`` when the caller has it already.
    """
    near = near_edges(scales, edges, margin) if near is None else near
    if bool(near.any()):
        indexes[near] = torch.searchsorted(edges.double(), exact(near).clamp_min(floor)).int()
    return indexes


def _check_last(last: nn.Module) -> None:
    ok = (isinstance(last, nn.Conv2d) and last.kernel_size == (3, 3) and last.stride == (1, 1)
          and last.padding == (1, 1) and last.dilation == (1, 1) and last.groups == 1 and last.bias is not None)
    if not ok:
        raise NotImplementedError(f"exact scale indexes need a 3x3, stride-1, padding-1 convolution last, "
                                  f"not {last}")


def recompute(x64: torch.Tensor, last: nn.Conv2d, where: torch.Tensor) -> torch.Tensor:
    """The outputs of ``last`` at ``where`` (B, C_out, H, W bool), in float64 from its float64 input ``x64``.

    Returns:
        Tensor (n,) float64, in the order of ``where.nonzero()``.
    """
    _check_last(last)
    b, k, h, w = x64.shape
    # position-major rows of the padded input: each tap of a scale gathers whole K-vectors
    rows = F.pad(x64, (1, 1, 1, 1)).permute(0, 2, 3, 1).reshape(-1, k)
    weight = last.weight.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).reshape(last.out_channels, 9, k)
    bias = last.bias.detach().to("cpu", torch.float64)
    taps = (torch.arange(3)[:, None] * (w + 2) + torch.arange(3)[None, :]).reshape(1, 9)
    out = []
    for part in where.nonzero().split(CHUNK):
        n, c, i, j = part.unbind(1)
        at = ((n * (h + 2) + i) * (w + 2) + j)[:, None] + taps  # (n, 9) rows of each scale's 3x3 window
        patches = rows.index_select(0, at.reshape(-1)).reshape(-1, 9, k)
        out.append((patches * weight.index_select(0, c)).sum((1, 2)) + bias[c])
    return torch.cat(out) if out else x64.new_zeros(0)
