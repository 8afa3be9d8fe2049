"""Layers of the default model: the λ→gain modulator (M2), the decoder λ_k
modulation (M4), the decoder bias hooks (M6) and energy-based channel gating (M3)."""

from .bias import BiasBank
from .gain import GainModulator, lambda_to_unit
from .gating import EnergyGate, GatedConv2d, GatedConvTranspose2d, gated, sparsity_penalty
from .modulation import ChannelModulation

__all__ = ["BiasBank", "ChannelModulation", "EnergyGate", "GainModulator", "GatedConv2d", "GatedConvTranspose2d",
           "gated", "lambda_to_unit", "sparsity_penalty"]
