"""The autoregressive zoo models' context loops, decoding through :mod:`codec.rans`.

CompressAI's ``JointAutoregressiveHierarchicalPriors._decompress_ar`` (mbt2018,
and cheng2020-anchor/attn, which inherit it) and
``JointAutoregressiveHierarchicalPriorsVbr._decompress_ar`` (mbt2018-vbr) call
the unchecked C++ ``RansDecoder`` directly, not the entropy model's coder that
:func:`codec.rans.harden` replaces. :func:`bound` puts a copy of the right loop
on one network instance: the same arithmetic, with the y string checked before
the loop, decoded by a :class:`~codec.rans.GuardedStream` (or by
:class:`~codec.rans.RansStream` when a symbol escapes), and required to be the
canonical coding of what it decoded.
"""

import types

import torch
import torch.nn.functional as F

from ..rans import BoundedRansCoder, EscapeSeen, GuardedStream, RansStream, check_string


def bound(net) -> None:
    """Replaces ``net._decompress_ar`` (this instance only) with :func:`decompress_ar` or :func:`decompress_ar_vbr`."""
    from compressai.models.vbr import JointAutoregressiveHierarchicalPriorsVbr

    loop = decompress_ar_vbr if isinstance(net, JointAutoregressiveHierarchicalPriorsVbr) else decompress_ar
    net._decompress_ar = types.MethodType(loop, net)


def _decode_checked(gc, y_string, y_hat, height, width, loop) -> None:
    """Runs ``loop(stream)`` over a bounded decoder of ``y_string``; refuses a string that is not canonical.

    ``loop`` fills ``y_hat`` (all zeros on entry, as CompressAI allocates it)
    and returns the decoded values and their CDF indexes.
    """
    cdf, sizes, offsets = gc.quantized_cdf.tolist(), gc.cdf_length.tolist(), gc.offset.tolist()
    symbols = y_hat.size(1) * height * width
    check_string(y_string, symbols, "y string")
    try:
        stream = GuardedStream(y_string, symbols, cdf, sizes, offsets)
        values, indexes = loop(stream, cdf, sizes, offsets)
    except EscapeSeen:
        y_hat.zero_()
        stream = RansStream(y_string, cdf, sizes, offsets)
        values, indexes = loop(stream, cdf, sizes, offsets)
    BoundedRansCoder().check_canonical(y_string, values, indexes, cdf, sizes, offsets, stream.escape_nibbles)


def decompress_ar(self, y_string, y_hat, params, height, width, kernel_size, padding):
    _decode_checked(self.gaussian_conditional, y_string, y_hat, height, width,
                    lambda stream, *_: _context_loop(self, stream, y_hat, params, height, width, kernel_size, padding))


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


def decompress_ar_vbr(self, y_string, y_hat, params, height, width, kernel_size, padding, scale, rescale, stage):
    _decode_checked(self.gaussian_conditional, y_string, y_hat, height, width,
                    lambda stream, *_: _context_loop_vbr(self, stream, y_hat, params, height, width, kernel_size,
                                                         padding, scale, rescale, stage))


def _context_loop_vbr(self, stream, y_hat, params, height, width, kernel_size, padding, scale, rescale, stage):
    # CompressAI 1.2.8's JointAutoregressiveHierarchicalPriorsVbr._decompress_ar, line for line, with the
    # decoder passed in. Its y_rec (the reconstruction with quantization offsets) is bound to a local
    # name at the end and never reaches the caller's y_hat; kept so, since streams decode as CompressAI's.
    gc = self.gaussian_conditional
    values, indexes_all = [], []
    if stage == 2 and self.no_quantoffset is False and self.ste_recursive is False:
        y_rec = torch.zeros_like(y_hat)
    if self.scl2ctx and stage == 2:
        ctx_scl = self.scale_to_context.forward(scale.view(1, 1)).view(1, -1, 1, 1)
    for h in range(height):
        for w in range(width):
            y_crop = y_hat[:, :, h: h + kernel_size, w: w + kernel_size]
            ctx_p = F.conv2d(y_crop, self.context_prediction.weight, bias=self.context_prediction.bias)
            if self.scl2ctx and stage == 2:
                ctx_p = ctx_p + ctx_scl
            p = params[:, :, h: h + 1, w: w + 1]
            gaussian_params = self.entropy_parameters(torch.cat((p, ctx_p), dim=1))
            scales_hat, means_hat = gaussian_params.chunk(2, 1)
            indexes = gc.build_indexes(scales_hat * scale).squeeze().tolist()
            rv = stream.decode(indexes)
            values.extend(rv)
            indexes_all.extend(indexes)
            rv = torch.Tensor(rv).reshape(1, -1, 1, 1).to(scales_hat.device)
            hp, wp = h + padding, w + padding
            if stage == 1:
                y_hat[:, :, hp: hp + 1, wp: wp + 1] = gc.dequantize(rv, means_hat)
            elif stage == 2:
                if self.no_quantoffset:
                    y_hat[:, :, hp: hp + 1, wp: wp + 1] = gc.dequantize(rv) * rescale + means_hat
                else:
                    q_val = gc.dequantize(rv)
                    q_abs, signs = q_val.abs(), torch.sign(q_val)
                    q_stdev = gc.lower_bound_scale(scales_hat * scale)
                    stdev_and_gain = torch.cat((q_stdev.unsqueeze(dim=4),
                                                scale.detach().expand(q_stdev.unsqueeze(dim=4).shape)), dim=4)
                    q_offsets = (-1) * (self.QuantABCD.forward(stdev_and_gain)).squeeze(dim=4)
                    q_offsets[q_abs < 0.0001] = 0
                    rv_out = (signs * (q_abs + q_offsets)) * rescale + means_hat
                    if self.ste_recursive is False:
                        y_hat[:, :, hp: hp + 1, wp: wp + 1] = gc.dequantize(rv) * rescale + means_hat
                        y_rec[:, :, hp: hp + 1, wp: wp + 1] = rv_out
                    else:
                        y_hat[:, :, hp: hp + 1, wp: wp + 1] = rv_out
    return values, indexes_all
