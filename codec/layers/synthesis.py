"""Faster forms of two synthesis layers: the same sums, in kernels this CPU runs faster.

* The last transposed convolution (64 → 3 channels, 5x5, stride 2) is the
  layer oneDNN runs slowest per FLOP; as a 3x3 convolution to 12 channels and
  a pixel shuffle (:func:`subpixel_weight`) it takes half the time on a Kodak
  image (one thread, channels_last).
* The inverse GDN's channel mixing is a C x C matrix over every pixel; as one
  matrix product over the channels_last pixels (:func:`inverse_gdn`) it takes
  about half the time of CompressAI's 1x1 convolution and its own passes.

Both change the order of the float additions, so the last bit of a decoded
value may differ from the plain layers': container version 3 decodes with
them, older versions with the plain layers (:mod:`codec.bitstream`), so every
stream still decodes to what its encoder measured.
"""

import torch
import torch.nn.functional as F
from torch import nn

# output phase (row or column parity) → kernel tap used at input offset -1, 0, +1
# of a stride-2, kernel-5, padding-2, output-padding-1 transposed convolution
_PHASE_TAPS = {0: (4, 2, 0), 1: (None, 3, 1)}


def is_deconv5(m: nn.Module) -> bool:
    """True for a plain ``ConvTranspose2d(k=5, s=2, p=2, output_padding=1)`` (what :func:`subpixel_weight` folds)."""
    return (type(m) is nn.ConvTranspose2d and m.kernel_size == (5, 5) and m.stride == (2, 2)
            and m.padding == (2, 2) and m.output_padding == (1, 1) and m.dilation == (1, 1) and m.groups == 1)


def subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """3x3 convolution weights that, pixel-shuffled by 2, give the transposed convolution of ``weight``.

    Args:
        weight: Tensor (C_in, C_out, 5, 5). A ``ConvTranspose2d(k=5, s=2, p=2, output_padding=1)``'s weight.

    Returns:
        Tensor (4·C_out, C_in, 3, 3), output channels ordered as ``F.pixel_shuffle`` reads them.
    """
    cin, cout = weight.shape[:2]
    g = weight.new_zeros(cout, 2, 2, cin, 3, 3)
    for a, rows in _PHASE_TAPS.items():
        for b, cols in _PHASE_TAPS.items():
            for ti, ki in enumerate(rows):
                for tj, kj in enumerate(cols):
                    if ki is not None and kj is not None:
                        g[:, a, b, :, ti, tj] = weight[:, :, ki, kj].t()
    return g.reshape(cout * 4, cin, 3, 3)


def subpixel_deconv(conv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for an :func:`is_deconv5` layer, as a 3x3 convolution and a pixel shuffle."""
    weight = subpixel_weight(conv.weight).contiguous(memory_format=torch.channels_last)
    bias = None if conv.bias is None else conv.bias.repeat_interleave(4)
    return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=1), 2)


def inverse_gdn(gdn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CompressAI's ``GDN(inverse=True)(x)``, x·√(β + γ x²), its channel mixing as one matrix product.

    The pixels of a channels_last ``x`` are rows of a (B·H·W, C) matrix
    without a copy; the result comes back channels_last. In place where no
    gradient is asked for (inference), out of place otherwise (training).
    """
    c = x.shape[1]
    gamma = gdn.gamma_reparam(gdn.gamma).reshape(c, c)
    beta = gdn.beta_reparam(gdn.beta)
    b, _, h, w = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(-1, c)
    norm = torch.addmm(beta.to(flat.dtype), flat * flat, gamma.t().to(flat.dtype))
    if torch.is_grad_enabled() and (flat.requires_grad or gamma.requires_grad):
        out = flat * torch.sqrt(norm)
    else:
        out = norm.sqrt_().mul_(flat)
    return out.view(b, h, w, c).permute(0, 3, 1, 2)
