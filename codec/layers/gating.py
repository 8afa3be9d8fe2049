"""Energy-based channel gating (ECG, M3): per-image channel masks on convolution inputs.

Yin et al., "Universal Efficient Variable-rate Neural Image Compression"
(ICASSP 2022), the energy-based channel gating module, embedded before a
convolution so that its input is sparse; a channel gated off for the whole
image is left out of the convolution (its weight is sliced), which is where
the FLOPs go.
"""

import torch
import torch.nn.functional as F
from torch import nn

ALPHA_START = -10.0
"""log(energy / mean energy). Starting threshold level: only channels that carry
about e^-10 of the layer's mean energy (in practice, the ones that are exactly
zero) are gated, so a model fresh from dense weights decodes as the dense one."""

ENERGY_FLOOR = 1e-6
"""Dimensionless. Added to the relative energy before its log: an all-zero
channel scores log(1e-6) ≈ -13.8 instead of -inf."""

SURROGATE_TEMPERATURE = 1.0
"""log-energy units. Width of the sigmoid whose gradient stands in for the
hard gate's in training (straight-through)."""


class EnergyGate(nn.Module):
    """Which input channels of a convolution carry enough energy to be computed.

    ::

        x (B, C, H, W) ─► mean_hw(x²) = e ─► s = log(e / mean_c(e) + ε)        (intra-channel)
                                              │
                                              ▼
                           v = s + conv1d_circular(s, w − mean(w))             (inter-channel)
                                              │
               th_c = α + τ_c − mean(τ) ──►  gate_c = [v_c > th_c]  ─► x ⊙ gate

    α is this gate's adjustment (one scalar per gate, the paper's α_n): the
    larger it is, the higher every channel's threshold and the sparser the
    output. Training pulls it to a target with γ·Σ(α_n − α_t)².

    .. note::
        The poster gives the ingredients, not the formulas; three choices are
        ours, each so that the rate-distortion loss cannot undo what the
        sparsity term asks of α for free:

        * the per-channel thresholds τ_c enter with their mean removed, so
          they can move the threshold between channels but not its level;
        * the 1-D kernel enters with its mean removed and circular padding,
          so the inter-channel term cannot add a constant to every score;
        * the energy is relative to the layer's mean, so a scale change of
          the features (λ moves it) does not change the gate.

    The scores are computed in float32 outside autocast: in the synthesis the
    gate sees only decoded tensors, and the encoder and the decoder take the
    same decisions from the same numbers (see :mod:`codec.determinism`).

    Args:
        channels: int. Input channels of the gated convolution.
        kernel_size: int. Taps of the 1-D convolution across channels (odd).
        alpha: float. Starting α.
    """

    def __init__(self, channels: int, kernel_size: int = 5, alpha: float = ALPHA_START):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.channels = channels
        # zero starts: the score is the energy alone, every channel's threshold is α
        self.kernel = nn.Parameter(torch.zeros(kernel_size))
        self.tau = nn.Parameter(torch.zeros(channels))
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        """v − th per image and channel: positive means computed.

        Returns:
            Tensor (B, C) float32.
        """
        with torch.autocast(x.device.type, enabled=False):
            e = x.float().pow(2).mean((2, 3))
            s = torch.log(e / e.mean(1, keepdim=True).clamp_min(1e-30) + ENERGY_FLOOR)
            k = (self.kernel - self.kernel.mean()).float()  # float32 even in a float64 copy (the exact h_s)
            pad = k.numel() // 2
            ring = torch.cat([s[:, -pad:], s, s[:, :pad]], 1) if pad else s
            v = s + F.conv1d(ring[:, None], k.view(1, 1, -1))[:, 0]
            return v - (self.alpha + self.tau - self.tau.mean()).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gate of each input channel.

        In training the forward value is the hard gate and the gradient the
        sigmoid's (straight-through), so the network trains on the gates it
        will decode with; in eval mode it is the hard gate alone.

        Returns:
            Tensor (B, C) float32 of 0.0 and 1.0.
        """
        m = self.margin(x)
        hard = (m > 0).float()
        if not self.training:
            return hard
        soft = torch.sigmoid(m / SURROGATE_TEMPERATURE)
        return hard + (soft - soft.detach())  # exactly the hard value forward, the sigmoid's slope backward


class _GatedConv:
    """Shared by the gated twins of ``nn.Conv2d`` and ``nn.ConvTranspose2d``.

    Training (and any module in train mode): the masked dense convolution
    ``conv(x ⊙ gate)``, differentiable in the gate. Eval: the inference form,
    ``conv`` over the active input channels only, with the weight sliced to
    them; equal to the masked dense output up to the order of the float
    additions (tests/codec/test_gating.py checks it), and the same for every
    caller, the encoder's measurement and the decoder alike.
    """

    in_axis: int  # the weight's input-channel axis

    def _attach_gate(self, **gate_kw) -> None:
        self.gate = EnergyGate(self.in_channels, **gate_kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate(x)
        if self.training:
            return self._dense(x * g[:, :, None, None].to(x.dtype), self.weight)
        return self.forward_sliced(x, g > 0)

    def forward_sliced(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """The convolution of the active channels of each image (B, C) bool."""
        if bool(active.all()):
            return self._dense(x, self.weight)
        if bool((active == active[:1]).all()):  # one mask for the batch: one call
            return self._on(x, active[0])
        return torch.cat([self._on(x[b:b + 1], active[b]) for b in range(x.shape[0])])

    def _on(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        idx = active.nonzero()[:, 0]
        if idx.numel() == 0:  # every channel gated: the output is the bias, on the output grid
            return self._dense(x[:, :1] * 0, self.weight.narrow(self.in_axis, 0, 1))
        # channels-last: oneDNN's kernels, whose time follows the channel count (torch's default
        # layout runs a transposed convolution as GEMM + col2im, about as slow for 16 channels as for 64)
        cl = torch.channels_last
        return self._dense(x.index_select(1, idx).contiguous(memory_format=cl),
                           self.weight.index_select(self.in_axis, idx).contiguous(memory_format=cl))

    @classmethod
    def from_conv(cls, conv, **gate_kw):
        """The gated twin of ``conv``, holding the same parameter tensors."""
        new = cls(device="meta", **cls._arguments(conv))  # meta: no storage, no random init to throw away
        new.weight, new.bias = conv.weight, conv.bias
        new._attach_gate(**gate_kw)
        return new


class GatedConv2d(_GatedConv, nn.Conv2d):
    """``nn.Conv2d`` with an :class:`EnergyGate` on its input channels."""

    in_axis = 1

    @staticmethod
    def _arguments(c) -> dict:
        return dict(in_channels=c.in_channels, out_channels=c.out_channels, kernel_size=c.kernel_size,
                    stride=c.stride, padding=c.padding, dilation=c.dilation, groups=c.groups,
                    bias=c.bias is not None, padding_mode=c.padding_mode)

    def _dense(self, x, weight):
        return self._conv_forward(x, weight, self.bias)


class GatedConvTranspose2d(_GatedConv, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with an :class:`EnergyGate` on its input channels (output size from the input)."""

    in_axis = 0

    @staticmethod
    def _arguments(c) -> dict:
        return dict(in_channels=c.in_channels, out_channels=c.out_channels, kernel_size=c.kernel_size,
                    stride=c.stride, padding=c.padding, output_padding=c.output_padding, groups=c.groups,
                    bias=c.bias is not None, dilation=c.dilation, padding_mode=c.padding_mode)

    def _dense(self, x, weight):
        return F.conv_transpose2d(x, weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)


def gated(conv: nn.Module, **gate_kw) -> nn.Module:
    """The gated twin of a ``Conv2d`` or ``ConvTranspose2d`` (same parameters)."""
    if type(conv) is nn.Conv2d:
        return GatedConv2d.from_conv(conv, **gate_kw)
    if type(conv) is nn.ConvTranspose2d:
        return GatedConvTranspose2d.from_conv(conv, **gate_kw)
    raise TypeError(f"no gated twin for {type(conv).__name__}")


def sparsity_penalty(gates, alpha_target: float) -> torch.Tensor:
    """Σ_n (α_n − α_t)² over the gates (the loss adds γ times it)."""
    return sum((g.alpha - alpha_target) ** 2 for g in gates)
