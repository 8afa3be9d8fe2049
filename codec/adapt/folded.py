"""The refinement's synthesis at one fixed λ: the same function as the model's, in fewer passes.

A refinement step runs the synthesis forward and backward on the whole image
(90 times in ``balanced``), and at a fixed λ with every λ_k = λ much of its
elementwise work is constant:

* the inverse gain and each block's channel modulation are per-channel affine
  maps with fixed coefficients, so they fold into the next transposed
  convolution: its weights scale by input channel, and the shift becomes a
  constant image added to the convolution's output (:func:`_fold`);
* the last transposed convolution (64 → 3 channels at full resolution) is the
  one oneDNN runs slowly; as a 3x3 convolution to 12 channels and a pixel
  shuffle (the same sums, :func:`subpixel_weight`) it costs less;
* the inverse GDN's backward is written out (:class:`_InverseGDN`): three
  elementwise passes and one 1x1 convolution instead of autograd's seven.

Only the refinement's steps and cost estimates run it; every coded file is
measured by the model's own float32 synthesis, so it moves no decoded pixel.
tests/codec/adapt/test_folded.py checks it computes what the model does.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.gain import lambda_to_unit
from ..layers.synthesis import is_deconv5, subpixel_weight

class _InverseGDN(torch.autograd.Function):
    """y = x·√(β + γ x²), with a hand-written backward.

    dx_j = g_j s_j + x_j Σ_i γ_ij g_i x_i / s_i, s = √(β + γ x²); the forward
    keeps x/s for it.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta):
        s = torch.sqrt(F.conv2d(x * x, gamma, beta))
        ctx.save_for_backward(x, s, gamma)
        return x * s

    @staticmethod
    def backward(ctx, g):
        x, s, gamma = ctx.saved_tensors
        g = g.to(x.dtype)
        u = F.conv2d(g * x / s, gamma.transpose(0, 1))
        return torch.addcmul(g * s, x, u), None, None


class _Block:
    """One decoder block, folded: (sub-pixel) convolution + constant + inverse GDN."""

    def __init__(self, conv: nn.ConvTranspose2d, scale: torch.Tensor, shift: torch.Tensor, gdn, subpixel: bool):
        w = conv.weight * scale.reshape(-1, 1, 1, 1)  # the modulation's scale, by input channel
        self.subpixel = subpixel
        self.weight = (subpixel_weight(w) if subpixel else w).contiguous(memory_format=torch.channels_last)
        self.conv = conv
        # the shift, pushed through the (unscaled) convolution with its bias, is a constant
        # image; its borders differ from its inside (the zero padding), so it is made per shape
        self.shift, self.consts = shift.reshape(1, -1, 1, 1), {}
        if gdn is None:
            self.gamma = self.beta = None
        else:
            c = gdn.gamma.shape[0]
            self.gamma = gdn.gamma_reparam(gdn.gamma).reshape(c, c, 1, 1).detach()
            self.beta = gdn.beta_reparam(gdn.beta).detach()
        self.cast = {}

    def _weights(self, dtype):
        if dtype not in self.cast:
            self.cast[dtype] = (self.weight.to(dtype), None if self.gamma is None else self.gamma.to(dtype),
                                None if self.beta is None else self.beta.to(dtype))
        return self.cast[dtype]

    def _const(self, shape, dtype):
        key = (tuple(shape), dtype)
        if key not in self.consts:
            with torch.no_grad(), torch.autocast(self.weight.device.type, enabled=False):
                ones = self.shift.expand(*shape).contiguous(memory_format=torch.channels_last).float()
                conv = self.conv
                if self.subpixel:
                    c = F.conv2d(ones, subpixel_weight(conv.weight.float()), conv.bias.float().repeat_interleave(4),
                                 padding=1)
                else:
                    c = F.conv_transpose2d(ones, conv.weight.float(), conv.bias.float(), stride=2, padding=2,
                                           output_padding=1)
            self.consts = {key: c.to(dtype).contiguous(memory_format=torch.channels_last)}  # one image size at a time
        return self.consts[key]

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else h.dtype
        h = h.to(dtype)
        w, gamma, beta = self._weights(dtype)
        if self.subpixel:
            out = F.conv2d(h, w, padding=1)
        else:
            out = F.conv_transpose2d(h, w, stride=2, padding=2, output_padding=1)
        out = out + self._const((1, h.shape[1], *h.shape[2:]), out.dtype)
        if self.subpixel:
            out = F.pixel_shuffle(out, 2)
        if gamma is not None:
            out = _InverseGDN.apply(out, gamma, beta)
        return out


