"""The default model: a variable-rate mean-scale hyperprior with λ_k decoder
modulation and decoder bias hooks."""

import copy

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN
from compressai.models import CompressionModel
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste
from torch import nn

from ..constants import NUM_DECODER_BLOCKS
from .. import tiling
from . import scale_index
from ..determinism import exact_on, single_thread
from ..layers import BiasBank, ChannelModulation, GainModulator
from ..layers.synthesis import inverse_gdn, is_deconv5, subpixel_deconv
from ..rans import BoundedRansCoder
from ..registry import register_model
from ..timing import stage

SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 256, 64


def get_scale_table(min_=SCALES_MIN, max_=SCALES_MAX, levels=SCALES_LEVELS):
    return torch.exp(torch.linspace(torch.log(torch.tensor(float(min_))), torch.log(torch.tensor(float(max_))), levels))


def scale_indexes(gc: GaussianConditional, scales: torch.Tensor) -> torch.Tensor:
    """``gc.build_indexes(scales)`` in one search instead of one pass per table entry.

    CompressAI counts, per scale, the table entries (all but the last) it is
    at most, and subtracts that from the top index: what remains is the number
    of entries strictly below it, which is what a left binary search over the
    ascending table returns (NaN lands on the top index either way). Same
    float32 comparisons, same int32 result; tests/codec/test_models.py checks
    it against CompressAI's on every entry, its neighbours, NaN and infinities.
    """
    table = gc.scale_table[:-1].contiguous()
    return torch.searchsorted(table, gc.lower_bound_scale(scales).contiguous()).int()


