"""The default model with energy-based channel gating before its convolutions (M3)."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..layers import EnergyGate, gated, sparsity_penalty
from ..registry import register_model
from .variable_rate import VariableRateHyperprior

TRANSFORMS = ("g_a", "h_a", "h_s", "g_s")
"""The four transforms, in coding order; :func:`transform_flops` counts each."""


@register_model("metalic-vr-ecg")
class GatedVariableRateHyperprior(VariableRateHyperprior):
    """:class:`VariableRateHyperprior` with an :class:`~codec.layers.EnergyGate` before each convolution.

    Yin et al., "Universal Efficient Variable-rate Neural Image Compression"
    (ICASSP 2022), energy-based channel gating (M3): each convolution's input
    channels are gated per image by their energy, and a gated-off channel is
    left out of the convolution. Everything else (gain, λ_k modulation, bias
    bank, entropy models, the container) is the default model's, so its
    weights load unchanged and streams carry this model's own id.

    ::

        g_a:  conv ─ GDN ─ [gate] conv ─ GDN ─ [gate] conv ─ GDN ─ [gate] conv
        h_a:  [gate] conv ─ LReLU ─ [gate] conv ─ LReLU ─ [gate] conv
        h_s:  [gate] deconv ─ LReLU ─ [gate] deconv ─ LReLU ─ [gate] conv
        g_s:  per block k: modulate(λ_k) ─ [gate] deconv ─ + bias offset ─ IGDN

    The first analysis convolution sees the three colour planes and is not
    gated. The gates of h_s and g_s see only decoded tensors (ẑ, ŷ and what
    the decoder computes from them), in float32, so the encoder's measured
    reconstruction and every decode take the same decisions.

    Typical workflow:
        1. ``net.load_state_dict(dense_state)``: the default model's weights;
           the gates start at α = ALPHA_START (only all-zero channels gated).
        2. ``metalic train ecg``: fine-tune with ``γ·sparsity_loss(α_t)`` added
           to the RD loss (training form: masked dense convolutions).
        3. ``net.eval()``: the inference form, sliced convolutions.

    .. warning::
        A gate decision is a comparison, so an encoder on another device (a
        GPU) can decide a channel differently from the CPU decoder when its
        score is within rounding of the threshold; the encoder's decoder check
        then fails the job rather than ship a stream that decodes otherwise.
    """

    reconstruct_in_strips = False  # a gate decides from its whole input's energy: one strip

    def __init__(self, N: int = 64, M: int = 128, lmbda_min: float = 4e-4, lmbda_max: float = 0.2):
        super().__init__(N, M, lmbda_min, lmbda_max)
        for seq in (self.g_a, self.h_a, self.h_s):
            for i, m in enumerate(seq):
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and not (seq is self.g_a and i == 0):
                    seq[i] = gated(m)
        for k, conv in enumerate(self.g_s_convs):
            self.g_s_convs[k] = gated(conv)

    def gates(self) -> dict[str, EnergyGate]:
        """Every gate by the name of the convolution it feeds, in coding order."""
        out = {}
        for name in ("g_a", "h_a", "h_s", "g_s_convs"):
            for i, m in enumerate(getattr(self, name)):
                if hasattr(m, "gate"):
                    out[f"{name}.{i}"] = m.gate
        return out

    def gate_parameters(self) -> list[nn.Parameter]:
        return [p for g in self.gates().values() for p in g.parameters()]

    def sparsity_loss(self, alpha_target: float) -> torch.Tensor:
        """Σ_n (α_n − α_t)² over the gates; the training loss adds γ times it."""
        return sparsity_penalty(self.gates().values(), alpha_target)

    def load_state_dict(self, state_dict, strict: bool = True):
        """Also takes the dense model's weights; the gates then keep their start values."""
        own = self.state_dict()
        gate_keys = [k for k in own if ".gate." in k]
        if not any(k in state_dict for k in gate_keys):
            state_dict = {**state_dict, **{k: own[k] for k in gate_keys}}
        return super().load_state_dict(state_dict, strict)


def _flops(fn, *args) -> tuple[object, int]:
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return out, int(counter.get_total_flops())


@torch.no_grad()
def transform_flops(net: VariableRateHyperprior, x: torch.Tensor, lmbda: torch.Tensor) -> dict[str, int]:
    """Counted FLOPs of each transform of a forward pass at λ, as the decoder would run it.

    The counts are torch's own (``FlopCounterMode``: 2 per multiply-add of
    every convolution actually executed, GDN's 1x1 convolution included), so a
    gated model's sliced convolutions count what they compute. The latents are
    hard-rounded; the synthesis sees ŷ as decoded.

    Args:
        net: VariableRateHyperprior (gated or not), in eval mode.
        x: Tensor (1, 3, H, W). H and W multiples of 64.
        lmbda: Tensor (1,).
    Returns:
        dict transform name → FLOPs, for each of :data:`TRANSFORMS`.
    """
    y, fa = _flops(net.g_a, x)
    y_g = y.float() * net.gain(lmbda)
    z, fha = _flops(net.h_a, y_g)
    z_hat = net.entropy_bottleneck.quantize(z, "dequantize", net.entropy_bottleneck._get_medians())
    (scales, means), fhs = _flops(net.hyper_synthesis, z_hat)
    y_hat = torch.round(y_g - means) + means
    _, fgs = _flops(net.synthesize, y_hat, lmbda)
    return dict(zip(TRANSFORMS, (fa, fha, fhs, fgs)))
