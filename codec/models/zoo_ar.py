"""The autoregressive zoo models' context loop, decoding through :mod:`codec.rans`.

CompressAI's ``JointAutoregressiveHierarchicalPriors._decompress_ar`` (mbt2018,
and cheng2020-anchor/attn, which inherit it) calls the unchecked C++
``RansDecoder`` directly, not the entropy model's coder that
:func:`codec.rans.harden` replaces. :func:`bound` puts this copy of the loop
on one network instance: the same arithmetic, with the y string checked
before the loop, decoded by a :class:`~codec.rans.GuardedStream` (or by
:class:`~codec.rans.RansStream` when a symbol escapes), and required to be
the canonical coding of what it decoded.

.. note::
    ``mbt2018-vbr``'s own loop (``JointAutoregressiveHierarchicalPriorsVbr``)
    is not replaced: its y string is shape-checked by the decoder like every
    string, but decoded by CompressAI's unchecked coder.
"""

import types

import torch
import torch.nn.functional as F

from ..rans import BoundedRansCoder, EscapeSeen, GuardedStream, RansStream, check_string


def bound(net) -> None:
    """Replaces ``net._decompress_ar`` (this instance only) with :func:`decompress_ar`."""
    net._decompress_ar = types.MethodType(decompress_ar, net)


def decompress_ar(self, y_string, y_hat, params, height, width, kernel_size, padding):
    gc = self.gaussian_conditional
    cdf, sizes, offsets = gc.quantized_cdf.tolist(), gc.cdf_length.tolist(), gc.offset.tolist()
    symbols = y_hat.size(1) * height * width
    check_string(y_string, symbols, "y string")
    try:
        stream = GuardedStream(y_string, symbols, cdf, sizes, offsets)
        values, indexes = _context_loop(self, stream, y_hat, params, height, width, kernel_size, padding)
    except EscapeSeen:
        y_hat.zero_()
        stream = RansStream(y_string, cdf, sizes, offsets)
        values, indexes = _context_loop(self, stream, y_hat, params, height, width, kernel_size, padding)
    BoundedRansCoder().check_canonical(y_string, values, indexes, cdf, sizes, offsets, stream.escape_nibbles)


def _context_loop(self, stream, y_hat, params, height, width, kernel_size, padding):
    # CompressAI 1.2.8's _decompress_ar, line for line, with the decoder passed in
    values, indexes_all = [], []
    for h in range(height):
        for w in range(width):
            y_crop = y_hat[:, :, h: h + kernel_size, w: w + kernel_size]
            ctx_p = F.conv2d(y_crop, self.context_prediction.weight, bias=self.context_prediction.bias)
            p = params[:, :, h: h + 1, w: w + 1]
            gaussian_params = self.entropy_parameters(torch.cat((p, ctx_p), dim=1))
            scales_hat, means_hat = gaussian_params.chunk(2, 1)
            indexes = self.gaussian_conditional.build_indexes(scales_hat).reshape(-1).tolist()
            rv = stream.decode(indexes)
            values.extend(rv)
            indexes_all.extend(indexes)
            rv = torch.Tensor(rv).reshape(1, -1, 1, 1)
            rv = self.gaussian_conditional.dequantize(rv, means_hat)
            hp, wp = h + padding, w + padding
            y_hat[:, :, hp: hp + 1, wp: wp + 1] = rv
    return values, indexes_all
