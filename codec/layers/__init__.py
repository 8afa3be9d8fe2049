"""Layers of the default model: the λ→gain modulator (M2), the decoder λ_k
modulation (M4) and the decoder bias hooks (M6)."""

from .bias import BiasBank
from .gain import GainModulator, lambda_to_unit
from .modulation import ChannelModulation

__all__ = ["BiasBank", "ChannelModulation", "GainModulator", "lambda_to_unit"]
