"""Online λ_k adaptation (M4): per-image tuning of the decoder's K modulation values.

The latents are fixed (already hard-quantized), so the rate does not move; only
the decoder's conditioning changes, and the K values travel in the container
as λ-grid indices (1 + 2K bytes).

Measured on training snapshots of the default model (whose modulation MLPs
were trained with every λ_k = λ only): +0.11 to +0.15 dB at λ = 0.002 on
kodim23, +0.02 dB at λ = 0.02 (more gain at low rates, as Jiang et al.
report), and -1.8 % BD-rate alone on two Kodak crops; measuring on one
192 px tile gave the same gain as on the whole image.
"""

import math
import time
from dataclasses import dataclass

import torch

from ..constants import NUM_DECODER_BLOCKS
from ..rate import lambda_to_index
from .refine import use_amp

DEFAULT_LR = 0.2
"""log λ units per step. Adam's step size on log λ_k (a factor e^0.2 ≈ 1.22 per step at
most): Jiang et al. take 5 steps, so each must be able to move λ_k noticeably."""

SAMPLE_PIXELS = 1 << 16
"""Pixels. Image area the steps measure the distortion on. λ_k are K global
numbers, so their gradient needs a sample of the image, not all of it: larger
images are represented by evenly spread tiles of about this total area, which
keeps the stage's cost flat while the rest of the encode grows with the image."""

TILE_CELLS = 12
"""y cells (16 px). Side of one sample tile's measured region (192 px)."""

TILE_MARGIN = 2
"""y cells. Context synthesized around a tile: the synthesis reaches ±30 px, so
the tile's measured region is exactly what the full synthesis gives."""

_CELL = 16


@dataclass
class LambdaResult:
    """What :func:`adapt_lambda` returns.

    Attributes:
        lambda_k: tuple of int. K λ-grid indices (quantized: the decoder's numbers).
        mse_start: float. MSE with every λ_k = λ (original region, unclamped float).
        mse_best: float. MSE at the best iterate before quantization.
        best_step: int. Step of the best iterate (0 = no change helped).
        steps: int. Steps run.
        seconds: float. Wall time.
    """

    lambda_k: tuple[int, ...]
    mse_start: float
    mse_best: float
    best_step: int
    steps: int
    seconds: float


def adapt_lambda(backend, x: torch.Tensor, y_hat: torch.Tensor, rate_index: int, steps: int, *,
                 lr: float = DEFAULT_LR, size: tuple[int, int] | None = None, amp: bool | None = None) -> LambdaResult:
    """A few Adam steps on log λ_k (k = 1..K) to lower the distortion of fixed latents.

    Jiang et al., "Online Meta Adaptation for Variable-Rate Learned Image
    Compression" (CVPRW 2022): the encoder initializes every λ_k at the target
    λ, updates them by gradient descent on the distortion only (the latents,
    hence the rate, are fixed) and transmits the K updated values.

    ::

        θ_k = log λ  ──► exp ──► g_s(ŷ; λ_1..λ_K) ──► MSE(x, x̂) ──► Adam on θ ─┐
         ▲                                                                    │
         └────────────────────────────────────────────────────────────────────┘
        best θ over the steps ──► λ-grid indices (quantized before anyone measures)

    The iterate with the lowest MSE is kept (each step's forward pass measures
    the current θ for free), and θ is clipped to the backend's rate range so
    the modulation MLPs are never evaluated far outside their training range.

    .. note::
        The caller decides whether to *send* the values: the stage keeps them
        only when the real coded file is better (see :mod:`codec.adapt.stages`),
        since they cost 1 + 2K bytes.

    Args:
        backend: a backend with ``supports_lambda_k`` (the default model).
        x: Tensor (1, 3, H, W) in [0, 1], padded.
        y_hat: Tensor. The hard-quantized latent the decoder will see.
        rate_index: int. λ grid index of the file.
        steps: int. Adam steps.
        lr: float. Adam's step size in log λ.
        size: (h, w) or None. Original image size (distortion is measured there).
        amp: bool or None. bf16 autocast for the synthesis (None: when native).

    Returns:
        LambdaResult. ``lambda_k`` are grid indices; all equal to ``rate_index``
        when no step lowered the distortion.
    """
    t0 = time.perf_counter()
    h, w = size or tuple(x.shape[-2:])
    amp = use_amp(x.device, amp)
    lo, hi = (math.log(backend.rate_lambda(i)) for i in backend.rate_range())
    theta = torch.full((1, NUM_DECODER_BLOCKS), math.log(backend.rate_lambda(rate_index)), device=x.device,
                       requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    y_in, x_ref, m = sample_tiles(y_hat.to(x.device), x, h, w)
    # the steps only rank θ; the coded file with the chosen λ_k is measured by the exact synthesis
    fast = backend.refine_view(rate_index)
    th, tw = x_ref.shape[-2:]
    best_theta, best_mse, mse_start, best_step = theta.detach().clone(), math.inf, math.inf, 0
    for step in range(steps + 1):
        # the last pass only measures the final iterate
        with torch.set_grad_enabled(step < steps), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            x_hat = fast.synthesize(y_in, rate_index, torch.exp(theta))
        mse = (x_hat[..., m:m + th, m:m + tw].float().clamp(0, 1) - x_ref).pow(2).mean()
        if step == 0:
            mse_start = mse.item()
        if mse.item() < best_mse:
            best_mse, best_theta, best_step = mse.item(), theta.detach().clone(), step
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        mse.backward()
        opt.step()
        with torch.no_grad():
            theta.clamp_(lo, hi)
    lambda_k = tuple(lambda_to_index(math.exp(v)) for v in best_theta[0].tolist())
    return LambdaResult(lambda_k, mse_start, best_mse, best_step, steps, time.perf_counter() - t0)


def sample_tiles(y_hat: torch.Tensor, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The latent and image regions the λ_k steps measure on.

    Images up to 2·SAMPLE_PIXELS use everything: (y_hat, x[:h, :w]). Larger ones
    give a batch of evenly spread tiles: y crops of TILE_CELLS + 2·TILE_MARGIN
    cells and the matching TILE_CELLS·16 px squares of x (inside the original
    image, never the padding).

    Returns:
        (y (B, M, t, t), x (B, 3, s, s), offset): the synthesized crops' measured
        square starts ``offset`` pixels in; or (y_hat, x[:h, :w], 0).
    """
    hy, wy = y_hat.shape[-2:]
    t, m = TILE_CELLS, TILE_MARGIN
    # tile origins (in cells) whose measured square lies in the image and whose context lies in y
    last_r, last_c = min(hy - t - m, h // _CELL - t), min(wy - t - m, w // _CELL - t)
    # a grid of non-overlapping tiles, centred in the space they can occupy
    rows = list(range(m + max(0, last_r - m) % t // 2, last_r + 1, t))
    cols = list(range(m + max(0, last_c - m) % t // 2, last_c + 1, t))
    n = math.ceil(SAMPLE_PIXELS / (t * _CELL) ** 2)
    if h * w <= 2 * SAMPLE_PIXELS or len(rows) * len(cols) < n:
        return y_hat, x[..., :h, :w], 0
    grid = [(r, c) for r in rows for c in cols]
    pick = [grid[round(i)] for i in torch.linspace(0, len(grid) - 1, n).tolist()]
    ys = torch.cat([y_hat[..., r - m:r + t + m, c - m:c + t + m] for r, c in pick])
    xs = torch.cat([x[..., r * _CELL:(r + t) * _CELL, c * _CELL:(c + t) * _CELL] for r, c in pick])
    return ys, xs, m * _CELL
