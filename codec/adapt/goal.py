"""What an encode aims at, and the one rule that ranks coded results against it (M7).

The rate search, the refinement's steering and the stage picks all compare
candidates with :meth:`Goal.rank`, so "which file is better" has one answer:

* a bpp target: inside the tolerance beats outside; inside, the better PSNR
  wins; outside, the closer rate wins, an overshoot counting double (a file too
  big breaks a budget, one too small only wastes a little quality);
* a PSNR target: meeting it beats missing it; meeting it, the smaller file wins;
* a λ: the lower RD cost ``bpp + λ·255²·MSE``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..options import RATE_TOLERANCE, EncodeOptions

OVERSHOOT_WEIGHT = 2.0
"""Ratio. How much more a relative rate miss above a bpp target counts than one below it."""


@dataclass(frozen=True)
class Goal:
    """A target kind and value, with the tolerance of a bpp target.

    Args:
        kind: str. ``"bpp"``, ``"psnr"`` or ``"lambda"``.
        target: float. bpp, dB or λ.
        tolerance: float. Relative rate band of a bpp target (0.02: ±2%).
    """

    kind: str
    target: float
    tolerance: float = RATE_TOLERANCE

    @classmethod
    def of(cls, opts: EncodeOptions, lmbda: float, rate_control: bool = True) -> Goal:
        """The goal the options name; without ``rate_control``, a target only sets the start and λ decides."""
        if rate_control and opts.target_bpp is not None:
            return cls("bpp", opts.target_bpp)
        if rate_control and opts.target_psnr is not None:
            return cls("psnr", opts.target_psnr)
        return cls("lambda", lmbda)

    def around(self, target: float, tolerance: float) -> Goal:
        """The same rule about another point: refinement aims off the target by the later stages' bytes."""
        return dataclasses.replace(self, target=target, tolerance=tolerance)

    def inside(self, bpp: float) -> bool:
        """True unless this is a bpp goal and ``bpp`` lies outside its tolerance."""
        return self.kind != "bpp" or abs(bpp - self.target) <= self.tolerance * self.target

    def reached(self, bpp: float, psnr: float) -> bool | None:
        """Whether a result meets the target; None for a λ goal (there is nothing to meet)."""
        if self.kind == "bpp":
            return self.inside(bpp)
        if self.kind == "psnr":
            return psnr >= self.target
        return None

    def rank(self, bpp: float, psnr: float, size: float | None = None, cost: float | None = None) -> tuple:
        """Sort key of one result, smaller is better.

        Args:
            bpp: float. Rate of the result (real, or predicted for an iterate).
            psnr: float. dB.
            size: float | None. Bytes of the file, for a PSNR goal; ``bpp`` when None.
            cost: float | None. RD cost already computed at λ, for a λ goal.
        """
        if self.kind == "bpp":
            if self.inside(bpp):
                return (0, -psnr)
            miss = (bpp - self.target) / self.target
            return (1, abs(miss) * (OVERSHOOT_WEIGHT if miss > 0 else 1.0))
        if self.kind == "psnr":
            return (0, bpp if size is None else size) if psnr >= self.target else (1, -psnr)
        return (0, rd_cost(bpp, psnr, self.target) if cost is None else cost)

    def rank_coded(self, c, overhead_bpp: float = 0.0) -> tuple:
        """:meth:`rank` of a coded candidate (``bpp``, ``psnr``, ``data``), with bytes still to come added."""
        return self.rank(c.bpp + overhead_bpp, c.psnr, size=len(c.data))

    def better(self, new, cur) -> bool:
        """True when coded candidate ``new`` ranks strictly before ``cur``."""
        return self.rank_coded(new) < self.rank_coded(cur)

    def best(self, candidates, overhead_bpp: float = 0.0):
        """The first best-ranked of coded candidates."""
        return min(candidates, key=lambda c: self.rank_coded(c, overhead_bpp))


def rd_cost(bpp: float, psnr: float, lmbda: float) -> float:
    """Real RD cost: bpp + λ·255²·MSE, with the MSE of the 8-bit reconstruction from its PSNR."""
    return bpp + lmbda * 255**2 * 10 ** (-psnr / 10)