class FoldedSynthesis:
    """The synthesis of a variable-rate network at one λ with every λ_k = λ and no bias indices.

    Args:
        net: the (channels_last) network; read once, never changed.
        lmbda: Tensor (1,). The λ the synthesis runs at.
    """

    def __init__(self, net, lmbda: torch.Tensor):
        lmbda = lmbda.reshape(1)
        with torch.no_grad(), torch.autocast(lmbda.device.type, enabled=False):
            inv_gain = (1.0 / net.gain(lmbda)).reshape(-1).float()
            blocks, last = [], len(net.g_s_convs) - 1
            for k, conv in enumerate(net.g_s_convs):
                mod = net.modulations[k]
                a, b = mod.fc(lambda_to_unit(lmbda, mod.lmbda_min, mod.lmbda_max).unsqueeze(-1)).chunk(2, dim=-1)
                scale, shift = torch.exp(a).reshape(-1).float(), b.reshape(-1).float()
                if k == 0:  # the inverse gain comes first: (y/g)·s + b = y·(s/g) + b
                    scale = scale * inv_gain
                blocks.append(_Block(conv, scale, shift, net.g_s_igdn[k] if k < last else None, subpixel=k == last))
        self.blocks = blocks

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        h = y
        for block in self.blocks:
            h = block(h)
        return h


def foldable(net) -> bool:
    """True for a network whose synthesis is :class:`VariableRateHyperprior`'s over plain layers.

    Anything else (the gated model's sliced convolutions, another family) keeps its own synthesis.
    """
    from compressai.layers import GDN

    from ..models.variable_rate import VariableRateHyperprior

    return (isinstance(net, VariableRateHyperprior) and type(net).synthesize is VariableRateHyperprior.synthesize
            and all(is_deconv5(m) for m in net.g_s_convs)
            and all(type(m) is GDN and m.inverse for m in net.g_s_igdn))


class _FoldedNet:
    """A network whose ``synthesize`` at its one λ (every λ_k = λ, no bias indices) is folded; all else its own."""

    def __init__(self, net, lmbda: torch.Tensor):
        self._net, self._lmbda, self._folded = net, lmbda, FoldedSynthesis(net, lmbda)
        self._hyper = None  # (ẑ, autocast on, output) of the last hyper-synthesis without a gradient

    def hyper_synthesis(self, z_hat):
        """The network's, kept for a ẑ that needs no gradient: a held hyper-latent
        (:func:`codec.adapt.refine.hold_hyper`) gives the same ẑ at every step."""
        if z_hat.requires_grad:
            return self._net.hyper_synthesis(z_hat)
        amp = torch.is_autocast_enabled(z_hat.device.type)
        kept = self._hyper
        if kept is None or kept[1] != amp or kept[0].shape != z_hat.shape or not torch.equal(kept[0], z_hat):
            with torch.no_grad():
                kept = self._hyper = (z_hat.clone(), amp, self._net.hyper_synthesis(z_hat))
        return kept[2]

    def __getattr__(self, name):
        return getattr(self._net, name)

    def synthesize(self, y_hat_g, lmbda, lmbda_k=None, bias_indices=None):
        if lmbda_k is None and bias_indices is None and torch.equal(lmbda, self._lmbda):
            return self._folded(y_hat_g)
        return self._net.synthesize(y_hat_g, lmbda, lmbda_k, bias_indices)


def folded_view(backend, rate_index: int):
    """The backend's refinement view (:meth:`codec.backends.Backend.refine_view`) with the synthesis folded at
    ``rate_index``; the view itself where the network is not :func:`foldable`. The last one made is kept."""
    view = backend.refine_view(rate_index)
    if not foldable(view.net):
        return view
    cached = view.__dict__.get("_folded")
    if cached is None or cached[0] != rate_index:
        folded = copy.copy(view)
        folded.net = _FoldedNet(view.net, view._lmbda(rate_index))
        view._folded = cached = (rate_index, folded)
    return cached[1]
