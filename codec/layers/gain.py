"""Bit-rate modulator: λ → positive per-channel gain on y (M2)."""

import math

import torch
from torch import nn


def lambda_to_unit(lmbda: torch.Tensor, lmbda_min: float, lmbda_max: float) -> torch.Tensor:
    """Map λ to t = (log λ - mid) / half-range, so the training range is t ∈ [-1, 1].

    Args:
        lmbda: Tensor of shape (B,) or (B, K). Positive λ values.
    Returns:
        Tensor of the same shape, float32.
    """
    lo, hi = math.log(lmbda_min), math.log(lmbda_max)
    half = max((hi - lo) / 2, 1e-6)  # a fixed-rate range (min == max) maps to t = 0
    return (torch.log(lmbda.float()) - (lo + hi) / 2) / half


class GainModulator(nn.Module):
    """λ goes through two FC layers to a channel gain vector that scales y.

    Yin et al., "Universal Efficient Variable-rate Neural Image Compression"
    (ICASSP 2022), the bit-rate modulator.

    ::

        λ ──► t = norm(log λ) ──► FC ─► ReLU ─► FC ──► + slope·t ──► exp ──► gain (M,)

    .. note::
        The fixed log-linear term ``slope·t`` is a prior of ours: for MSE the
        best quantization step shrinks like 1/sqrt(λ), so the gain starts with
        that trend and the FC layers learn the per-channel correction. The last
        FC layer starts at zero.
    """

    def __init__(self, M: int, lmbda_min: float, lmbda_max: float, hidden: int = 64):
        super().__init__()
        self.lmbda_min, self.lmbda_max = lmbda_min, lmbda_max
        self.fc = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, M))
        nn.init.zeros_(self.fc[2].weight)
        nn.init.zeros_(self.fc[2].bias)
        # half of log(λmax/λmin), times 1/2 for the sqrt law
        self.slope = 0.5 * (math.log(lmbda_max) - math.log(lmbda_min)) / 2

    def forward(self, lmbda: torch.Tensor) -> torch.Tensor:
        """Args:
            lmbda: Tensor (B,). λ per image.
        Returns:
            Tensor (B, M, 1, 1), float32, strictly positive gains.
        """
        t = lambda_to_unit(lmbda, self.lmbda_min, self.lmbda_max).unsqueeze(-1)
        log_gain = self.fc(t) + self.slope * t
        return torch.exp(log_gain)[:, :, None, None]