def _output_halves(layer: nn.Module, x: torch.Tensor) -> list | None:
    """A plain convolution of ``x`` as two calls, one per half of its output channels (None for any other layer).

    Each half is one call on whatever thread runs it (single-threaded in
    :func:`codec.tiling.run_all`), so the bits never depend on the thread
    count (on this project's CPUs the halves equal the whole layer's output:
    tests/codec/test_decode_threads.py checks it where it runs).
    A gated layer decides from its whole input: it has no halves.
    """
    if type(layer) not in (nn.Conv2d, nn.ConvTranspose2d) or layer.out_channels % 2:
        return None
    half = layer.out_channels // 2
    if type(layer) is nn.Conv2d:
        def part(k):
            return F.conv2d(x, layer.weight[half * k:half * (k + 1)], layer.bias[half * k:half * (k + 1)],
                            layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        def part(k):
            return F.conv_transpose2d(x, layer.weight[:, half * k:half * (k + 1)], layer.bias[half * k:half * (k + 1)],
                                      layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation)
    return [lambda: part(0), lambda: part(1)]


def decode_symbols(gc: GaussianConditional, strings: list[bytes], indexes: torch.Tensor, means: torch.Tensor,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``gc.decompress(strings, indexes, dtype, means)``, with arrays rather than Python lists around the coder.

    CompressAI hands its coder the indexes as a list and makes a tensor of the
    list it returns; for a Kodak y string (295k symbols) those two conversions
    and the coder's own checks on the list took longer than the decoding. A
    :class:`~codec.rans.BoundedRansCoder` takes the index array and returns an
    array; any other coder gets the lists it expects. Same symbols either way.
    """
    coder = gc.entropy_coder
    cdf = gc._quantized_cdf.tolist()
    sizes, offsets = gc._cdf_length.reshape(-1).int().tolist(), gc._offset.reshape(-1).int().tolist()
    flat = indexes.reshape(len(strings), -1).numpy()
    symbols = torch.empty(flat.shape, dtype=torch.int32)
    for i, s in enumerate(strings):
        idx = flat[i] if isinstance(coder, BoundedRansCoder) else flat[i].tolist()
        symbols[i] = torch.as_tensor(coder.decode_with_indexes(s, idx, cdf, sizes, offsets))
    return gc.dequantize(symbols.reshape(indexes.shape), means, dtype)


@register_model("metalic-vr")
class VariableRateHyperprior(CompressionModel):
    """Mean-scale hyperprior, variable-rate through a λ-driven channel gain.

    Minnen et al. 2018 without the autoregressive context (CompressAI's
    ``MeanScaleHyperprior`` layout, so decoding is one parallel pass), made
    variable-rate by Yin et al. 2022's bit-rate modulator (M2), with Jiang et
    al. 2022's per-block λ_k modulation in the decoder (M4) and L²C decoder
    bias hooks (M6).

    ::

               ┌ gain(λ) ┐                          ┌ 1/gain(λ) ┐
        x ─► g_a ─► y ─► × ─► y_g ─► Q ─► ŷ_g ─► × ─► ŷ ─► g_s(λ_1..λ_4, bias idx) ─► x̂
                           │          ▲ means, scales
                           ▼          │
                          h_a ─► z ─► Q ─► ẑ ─► h_s

    g_s is K = 4 blocks; block k is ``modulate(λ_k) → deconv → + bias offset → IGDN``
    (no IGDN after the last). With no adaptation every λ_k equals λ.

    Typical workflow:
        1. ``out = model(x, lmbda)`` for training (likelihoods + x̂).
        2. ``model.update()`` once after training (CDF tables).
        3. ``y_g, z = model.encode_latents(x, lmbda)``; refine them if you like.
        4. ``model.compress_latents(y_g, z)`` → strings (entropy coding on CPU, float32).
        5. ``model.decompress(strings, shape, lmbda, lmbda_k, bias_indices)``.

    .. note::
        Entropy parameters (means, scales) are always computed on the CPU in
        float32, whatever device holds the model, so a stream made on a GPU
        decodes on a CPU.
    """

    def __init__(self, N: int = 64, M: int = 128, lmbda_min: float = 4e-4, lmbda_max: float = 0.2):
        super().__init__()
        self.N, self.M = N, M
        self.lmbda_min, self.lmbda_max = lmbda_min, lmbda_max
        self.g_a = nn.Sequential(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True), conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(inplace=True),
            deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
        )
        chans = [M, N, N, N, 3]
        self.g_s_convs = nn.ModuleList(deconv(chans[k], chans[k + 1]) for k in range(NUM_DECODER_BLOCKS))
        self.g_s_igdn = nn.ModuleList(GDN(chans[k + 1], inverse=True) for k in range(NUM_DECODER_BLOCKS - 1))
        self.modulations = nn.ModuleList(
            ChannelModulation(chans[k], lmbda_min, lmbda_max) for k in range(NUM_DECODER_BLOCKS)
        )
        self.bias_bank = BiasBank(chans[1:], strides=[8, 4, 2, 1])
        self.gain = GainModulator(M, lmbda_min, lmbda_max)
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        self._h_s_cpu = None

    def config(self) -> dict:
        return {"N": self.N, "M": self.M, "lmbda_min": self.lmbda_min, "lmbda_max": self.lmbda_max}

    # ----- transforms ---------------------------------------------------------------------------
    def encode_latents(self, x: torch.Tensor, lmbda: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns y_g (B, M, H/16, W/16) and z (B, N, H/64, W/64), float32."""
        y_g = self.g_a(x).float() * self.gain(lmbda)
        z = self.h_a(y_g.to(x.dtype) if x.dtype != torch.float32 else y_g).float()
        return y_g, z

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (scales_hat, means_hat) for y_g, float32."""
        scales_hat, means_hat = self.h_s(z_hat).float().chunk(2, 1)
        return scales_hat, means_hat

    def synthesize(self, y_hat_g: torch.Tensor, lmbda: torch.Tensor, lmbda_k: torch.Tensor | None = None,
                   bias_indices: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder: ŷ_g / gain(λ) → 4 modulated blocks → x̂ (not clamped).

        The plain layers, so forward hooks on them see every call (the bias
        search and the bias-bank training hook the convolutions); the exact
        decode is :meth:`reconstruct`.

        Args:
            y_hat_g: Tensor (B, M, h, w). Quantized scaled latent.
            lmbda: Tensor (B,). λ (sets the inverse gain).
            lmbda_k: Tensor (B, K) or None. Per-block λ; None means every λ_k = λ.
            bias_indices: LongTensor (h_p, w_p) or None. Per-patch bias-bank indices (B must be 1).
        """
        offset = None
        if bias_indices is not None:
            def offset(k, hw):
                return self.bias_bank.offset(k, bias_indices.to(y_hat_g.device), hw)
        return self._blocks(y_hat_g, lmbda, lmbda_k, offset)

    def _blocks(self, y_hat_g: torch.Tensor, lmbda: torch.Tensor, lmbda_k: torch.Tensor | None, offset,
                fast: bool = False) -> torch.Tensor:
        """:meth:`synthesize` with the bias offsets as ``offset(block, out_hw)`` (or None).

        ``fast`` runs the inverse GDNs and a plain last layer in their faster
        forms (:mod:`codec.layers.synthesis`, the decode rule of container
        version 3), which no module hook sees.
        """
        if lmbda_k is None:
            lmbda_k = lmbda[:, None].expand(-1, NUM_DECODER_BLOCKS)
        h = y_hat_g / self.gain(lmbda).to(y_hat_g.device)
        dtype = next(self.g_s_convs.parameters()).dtype
        h = h.to(dtype)
        last = NUM_DECODER_BLOCKS - 1
        for k in range(NUM_DECODER_BLOCKS):
            h = self.modulations[k](h, lmbda_k[:, k])
            conv = self.g_s_convs[k]
            h = subpixel_deconv(conv, h) if fast and k == last and is_deconv5(conv) else conv(h)
            if offset is not None:
                h = h + offset(k, h.shape[-2:]).to(h.dtype)
            if k < last:
                h = inverse_gdn(self.g_s_igdn[k], h) if fast else self.g_s_igdn[k](h)
        return h

    reconstruct_in_strips = True
    """Whether :meth:`reconstruct` cuts the latent into :mod:`codec.tiling` strips (the synthesis is
    translation-equivariant, so the stitched strips are the whole image's synthesis)."""

    def reconstruct(self, y_hat_g: torch.Tensor, lmbda: torch.Tensor, lmbda_k: torch.Tensor | None = None,
                    bias_indices: torch.Tensor | None = None, legacy_synthesis: bool = False) -> torch.Tensor:
        """x̂ in [0, 1] as every decoder computes it: the encoder's measurement and the decode both call this.

        The inverse GDNs and the last layer run in their faster forms; with
        ``legacy_synthesis`` in the plain layers, as a container older than
        version 3 was measured (see :meth:`_blocks`).

        :meth:`synthesize` in channels_last (oneDNN's transposed convolutions
        run 2-3x faster so, same bits on these shapes: tests/codec/test_tiling.py)
        on the fixed strips of :func:`codec.tiling.plan`, one intra-op thread
        each, as many at once as torch may use threads (on a CPU). The bits
        depend on the image size only, never on the thread count.
        """
        dev = y_hat_g.device
        workers = torch.get_num_threads() if dev.type == "cpu" else 1
        hy, wy = y_hat_g.shape[-2:]
        full = None
        if bias_indices is not None:
            idx = bias_indices.to(dev)
            full = [self.bias_bank.offset(k, idx, (hy << (k + 1), wy << (k + 1))) for k in range(NUM_DECODER_BLOCKS)]
        strips = tiling.plan(hy, wy) if self.reconstruct_in_strips else [tiling.whole(hy, wy)]

        def one(s: tiling.Strip) -> torch.Tensor:
            offset = None
            if full is not None:
                def offset(k, hw):
                    f = 1 << (k + 1)
                    return full[k][..., s.rows_in.start * f:s.rows_in.stop * f, s.cols_in.start * f:s.cols_in.stop * f]
            y = y_hat_g[..., s.rows_in, s.cols_in].contiguous(memory_format=torch.channels_last)
            return self._blocks(y, lmbda, lmbda_k, offset, fast=not legacy_synthesis)

        with exact_on(dev):
            return tiling.run(one, strips, scale=16, workers=workers).float().clamp_(0, 1)

    # ----- training -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, lmbda: torch.Tensor, lmbda_k: torch.Tensor | None = None,
                amp: bool = False, quant: str = "noise") -> dict:
        """Training pass: the likelihoods always see additive uniform noise.

        Args:
            x: Tensor (B, 3, H, W) in [0, 1], H and W multiples of 64.
            lmbda: Tensor (B,). λ per image.
            amp: bool. True runs the transforms under bf16 autocast; the
                entropy models always run in float32.
            quant: "noise" feeds the noisy latent to the synthesis; "ste"
                feeds it the rounded one (round(y - μ) + μ, straight-through
                gradient), which is what it decodes at test time (Minnen &
                Singh 2020's mixed quantization). In eval mode both round.
        Returns:
            {"x_hat": (B, 3, H, W) float32, "likelihoods": {"y": ..., "z": ...}}
        """
        dev = x.device.type
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            y_g = self.g_a(x).float() * self.gain(lmbda)
            z = self.h_a(y_g)
        with torch.autocast(dev, enabled=False):
            z_hat, z_likelihoods = self.entropy_bottleneck(z.float())
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            scales_hat, means_hat = self.hyper_synthesis(z_hat)
        with torch.autocast(dev, enabled=False):
            y_hat, y_likelihoods = self.gaussian_conditional(y_g, scales_hat.float(), means=means_hat.float())
            if quant == "ste" and self.training:
                y_hat = quantize_ste(y_g - means_hat.float()) + means_hat.float()
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            x_hat = self.synthesize(y_hat, lmbda, lmbda_k).float()
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    # ----- entropy coding -----------------------------------------------------------------------
    def update(self, scale_table=None, force: bool = False, update_quantiles: bool = False) -> bool:
        if scale_table is None:
            scale_table = get_scale_table()
        return super().update(scale_table=scale_table, force=force, update_quantiles=update_quantiles)

    def entropy_parameters(self, z_hat: torch.Tensor, exact: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale indexes, means) of y from ẑ as the encoder and every decoder take them, on the CPU.

        The indexes are the same on every machine (:mod:`codec.models.scale_index`):
        h_s's layers before the last run in float64, the last one in float32,
        and a scale near a table edge is recomputed in float64. Whatever device
        holds the model, a CPU copy computes them, so a GPU's stream decodes on a CPU.

        ``exact=False`` is the rule of version-1 containers: the whole h_s in
        float32, indexes straight from its scales (the same only on the same
        kind of CPU kernels).

        Returns:
            (indexes (B, M, h, w) int32, means_hat (B, M, h, w) float32)
        """
        head, last, whole = self._cpu_hyper_synthesis()
        gc = self.gaussian_conditional
        if not exact:
            with torch.autocast("cpu", enabled=False), single_thread():
                scales, means = whole(z_hat.detach().cpu().float()).chunk(2, 1)
            return scale_indexes(gc, scales), means
        # the last two layers in halves of their output channels, side by side on two threads
        workers, edges = torch.get_num_threads(), gc.scale_table[:-1].contiguous()
        with torch.autocast("cpu", enabled=False), single_thread():
            x64 = head[:-2](z_hat.detach().cpu().double())
            halves = _output_halves(head[-2], x64)
            x64 = head[-1](torch.cat(tiling.run_all(halves, workers), 1) if halves else head[-2](x64))
            x32 = x64.float()

            def indexed(scales):
                return scales, scale_indexes(gc, scales), scale_index.near_edges(scales, edges)

            halves = _output_halves(last, x32)
            if halves:  # the scales' indexes are searched while the means are computed
                (scales, indexes, near), means = tiling.run_all([lambda: indexed(halves[0]()), halves[1]], workers)
            else:
                scales, means = last(x32).chunk(2, 1)
                scales, indexes, near = indexed(scales)

            def recomputed(near):
                x = x64
                if hasattr(last, "gate"):  # a gated last layer computes only its active inputs
                    x = x64 * (last.gate(x32) > 0)[:, :, None, None]
                return scale_index.recompute(x, last, torch.cat([near, torch.zeros_like(near)], 1))

            scale_index.settle(indexes, scales, edges, float(gc.lower_bound_scale.bound), recomputed, near=near)
        return indexes, means

    def _cpu_hyper_synthesis(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """CPU copies of h_s (cached per weights): all but its last layer in float64, the last
        layer in float32, and the whole of it in float32 (the version-1 rule)."""
        key = tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in self.h_s.parameters())
        if self._h_s_cpu is None or self._h_s_cpu[0] != key:
            whole = copy.deepcopy(self.h_s).to("cpu", torch.float32).eval()
            head = copy.deepcopy(whole[:-1]).to(torch.float64)
            self._h_s_cpu = (key, head, whole[-1], whole)
        return self._h_s_cpu[1:]

    @torch.no_grad()
    def compress_latents(self, y_g: torch.Tensor, z: torch.Tensor) -> dict:
        """Entropy-code given latents (as produced, or refined, by the encoder).

        Returns:
            {"strings": [y_strings, z_strings], "shape": (h_z, w_z), "y_hat": (B, M, h, w) CPU float32}
        """
        z = z.detach().cpu().float()
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        indexes, means_hat = self.entropy_parameters(z_hat)
        y_g = y_g.detach().cpu().float()
        y_strings = self.gaussian_conditional.compress(y_g, indexes, means=means_hat)
        y_hat = self.gaussian_conditional.quantize(y_g, "dequantize", means_hat)
        return {"strings": [y_strings, z_strings], "shape": tuple(z.size()[-2:]), "y_hat": y_hat}

    @torch.no_grad()
    def decompress_latents(self, strings, shape, exact_indexes: bool = True) -> torch.Tensor:
        """Strings → ŷ_g on CPU float32 (the inverse of :meth:`compress_latents`).

        ``exact_indexes=False`` decodes a version-1 container (see :meth:`entropy_parameters`).
        """
        with stage("entropy_z"):
            z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        with stage("hyper_synthesis"):
            indexes, means_hat = self.entropy_parameters(z_hat, exact_indexes)
        with stage("entropy_y"):
            return decode_symbols(self.gaussian_conditional, strings[0], indexes, means_hat, z_hat.dtype)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, lmbda: torch.Tensor) -> dict:
        y_g, z = self.encode_latents(x, lmbda)
        out = self.compress_latents(y_g, z)
        return {"strings": out["strings"], "shape": out["shape"]}

    @torch.no_grad()
    def decompress(self, strings, shape, lmbda: torch.Tensor, lmbda_k: torch.Tensor | None = None,
                   bias_indices: torch.Tensor | None = None, exact_indexes: bool = True,
                   legacy_synthesis: bool = False) -> dict:
        dev = next(self.parameters()).device
        y_hat = self.decompress_latents(strings, shape, exact_indexes).to(dev)
        with stage("synthesis"):
            x_hat = self.reconstruct(y_hat, lmbda.to(dev), None if lmbda_k is None else lmbda_k.to(dev), bias_indices,
                                     legacy_synthesis)
        return {"x_hat": x_hat}


# The same architecture under a second name: the base training's weights, kept
# beside the default (meta fine-tuned, with its bias bank) so the two can be
# compared and files made with either decode.
register_model("metalic-vr-base")(VariableRateHyperprior)
