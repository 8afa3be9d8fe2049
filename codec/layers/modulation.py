"""Conditional channel modulation of a decoder block by its own λ_k (M4)."""

import torch
from torch import nn

from .gain import lambda_to_unit


class ChannelModulation(nn.Module):
    """Scale and shift each channel of a decoder block's input by an MLP of λ_k.

    Jiang et al., "Online Meta Adaptation for Variable-Rate Learned Image
    Compression" (CVPRW 2022): the decoder is conditioned on λ, one value λ_k
    per block, so that the encoder can later tune the K values per image
    (online λ adaptation) and send them in a few bytes.

    ::

        λ_k ──► t ──► FC ─► ReLU ─► FC ──► (a, b) ;  x ──► x·exp(a) + b

    The last FC layer starts at zero, so a fresh modulation is the identity.
    """

    def __init__(self, channels: int, lmbda_min: float, lmbda_max: float, hidden: int = 32):
        super().__init__()
        self.lmbda_min, self.lmbda_max = lmbda_min, lmbda_max
        self.fc = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * channels))
        nn.init.zeros_(self.fc[2].weight)
        nn.init.zeros_(self.fc[2].bias)

    def forward(self, x: torch.Tensor, lmbda_k: torch.Tensor) -> torch.Tensor:
        """Args:
            x: Tensor (B, C, H, W).
            lmbda_k: Tensor (B,). This block's λ per image.
        """
        t = lambda_to_unit(lmbda_k, self.lmbda_min, self.lmbda_max).unsqueeze(-1)
        a, b = self.fc(t).chunk(2, dim=-1)
        return x * torch.exp(a)[:, :, None, None].to(x.dtype) + b[:, :, None, None].to(x.dtype)
