"""Latent refinement (M1): per-image gradient descent on the latents at test time.

The networks and the entropy model stay fixed; only the latent tuple (y and z
for hyperprior models, y for factorized ones) moves, to lower the image's own
rate-distortion cost. The decoder is unchanged, so a refined file decodes with
the ordinary decoder.

:func:`refine_latents` is the loop; :class:`Rounding` the relaxed roundings
(noise, STE, SGA); the objectives (:class:`FixedLambda`, :class:`TargetRate`,
:class:`TargetQuality`) decide which hard-evaluated iterate is kept and, for
rate control, steer the loss λ while refining.

Measured on an early (2500-step) training snapshot of the default model, on
256 px Kodak crops at λ = 0.0067: in 60 steps SGA lowered the real RD cost by
11-22 %, uniform noise by 9-14 %, STE by 6-11 %, and lr 0.05 beat 0.1 (and
0.02 at 40 steps). bf16 autocast reached the same final cost as float32
(3.120 vs 3.125, 40 steps) at about 20 % less time per step on an AMX CPU.

Cost per step (issue 15; one thread, 768x512 Kodak, CPU time beside a
training run): the synthesis forward and backward are most of it, and
oneDNN runs them (bf16) about 1.4x faster with channels_last weights, so the
steps and the hard-cost estimates run on the backend's channels_last copy
(:meth:`codec.backends.VariableRateBackend.refine_view`), the estimates
under bf16 autocast too (0.06 s against 0.15 s in float32); the coded file,
which decides, is measured by the exact float32 synthesis. On that copy
the synthesis at the refinement's one λ is folded (:mod:`codec.adapt.folded`:
modulations inside the convolutions, a sub-pixel last layer, a written-out
inverse-GDN backward), and the hyper-latent is held (:data:`Z_HOLD`: from the
start on the 64/192 default), so the steps skip the hyper-synthesis. Fewer steps
cost RD: on the session-2 model 60 or 64 steps instead of 90 lost 2.7-3.6 points of
RD cost on kodim23, and on the 64/192 default 60 steps lost 1-3 % of rate on
kodim01 and kodim05; ``balanced`` runs 72, which with the held hyper-latent still
beats the old 90-step encoder's RD (``bench encode-ab`` times a preset against an
older revision; docs/BENCHMARKS.md, session 10).
"""

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..amp import bf16_supported
from ..backends import hard_round
from .folded import folded_view
from .goal import Goal

ROUNDINGS = ("sga", "noise", "ste")
"""Relaxed roundings :class:`Rounding` knows (the same names as ``codec.options.ROUNDINGS``)."""

DEFAULT_LR = 0.05
"""Latent units (quantization bins) per step. Adam's step size on the latents.

Campos et al. use 1e-3 for 1500 steps; the presets run 60-400 steps, so the
step is larger and decays (cosine) to ``LR_FINAL_RATIO`` of itself."""

SHORT_RUN_STEPS = 250
"""Iterations. Runs shorter than this take a larger step (:func:`default_lr`)."""

SHORT_RUN_LR_CAP = 1.6
"""Ratio. Largest step of a short run relative to ``DEFAULT_LR``."""


