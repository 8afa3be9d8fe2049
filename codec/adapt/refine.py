"""Latent refinement (M1): per-image gradient descent on the latents at test time.

The networks and the entropy model stay fixed; only the latent tuple (y and z
for hyperprior models, y for factorized ones) moves, to lower the image's own
rate-distortion cost. The decoder is unchanged, so a refined file decodes with
the ordinary decoder.
"""

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..backends import hard_round
from ..train.amp import bf16_supported

ROUNDINGS = ("sga", "noise", "ste")
"""Relaxed roundings :func:`make_rounding` knows (the same names as ``codec.options.ROUNDINGS``)."""

DEFAULT_LR = 0.05
"""Latent units (quantization bins) per step. Adam's step size on the latents.

Campos et al. use 1e-3 for 1500 steps; the presets run 60-400 steps, so the
step is larger and decays (cosine) to ``LR_FINAL_RATIO`` of itself."""

LR_FINAL_RATIO = 0.1
"""Ratio. Learning rate at the last step relative to the first."""

SGA_TAU_MAX = 0.5
"""Temperature. SGA's starting (and largest) temperature, as in Yang et al. 2020."""

SGA_TAU_MIN = 0.05
"""Temperature. SGA's temperature at the last step: nearly hard rounding."""

SGA_HOLD = 0.2
"""Fraction of the steps. SGA keeps ``SGA_TAU_MAX`` this long before annealing (Yang et al.'s t0)."""


def _sga(v: torch.Tensor, tau: float) -> torch.Tensor:
    """Stochastic Gumbel annealing of one tensor (Yang et al. 2020, eq. 5).

    Each value picks floor or ceil by a two-class Gumbel-softmax whose logits
    are ``-atanh(distance)/tau``: near an integer it almost surely rounds there,
    and as tau → 0 the sample becomes the hard rounding.
    """
    eps = 1e-5
    lo = torch.floor(v)
    d_lo = (v - lo).clamp(-1 + eps, 1 - eps)
    d_hi = (lo + 1 - v).clamp(-1 + eps, 1 - eps)
    logits = torch.stack([-torch.atanh(d_lo), -torch.atanh(d_hi)], -1) / tau
    gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp(1e-10, 1 - 1e-7)))
    w = torch.softmax((logits + gumbel) / tau, -1)
    return lo + w[..., 1]


class Rounding:
    """A relaxed rounding for refinement, selectable by name.

    * ``noise``: additive uniform noise U(-1/2, 1/2) (Ballé et al.; the relaxation
      Campos et al. 2019 refine with).
    * ``ste``: hard rounding forward, identity gradient (straight-through).
    * ``sga``: stochastic Gumbel annealing (Yang et al., "Improving Inference
      for Neural Image Compression", NeurIPS 2020), temperature annealed by
      :meth:`set_step`: ``tau = SGA_TAU_MAX`` for the first ``SGA_HOLD`` of the
      steps, then exponentially down to ``SGA_TAU_MIN`` at the last step.

    Instances are :data:`codec.backends.RoundFn`: ``(residual, "y"|"z") → tensor``.
    """

    def __init__(self, mode: str, steps: int = 1):
        if mode not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {mode!r}")
        self.mode, self.steps = mode, max(1, steps)
        self.tau = SGA_TAU_MAX

    def set_step(self, step: int) -> None:
        hold = SGA_HOLD * self.steps
        f = max(0.0, (step - hold) / max(1.0, self.steps - 1 - hold))
        self.tau = SGA_TAU_MAX * (SGA_TAU_MIN / SGA_TAU_MAX) ** min(1.0, f)

    def __call__(self, v: torch.Tensor, kind: str) -> torch.Tensor:
        if self.mode == "noise":
            return v + torch.empty_like(v).uniform_(-0.5, 0.5)
        if self.mode == "ste":
            return v + (torch.round(v) - v).detach()
        return _sga(v, self.tau)


@dataclass
class RDCost:
    """Hard-quantized RD cost of latents, from the entropy model (no entropy coding).

    ``cost = bpp + λ·255²·mse``; bpp counts estimated bits over the *original*
    pixel count and mse is measured on the original (unpadded) region, as the
    real file will be.
    """

    cost: float
    bpp: float
    mse: float

    @property
    def psnr(self) -> float:
        return 10 * math.log10(1 / max(self.mse, 1e-12))


@dataclass
class RefineResult:
    """What :func:`refine_latents` returns.

    Attributes:
        latents: tuple of Tensor. The best hard-cost iterate (detached, float32).
        start: RDCost. Hard cost of the starting latents.
        best: RDCost. Hard cost of ``latents`` (never above ``start``).
        best_step: int. Step that produced ``latents`` (0 = the start).
        steps: int. Steps run.
        seconds: float. Wall time.
        amp: bool. Whether bf16 autocast ran the transforms.
        history: list of (step, RDCost). Every hard evaluation.
    """

    latents: tuple
    start: RDCost
    best: RDCost
    best_step: int
    steps: int
    seconds: float
    amp: bool
    history: list = field(default_factory=list, repr=False)


