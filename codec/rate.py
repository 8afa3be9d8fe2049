"""The λ grid of the container: every λ the decoder sees is a uint16 index.

The encoder snaps λ (and each λ_k) to this grid *before* using it, so the
decoder computes with exactly the numbers the encoder measured.
"""

import math

from .constants import LAMBDA_LEVELS, LAMBDA_MAX, LAMBDA_MIN

_LO, _HI = math.log(LAMBDA_MIN), math.log(LAMBDA_MAX)


def lambda_to_index(lmbda: float) -> int:
    """Nearest grid index of λ (clipped to the grid)."""
    if not lmbda > 0 or not math.isfinite(lmbda):
        raise ValueError(f"λ must be positive and finite, got {lmbda!r}")
    t = (math.log(lmbda) - _LO) / (_HI - _LO)
    return min(LAMBDA_LEVELS, max(0, round(t * LAMBDA_LEVELS)))


def index_to_lambda(index: int) -> float:
    """λ of a grid index, the value both sides compute with."""
    return math.exp(_LO + (_HI - _LO) * index / LAMBDA_LEVELS)