def default_lr(steps: int) -> float:
    """Adam's step size for a run of ``steps`` iterations.

    ``DEFAULT_LR`` · min(1.6, √(250 / steps)), never below ``DEFAULT_LR``: a short
    run must cover ground quickly. Measured on the shipped model, four Kodak
    384x256 crops, λ = 0.0067 (real RD cost against the forward pass): 80 steps
    -14.3 % at 0.05 and -15.2 % at 0.08; 100 steps -15.9 % at 0.05 and -16.6 % at
    0.08; 60 steps at 0.2 only -2.9 %; 400 steps at 0.05 -22.2 %.
    """
    return DEFAULT_LR * min(SHORT_RUN_LR_CAP, max(1.0, math.sqrt(SHORT_RUN_STEPS / max(1, steps))))


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

    A two-class softmax is a sigmoid of the logit difference, and the
    difference of two independent standard Gumbel variables is a standard
    logistic one, ``log u - log(1 - u)``: the same sample distribution as the
    stacked softmax, from half the random numbers and without a softmax over a
    last axis of 2.
    """
    eps = 1e-5
    lo = torch.floor(v)
    d_lo = (v - lo).clamp(-1 + eps, 1 - eps)
    d_hi = (lo + 1 - v).clamp(-1 + eps, 1 - eps)
    u = torch.rand_like(v).clamp(1e-7, 1 - 1e-7)
    logit = (torch.atanh(d_lo) - torch.atanh(d_hi)) / tau + torch.log(u) - torch.log1p(-u)
    return lo + torch.sigmoid(logit / tau)



Z_HOLD = 0.0
"""Fraction of the steps. From here on the hyper-latent z is held, hard-rounded, and only y moves
(1.0: z moves to the end; 0.0: z keeps the analysis' value). Held, its entropy parameters are
constant, so the hyper-synthesis no longer runs forward or backward each step (the folded view
keeps them, :mod:`codec.adapt.folded`), and y fits the ẑ the file will carry.

On the session-2 model (a 384x256 crop of kodim01, 90 steps, real RD cost against the forward
pass) holding z from half-way beat moving it to the end (λ 0.002 -13.02 % against -12.73 %). On
the 64/192 default (whole kodim01 and kodim02, ``balanced`` at λ 0.002/0.0067/0.02, real files)
z never moving beat both: BD-rate against the hold from half-way -0.96 % and -3.16 %, where a hold
from a quarter gave +0.59 % and +3.25 %; and without z's gradient every step skips the
hyper-synthesis' backward (4.2 GFLOP forward and as much backward on a Kodak image, beside the
synthesis' 9.2), about 15 % of the refinement's time."""

Z_HOLD_MIN_STEPS = 60
"""Iterations. Shorter runs keep z moving to the end: the hold was measured on 90-step
runs, and in a few steps there is little to save."""


def hold_hyper(params: list, round_fn: "Rounding") -> None:
    """Stops the hyper-latents (every latent after y) moving: Adam skips a tensor without a gradient."""
    for p in params[1:]:
        p.requires_grad_(False)
        p.grad = None
    round_fn.hard_z = True

class Rounding:
    """A relaxed rounding for refinement, selectable by name.

    * ``noise``: additive uniform noise U(-1/2, 1/2) (Ballé et al.; the relaxation
      Campos et al. 2019 refine with).
    * ``ste``: hard rounding forward, identity gradient (straight-through).
    * ``sga``: stochastic Gumbel annealing (Yang et al., "Improving Inference
      for Neural Image Compression", NeurIPS 2020), temperature annealed by
      :meth:`set_step`: ``tau = tau_max`` (``SGA_TAU_MAX``) for the first
      ``SGA_HOLD`` of the steps, then exponentially down to ``SGA_TAU_MIN`` at
      the last step. A warm restart passes a lower ``tau_max``: a high
      temperature would first scatter latents that are already refined.

    Instances are :data:`codec.backends.RoundFn`: ``(residual, "y"|"z") → tensor``.
    """

    def __init__(self, mode: str, steps: int = 1, tau_max: float = SGA_TAU_MAX):
        if mode not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {mode!r}")
        self.mode, self.steps, self.tau_max = mode, max(1, steps), max(tau_max, SGA_TAU_MIN)
        self.tau = self.tau_max
        self.hard_z = False  # set once the hyper-latent is held (:data:`Z_HOLD`)

    def set_step(self, step: int) -> None:
        hold = SGA_HOLD * self.steps
        f = max(0.0, (step - hold) / max(1.0, self.steps - 1 - hold))
        self.tau = self.tau_max * (SGA_TAU_MIN / self.tau_max) ** min(1.0, f)

    def __call__(self, v: torch.Tensor, kind: str) -> torch.Tensor:
        if self.hard_z and kind == "z":
            return torch.round(v)
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
        best: RDCost. Hard cost of ``latents``; never worse than ``start``
            under the objective (with FixedLambda: ``best.cost <= start.cost``).
        best_step: int. Step that produced ``latents`` (0 = the start).
        steps: int. Steps run.
        seconds: float. Wall time.
        amp: bool. Whether bf16 autocast ran the transforms.
        lmbda: float. Loss λ at the end (moved by a steered objective).
        last: tuple of Tensor. The final iterate (a warm start for another
            rate-control round, which may continue from where the steering got).
        history: list of (step, RDCost). Every hard evaluation.
    """

    latents: tuple
    start: RDCost
    best: RDCost
    best_step: int
    steps: int
    seconds: float
    amp: bool
    lmbda: float
    last: tuple = field(repr=False)
    history: list = field(default_factory=list, repr=False)


def _distortion(x_hat: torch.Tensor, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return (x_hat[..., :h, :w].float() - x[..., :h, :w]).pow(2).mean()


@torch.no_grad()
def hard_cost(backend, x: torch.Tensor, latents: tuple, rate_index: int, lmbda: float, h: int, w: int,
              amp: bool = False) -> RDCost:
    """The RD cost the latents would have once hard-quantized (estimated bits).

    The reconstruction is clamped to [0, 1] as the decoder does. ``amp`` runs
    the transforms under bf16 autocast (the likelihoods stay float32): the
    refinement's cheap proxy for ranking its iterates, which the coded file
    then measures exactly.
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        x_hat, bits = backend.rd_terms(latents, rate_index, hard_round)
    mse = _distortion(x_hat.clamp(0, 1), x, h, w).item()
    bpp = bits.item() / (h * w)
    return RDCost(bpp + lmbda * 255**2 * mse, bpp, mse)


def use_amp(device, amp: bool | None) -> bool:
    """bf16 autocast for refinement: on when the device runs bf16 natively (AMX, CUDA)."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    return bf16_supported(dev) if amp is None else amp


class FixedLambda:
    """Refinement objective at a fixed λ: the best iterate is the lowest hard RD cost.

    Objectives tell :func:`refine_latents` which hard-evaluated iterate is best
    (:meth:`key`, smaller is better) and how to move the loss λ between
    evaluations (:meth:`next_lambda`); :meth:`calibrate` sees the start's cost.
    """

    def calibrate(self, start: RDCost) -> None:
        pass

    def key(self, c: RDCost) -> tuple:
        return (0, c.cost)

    def next_lambda(self, step: int, steps: int, c: RDCost, lmbda: float) -> float:
        return lmbda


class _Steered(FixedLambda):
    """Shared λ controller: log λ moves by ``gain · error`` per evaluation until
    ``STEER_UNTIL`` of the steps, then stays, so the last iterates settle at one λ."""

    def __init__(self, lmbda_range: tuple[float, float]):
        self.lo, self.hi = (math.log(v) for v in lmbda_range)

    def _move(self, step: int, steps: int, lmbda: float, delta_log: float) -> float:
        if step > STEER_UNTIL * steps:
            return lmbda
        cap = math.log(STEER_MAX_RATIO)
        return math.exp(min(self.hi, max(self.lo, math.log(lmbda) + max(-cap, min(cap, delta_log)))))


STEER_UNTIL = 0.75
"""Fraction of the steps. A steered objective moves λ until here, then holds it."""

STEER_MAX_RATIO = 1.5
"""Ratio. Largest change of the loss λ between two evaluations."""

STEER_RATE_GAIN = 4.0
"""d log λ per unit of log-rate error, per evaluation. Within a short
refinement the rate answers the loss λ weakly (d log bpp / d log λ ≈ 0.2) and
with a lag; a gain near the inverse slope, capped by STEER_MAX_RATIO per
evaluation, brings it to the target in a few evaluations without oscillating."""

STEER_PSNR_GAIN = 1.0
"""d log λ per dB of PSNR error, per evaluation (within a short refinement the
PSNR moves about 1 dB per unit of log λ)."""


class TargetRate(_Steered):
    """Objective for a bpp target: steer the loss λ so the *predicted real* rate
    meets ``aim``, and keep the best-PSNR iterate inside ``band``.

    The real file differs from the entropy model's estimate by the header and
    the coder's overhead; :meth:`calibrate` measures that offset on the start,
    whose real size is known (``start_bpp``), and adds it to every estimate.
    Iterates are ranked by the encode's rule (:class:`codec.adapt.goal.Goal`)
    about ``aim`` with ``band``: inside it the best PSNR, outside it the closer
    rate, overshoot counted double.

    Args:
        aim: float. bpp the coded refinement should have.
        band: float. bpp either side of ``aim`` accepted.
        start_bpp: float. Real bpp of the starting latents (as coded).
        lmbda_range: (float, float). Bounds of the loss λ.
    """

    def __init__(self, aim: float, band: float, start_bpp: float, lmbda_range: tuple[float, float]):
        if not aim > 0 or not band > 0:
            # the steering moves log λ by log(aim / rate): a rate at or below zero has no logarithm
            raise ValueError(f"a rate objective needs a positive aim and band, got aim={aim!r}, band={band!r}")
        super().__init__(lmbda_range)
        self.aim, self.band, self.start_bpp, self.offset = aim, band, start_bpp, 0.0
        self.goal = Goal("bpp", aim, band / aim)

    def calibrate(self, start: RDCost) -> None:
        self.offset = self.start_bpp - start.bpp

    def predict(self, c: RDCost) -> float:
        return max(c.bpp + self.offset, 1e-6)

    def key(self, c: RDCost) -> tuple:
        return self.goal.rank(self.predict(c), c.psnr)

    def next_lambda(self, step, steps, c, lmbda):
        return self._move(step, steps, lmbda, STEER_RATE_GAIN * math.log(self.aim / self.predict(c)))


class TargetQuality(_Steered):
    """Objective for a PSNR target: steer λ so the predicted real PSNR is ``aim``
    (the target plus a margin), and keep the smallest iterate predicted to meet
    ``floor`` (the target); the offset of real to estimated PSNR (8-bit
    rounding) is calibrated on the start as in :class:`TargetRate`.

    Args:
        aim: float. dB to steer to.
        floor: float. dB an iterate must reach to count as meeting the target.
        start_psnr: float. Real PSNR of the starting latents (as coded).
        lmbda_range: (float, float). Bounds of the loss λ.
    """

    def __init__(self, aim: float, floor: float, start_psnr: float, lmbda_range: tuple[float, float]):
        super().__init__(lmbda_range)
        self.aim, self.floor, self.start_psnr, self.offset = aim, floor, start_psnr, 0.0
        self.goal = Goal("psnr", floor)

    def calibrate(self, start: RDCost) -> None:
        self.offset = self.start_psnr - start.psnr

    def predict(self, c: RDCost) -> float:
        return c.psnr + self.offset

    def key(self, c: RDCost) -> tuple:
        return self.goal.rank(c.bpp, self.predict(c))

    def next_lambda(self, step, steps, c, lmbda):
        return self._move(step, steps, lmbda, STEER_PSNR_GAIN * (self.aim - self.predict(c)))


def refine_latents(backend, x: torch.Tensor, latents: tuple, rate_index: int, steps: int, *,
                   lmbda: float | None = None, objective: FixedLambda | None = None, rounding: str = "sga",
                   lr: float = DEFAULT_LR, tau_max: float = SGA_TAU_MAX, size: tuple[int, int] | None = None,
                   eval_every: int = 5, amp: bool | None = None, seed: int = 0, z_hold: float | None = None,
                   progress: Callable[[int, int, RDCost], None] | None = None) -> RefineResult:
    """Refines latents by Adam on R + λ·255²·D under a relaxed rounding (M1).

    Campos et al., "Content Adaptive Optimization for Neural Image Compression"
    (CVPRW 2019), Algorithm 1, on y *and* z (the hyper-latent is refined too,
    as in Yang et al. 2020), with the relaxed rounding selectable
    (:class:`Rounding`). The latents are hard-quantized and evaluated every
    ``eval_every`` steps (and at the end), and the best iterate under the
    objective is returned, never the last one by default: the start is one of
    the candidates, so the result is never worse than the start.

    ::

        latents ──► round_fn ──► rd_terms ──► bits/px + λ·255²·MSE ──► Adam ─┐
           ▲                                                                │
           └────────────────────────────────────────────────────────────────┘
        every eval_every steps: hard cost ──► objective: keep the best iterate,
                                              move λ (rate control, L²C III-E)

    With :class:`TargetRate` or :class:`TargetQuality` the loss λ is steered
    during the first STEER_UNTIL of the steps (L²C adjusts "the weighting
    coefficients for the loss terms" to reach a target bitrate).

    Args:
        backend: a :mod:`codec.backends` backend with ``supports_refine``.
        x: Tensor (1, 3, H, W) in [0, 1], padded to the model's multiple.
        latents: tuple of Tensor. Starting latents (not modified).
        rate_index: int. Rate parameter the transforms and entropy model run at.
        steps: int. Adam steps (0 only evaluates the start).
        lmbda: float or None. Initial λ of the loss; None takes the backend's λ
            at ``rate_index``.
        objective: FixedLambda, TargetRate, TargetQuality or None (FixedLambda).
        rounding: str. "sga", "noise" or "ste".
        lr: float. Adam's initial step size; decays (cosine) to ``LR_FINAL_RATIO`` of it.
        tau_max: float. SGA's starting temperature (lower for a warm restart).
        size: (h, w) or None. Original image size; None means x is not padded.
        eval_every: int. Steps between hard evaluations.
        amp: bool or None. True runs the transforms under bf16 autocast (the
            entropy terms stay float32); None decides by :func:`use_amp`.
        seed: int. Seeds the rounding noise, so an encode is reproducible.
        progress: callable (step, steps, RDCost) or None. Called at each hard evaluation.

    Returns:
        RefineResult. The best iterate, its cost and the final loss λ.
    """
    t0 = time.perf_counter()
    h, w = size or tuple(x.shape[-2:])
    lmbda = backend.rate_lambda(rate_index) if lmbda is None else lmbda
    objective = objective or FixedLambda()
    amp = use_amp(x.device, amp)
    # the steps and estimates run on a faster copy of the transforms; the caller codes the pick exactly
    backend = folded_view(backend, rate_index)
    start_latents = tuple(t.detach().float() for t in latents)
    start = hard_cost(backend, x, start_latents, rate_index, lmbda, h, w, amp)
    objective.calibrate(start)
    best, best_latents, best_step, history = start, start_latents, 0, [(0, start)]
    if steps <= 0:
        return RefineResult(best_latents, start, best, 0, 0, time.perf_counter() - t0, amp, lmbda, best_latents,
                            history)

    params = [t.clone().requires_grad_(True) for t in start_latents]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * LR_FINAL_RATIO)
    round_fn = Rounding(rounding, steps, tau_max)
    z_hold = Z_HOLD if z_hold is None else z_hold
    z_from = max(1, math.ceil(z_hold * steps)) if len(params) > 1 and z_hold < 1 and steps >= Z_HOLD_MIN_STEPS else None
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the rounding noise; restored afterwards so callers' RNG is untouched
    dev = x.device.type
    try:
        for step in range(1, steps + 1):
            round_fn.set_step(step - 1)
            if step == z_from:
                hold_hyper(params, round_fn)
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
                x_hat, bits = backend.rd_terms(tuple(params), rate_index, round_fn)
            # the loss itself in float32: bits come out float32, x_hat may be bf16
            loss = bits.float() / (h * w) + lmbda * 255**2 * _distortion(x_hat, x, h, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % eval_every == 0 or step == steps:
                c = hard_cost(backend, x, params, rate_index, lmbda, h, w, amp)
                history.append((step, c))
                if objective.key(c) < objective.key(best):
                    best, best_step = c, step
                    best_latents = tuple(p.detach().clone() for p in params)
                lmbda = objective.next_lambda(step, steps, c, lmbda)
                if progress is not None:
                    progress(step, steps, c)
    finally:
        torch.random.set_rng_state(gen_state)
    last = tuple(p.detach() for p in params)
    return RefineResult(best_latents, start, best, best_step, steps, time.perf_counter() - t0, amp, lmbda, last,
                        history)
