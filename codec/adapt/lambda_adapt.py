"""Online λ_k adaptation (M4): per-image tuning of the decoder's K modulation values.

The latents are fixed (already hard-quantized), so the rate does not move; only
the decoder's conditioning changes, and the K values travel in the container
as λ-grid indices (1 + 2K bytes).
"""

import math
import time
from dataclasses import dataclass

import torch

from ..constants import NUM_DECODER_BLOCKS
from ..rate import index_to_lambda, lambda_to_index
from .refine import use_amp

DEFAULT_LR = 0.1
"""log λ units per step. Adam's step size on log λ_k (a factor e^0.1 ≈ 1.1 per step at most)."""


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
    lo, hi = (math.log(index_to_lambda(i)) for i in backend.rate_range())
    theta = torch.full((1, NUM_DECODER_BLOCKS), math.log(index_to_lambda(rate_index)), device=x.device,
                       requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    y_hat = y_hat.to(x.device)
    best_theta, best_mse, mse_start, best_step = theta.detach().clone(), math.inf, math.inf, 0
    for step in range(steps + 1):
        # the last pass only measures the final iterate
        with torch.set_grad_enabled(step < steps), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            x_hat = backend.synthesize(y_hat, rate_index, torch.exp(theta))
        mse = (x_hat[..., :h, :w].float().clamp(0, 1) - x[..., :h, :w]).pow(2).mean()
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