def _distortion(x_hat: torch.Tensor, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return (x_hat[..., :h, :w].float() - x[..., :h, :w]).pow(2).mean()


@torch.no_grad()
def hard_cost(backend, x: torch.Tensor, latents: tuple, rate_index: int, lmbda: float, h: int, w: int) -> RDCost:
    """The RD cost the latents would have once hard-quantized (float32, estimated bits).

    The reconstruction is clamped to [0, 1] as the decoder does.
    """
    x_hat, bits = backend.rd_terms(latents, rate_index, hard_round)
    mse = _distortion(x_hat.clamp(0, 1), x, h, w).item()
    bpp = bits.item() / (h * w)
    return RDCost(bpp + lmbda * 255**2 * mse, bpp, mse)


def use_amp(device, amp: bool | None) -> bool:
    """bf16 autocast for refinement: on when the device runs bf16 natively (AMX, CUDA)."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    return bf16_supported(dev) if amp is None else amp


def refine_latents(backend, x: torch.Tensor, latents: tuple, rate_index: int, steps: int, *,
                   lmbda: float | None = None, rounding: str = "sga", lr: float = DEFAULT_LR,
                   size: tuple[int, int] | None = None, eval_every: int = 5, amp: bool | None = None,
                   seed: int = 0, progress: Callable[[int, int, RDCost], None] | None = None) -> RefineResult:
    """Refines latents by Adam on R + λ·255²·D under a relaxed rounding (M1).

    Campos et al., "Content Adaptive Optimization for Neural Image Compression"
    (CVPRW 2019), Algorithm 1, on y *and* z (the hyper-latent is refined too,
    as in Yang et al. 2020), with the relaxed rounding selectable
    (:class:`Rounding`). The best *hard-quantized* RD cost seen is tracked
    (evaluated every ``eval_every`` steps and at the end) and that iterate is
    returned, so the result is never worse than the start under the same cost.

    ::

        latents ──► round_fn ──► rd_terms ──► bits/px + λ·255²·MSE ──► Adam ─┐
           ▲                                                                │
           └────────────────────────────────────────────────────────────────┘
        every eval_every steps: hard cost (round) → keep the best iterate

    Args:
        backend: a :mod:`codec.backends` backend with ``supports_refine``.
        x: Tensor (1, 3, H, W) in [0, 1], padded to the model's multiple.
        latents: tuple of Tensor. Starting latents (not modified).
        rate_index: int. Rate parameter the transforms and entropy model run at.
        steps: int. Adam steps (0 only evaluates the start).
        lmbda: float or None. λ of the loss; None takes the backend's λ at
            ``rate_index``. Rate control moves it (L²C adjusts the loss weights).
        rounding: str. "sga", "noise" or "ste".
        lr: float. Adam's initial step size; decays (cosine) to ``LR_FINAL_RATIO`` of it.
        size: (h, w) or None. Original image size; None means x is not padded.
        eval_every: int. Steps between hard evaluations.
        amp: bool or None. True runs the transforms under bf16 autocast (the
            entropy terms stay float32); None decides by :func:`use_amp`.
        seed: int. Seeds the rounding noise, so an encode is reproducible.
        progress: callable (step, steps, RDCost) or None. Called at each hard evaluation.

    Returns:
        RefineResult. The best iterate and its cost.
    """
    t0 = time.perf_counter()
    h, w = size or tuple(x.shape[-2:])
    lmbda = backend.rate_lambda(rate_index) if lmbda is None else lmbda
    amp = use_amp(x.device, amp)
    start_latents = tuple(t.detach().float() for t in latents)
    start = hard_cost(backend, x, start_latents, rate_index, lmbda, h, w)
    best, best_latents, best_step, history = start, start_latents, 0, [(0, start)]
    if steps <= 0:
        return RefineResult(best_latents, start, best, 0, 0, time.perf_counter() - t0, amp, history)

    params = [t.clone().requires_grad_(True) for t in start_latents]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * LR_FINAL_RATIO)
    round_fn = Rounding(rounding, steps)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the rounding noise; restored afterwards so callers' RNG is untouched
    dev = x.device.type
    try:
        for step in range(1, steps + 1):
            round_fn.set_step(step - 1)
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
                x_hat, bits = backend.rd_terms(tuple(params), rate_index, round_fn)
            # the loss itself in float32: bits come out float32, x_hat may be bf16
            loss = bits.float() / (h * w) + lmbda * 255**2 * _distortion(x_hat, x, h, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % eval_every == 0 or step == steps:
                c = hard_cost(backend, x, params, rate_index, lmbda, h, w)
                history.append((step, c))
                if c.cost < best.cost:
                    best, best_step = c, step
                    best_latents = tuple(p.detach().clone() for p in params)
                if progress is not None:
                    progress(step, steps, best)
    finally:
        torch.random.set_rng_state(gen_state)
    return RefineResult(best_latents, start, best, best_step, steps, time.perf_counter() - t0, amp, history)
