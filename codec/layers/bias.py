"""Decoder bias hooks: per-patch bias offsets picked from a bank (M6)."""

import math

import torch
from torch import nn

from ..constants import NUM_BIAS_CLUSTERS, PATCH_SIZE


class BiasBank(nn.Module):
    """A bank of bias offsets for every decoder conv, indexed per image patch.

    Zou et al., "Learning to Learn to Compress" (L²C), decoder bias clusters:
    the decoder's conv biases are overfitted on many training patches and the
    results are clustered; the encoder sends one 8-bit index per patch.

    ::

        indices (h_p, w_p) uint8 ──► nearest upsample to layer l's grid ──►
        bank_l[indices] (B, C_l, H_l, W_l) ──► added after decoder conv l

    Row 0 of every bank is zero: index 0 decodes exactly as without a bank.
    The banks are buffers (saved with the weights, never trained by SGD).

    Args:
        channels: list of int. Output channels of each decoder conv.
        strides: list of int. Each conv output's downsampling factor relative
            to the image (for example 8, 4, 2, 1).
    """

    def __init__(self, channels: list[int], strides: list[int]):
        super().__init__()
        self.strides = list(strides)
        for i, c in enumerate(channels):
            self.register_buffer(f"bank{i}", torch.zeros(NUM_BIAS_CLUSTERS, c))

    def bank(self, layer: int) -> torch.Tensor:
        return getattr(self, f"bank{layer}")

    @property
    def num_layers(self) -> int:
        return len(self.strides)

    def is_empty(self) -> bool:
        return all(not self.bank(i).any() for i in range(self.num_layers))

    @staticmethod
    def grid_shape(height: int, width: int) -> tuple[int, int]:
        """Number of patches (rows, cols) covering an image of this size."""
        return math.ceil(height / PATCH_SIZE), math.ceil(width / PATCH_SIZE)

    def offset(self, layer: int, indices: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """Per-pixel bias offsets of one layer.

        Args:
            layer: int. Decoder conv number.
            indices: LongTensor (h_p, w_p). Patch indices.
            out_hw: (H_l, W_l). The layer's output size (padded image / stride).
        Returns:
            Tensor (1, C_l, H_l, W_l), float32.
        """
        cell = PATCH_SIZE // self.strides[layer]
        idx = indices.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        # the padded image can overrun the patch grid by < 64 px: extend the edge patch
        h, w = out_hw
        if idx.shape[0] < h:
            idx = torch.cat([idx, idx[-1:].expand(h - idx.shape[0], -1)], 0)
        if idx.shape[1] < w:
            idx = torch.cat([idx, idx[:, -1:].expand(-1, w - idx.shape[1])], 1)
        idx = idx[:h, :w]
        return self.bank(layer)[idx].permute(2, 0, 1).unsqueeze(0)
