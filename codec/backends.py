"""One coding interface over the default model and the CompressAI zoo.

The pipeline and the adaptation stages speak only this interface; a *rate
index* is a λ grid index (:mod:`codec.rate`) for the variable-rate model and
a quality level for fixed-rate zoo models.

Latents are a tuple of tensors: ``(y, z)`` for hyperprior models, ``(y,)`` for
factorized ones, and ``(x,)`` for autoregressive ones (coded by the zoo model
itself; they cannot be refined).
"""

import copy
import math
from typing import Callable, Protocol, runtime_checkable

import torch

from . import bitstream
from .determinism import exact_on, single_thread
from .errors import OptionsError
from .rans import harden
from .rate import index_to_lambda, lambda_to_index

RoundFn = Callable[[torch.Tensor, str], torch.Tensor]
"""A relaxed rounding: (residual tensor, "y" or "z") → rounded tensor, differentiable."""


def hard_round(t: torch.Tensor, kind: str) -> torch.Tensor:
    return torch.round(t)


def _bits(likelihoods: torch.Tensor, bound: float = 1e-9) -> torch.Tensor:
    return -torch.log2(likelihoods.clamp_min(bound)).sum()


def eb_likelihood(eb, z_t: torch.Tensor) -> torch.Tensor:
    """Likelihoods of already-rounded values under a CompressAI EntropyBottleneck.

    ``EntropyBottleneck.forward`` rounds by itself; refinement needs the density
    at values it rounded (relaxed) on its own, so this is the forward pass minus
    the quantizer.
    """
    c = z_t.size(1)
    v = z_t.float().transpose(0, 1).reshape(c, 1, -1)
    # float32 even under bf16 autocast (refinement): the density's matmuls would
    # otherwise run in bf16 and the rate term would lose its precision
    with torch.autocast(z_t.device.type, enabled=False):
        lik = eb._likelihood(v)[0]
    return lik.reshape(c, z_t.size(0), *z_t.shape[2:]).transpose(0, 1)


@runtime_checkable
class Backend(Protocol):
    """What the encoder and decoder need of a model, whichever family it is.

    The rate index is what the container stores: a λ grid index for the
    default model, a quality level for a fixed-rate zoo model; only the backend
    turns it into the λ the loss uses (:meth:`rate_lambda`). Implemented by
    :class:`VariableRateBackend`, :class:`ZooBackend` and :class:`ZooVbrBackend`; tests/codec/test_backends.py
    runs one set of contract tests on each.

    ``string_symbols`` is what the decoder checks a stream against before any
    tensor exists: the symbols each entropy-coded string must hold, in the
    container's order. Every backend decodes through :mod:`codec.rans`.
    """

    kind: str
    supports_refine: bool
    supports_lambda_k: bool
    supports_bias: bool

    @property
    def device(self) -> torch.device: ...

    def latent_shape(self, height: int, width: int) -> tuple[int, int]: ...

    def string_symbols(self, height: int, width: int) -> tuple[int, ...]: ...

    def rate_range(self) -> tuple[int, int]: ...

    def rate_index(self, lmbda: float) -> int: ...

    def rate_lambda(self, rate_index: int) -> float: ...

    def encode_latents(self, x: torch.Tensor, rate_index: int) -> tuple: ...

    def rd_terms(self, latents, rate_index: int, round_fn: RoundFn = hard_round, lambda_k=None, bias=None): ...

    def refine_view(self, rate_index: int) -> "Backend": ...

    def compress_latents(self, latents, rate_index: int) -> dict: ...

    def synthesize(self, y_hat, rate_index: int, lambda_k=None, bias=None) -> torch.Tensor: ...

    def reconstruct(self, y_hat, rate_index: int, lambda_k=None, bias=None) -> torch.Tensor:
        """x̂ of decoded latents exactly as :meth:`decompress` computes it (the encoder's measurement)."""
        ...

    def decompress(self, strings, shape, rate_index: int, lambda_k=None, bias=None,
                   version: int = bitstream.VERSION) -> torch.Tensor:
        """x̂ of a stream's strings; ``version`` is the container's (the rule for y's scale indexes
        and for the synthesis' last bits, :data:`codec.bitstream.VERSIONS`)."""
        ...


def channels_last_copy(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` with its convolution weights in channels_last.

    oneDNN runs the transposed convolutions of a refinement step (bf16
    autocast, synthesis forward and backward) about 1.4x faster so. A copy, not
    the network itself: the coded file's synthesis must stay the exact float32
    one every decoder computes.
    """
    return copy.deepcopy(net).to(memory_format=torch.channels_last)


class _OneNetwork:
    """Shared by backends over one network ``self.net`` with a hyperprior on a 64-pixel grid."""

    net: torch.nn.Module
    _refine_view = None

    def refine_view(self, rate_index: int):
        """This backend over a channels_last copy of its network (:func:`channels_last_copy`), made once.

        Only the refinement's gradient steps and cost estimates run on it; every
        coded file is measured on ``self``. The copy holds the weights as they
        were at the first call (backends never reload weights).
        """
        if self._refine_view is None:
            view = copy.copy(self)
            view.net = channels_last_copy(self.net)
            view._refine_view = self._refine_view = view
        return self._refine_view

    @property
    def device(self):
        return next(self.net.parameters()).device

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // 64), -(-width // 64)

    def string_symbols(self, height: int, width: int) -> tuple[int, int]:
        # y on the 16-pixel grid, then z on the 64-pixel grid
        h, w = self.latent_shape(height, width)
        return self.net.M * 16 * h * w, self.net.entropy_bottleneck.channels * h * w


class VariableRateBackend(_OneNetwork):
    """The shipped model (M2 gain, M4 λ_k, M6 bias hooks)."""

    kind = "variable-rate"
    supports_refine = supports_lambda_k = supports_bias = True

    def __init__(self, net):
        self.net = net
        harden(net)

    def rate_range(self) -> tuple[int, int]:
        return lambda_to_index(self.net.lmbda_min / 2), lambda_to_index(min(1.0, self.net.lmbda_max * 2))

    def rate_index(self, lmbda: float) -> int:
        return lambda_to_index(lmbda)

    def rate_lambda(self, rate_index: int) -> float:
        return index_to_lambda(rate_index)

    def _lmbda(self, rate_index: int) -> torch.Tensor:
        return torch.tensor([index_to_lambda(rate_index)], device=self.device)

    def encode_latents(self, x, rate_index: int) -> tuple:
        return self.net.encode_latents(x, self._lmbda(rate_index))

    def rd_terms(self, latents, rate_index: int, round_fn: RoundFn = hard_round, lambda_k=None, bias=None):
        """Differentiable (x_hat, bits) of latents under a relaxed rounding."""
        y_g, z = latents
        eb, gc = self.net.entropy_bottleneck, self.net.gaussian_conditional
        medians = eb._get_medians()
        z_t = round_fn(z - medians, "z") + medians
        z_bits = _bits(eb_likelihood(eb, z_t))
        scales, means = self.net.hyper_synthesis(z_t)
        y_t = round_fn(y_g - means, "y") + means
        y_bits = _bits(gc._likelihood(y_t, scales, means))
        x_hat = self.net.synthesize(y_t, self._lmbda(rate_index), lambda_k, bias)
        return x_hat, y_bits + z_bits

    def compress_latents(self, latents, rate_index: int) -> dict:
        return self.net.compress_latents(*latents)

    def synthesize(self, y_hat, rate_index: int, lambda_k=None, bias=None):
        # the encoder's measurement must equal any decoder's output: see determinism.exact_on
        with exact_on(self.device):
            return self.net.synthesize(y_hat.to(self.device), self._lmbda(rate_index), lambda_k, bias)

    def reconstruct(self, y_hat, rate_index: int, lambda_k=None, bias=None):
        return self.net.reconstruct(y_hat.to(self.device), self._lmbda(rate_index), lambda_k, bias)

    def decompress(self, strings, shape, rate_index: int, lambda_k=None, bias=None, version: int = bitstream.VERSION):
        return self.net.decompress(strings, shape, self._lmbda(rate_index), lambda_k, bias,
                                   exact_indexes=version >= 2, legacy_synthesis=version < 3)["x_hat"]


class ZooBackend:
    """CompressAI zoo models, one network per quality level."""

    supports_lambda_k = supports_bias = False

    def __init__(self, slug: str, family: str, nets: dict, lambdas: dict):
        self.slug, self.kind, self.nets, self.lambdas = slug, family, nets, lambdas
        self.supports_refine = family != "autoregressive"
        for net in nets.values():
            harden(net)
            if family == "autoregressive":
                from .models.zoo_ar import bound

                bound(net)

    @property
    def device(self):
        return next(next(iter(self.nets.values())).parameters()).device

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        f = 16 if self.kind == "factorized" else 64
        return -(-height // 64) * 64 // f, -(-width // 64) * 64 // f

    def string_symbols(self, height: int, width: int) -> tuple[int, ...]:
        net = next(iter(self.nets.values()))
        h, w = self.latent_shape(height, width)
        if self.kind == "factorized":
            return (net.entropy_bottleneck.channels * h * w,)
        return net.M * 16 * h * w, net.entropy_bottleneck.channels * h * w

    def rate_range(self) -> tuple[int, int]:
        return min(self.nets), max(self.nets)

    def rate_index(self, lmbda: float) -> int:
        return min(self.nets, key=lambda q: abs(torch.tensor(self.lambdas[q] / lmbda).log().item()))

    def rate_lambda(self, rate_index: int) -> float:
        return self.lambdas[rate_index]

    def refine_view(self, rate_index: int):
        """As :meth:`_OneNetwork.refine_view`, with only the network of ``rate_index`` copied (made once per level)."""
        views = self.__dict__.setdefault("_refine_views", {})
        if rate_index not in views:
            view = copy.copy(self)
            view.nets = {**self.nets, rate_index: channels_last_copy(self.net(rate_index))}
            view._refine_views = {rate_index: view}
            views[rate_index] = view
        return views[rate_index]

    def net(self, rate_index: int):
        if rate_index not in self.nets:
            raise OptionsError(f"{self.slug} has no local weights for quality {rate_index}")
        return self.nets[rate_index]

    def encode_latents(self, x, rate_index: int) -> tuple:
        net = self.net(rate_index)
        if self.kind == "autoregressive":
            return (x,)
        y = net.g_a(x)
        if self.kind == "factorized":
            return (y,)
        return (y, net.h_a(torch.abs(y)) if self.kind == "scale-hyperprior" else net.h_a(y))

    def _hyper(self, net, z_t):
        # .float(): entropy parameters stay float32 when h_s runs under bf16 autocast
        if self.kind == "scale-hyperprior":
            return net.h_s(z_t).float(), None
        scales, means = net.h_s(z_t).float().chunk(2, 1)
        return scales, means

    def rd_terms(self, latents, rate_index: int, round_fn: RoundFn = hard_round, lambda_k=None, bias=None):
        if not self.supports_refine:
            raise OptionsError(f"latent refinement is not available for autoregressive {self.slug}")
        net = self.net(rate_index)
        eb = net.entropy_bottleneck
        if self.kind == "factorized":
            (y,) = latents
            med = eb._get_medians()
            y_t = round_fn(y - med, "y") + med
            return net.g_s(y_t), _bits(eb_likelihood(eb, y_t))
        y, z = latents
        med = eb._get_medians()
        z_t = round_fn(z - med, "z") + med
        scales, means = self._hyper(net, z_t)
        off = means if means is not None else torch.zeros_like(y)
        y_t = round_fn(y - off, "y") + off
        bits = _bits(net.gaussian_conditional._likelihood(y_t, scales, means)) + _bits(eb_likelihood(eb, z_t))
        return net.g_s(y_t), bits

    @torch.no_grad()
    def compress_latents(self, latents, rate_index: int) -> dict:
        net = self.net(rate_index)
        if self.kind == "autoregressive":
            with single_thread():
                out = net.compress(latents[0])
            return {"strings": out["strings"], "shape": tuple(out["shape"]), "y_hat": None}
        if self.kind == "factorized":
            (y,) = latents
            strings = net.entropy_bottleneck.compress(y)
            y_hat = net.entropy_bottleneck.decompress(strings, y.size()[-2:])
            return {"strings": [strings], "shape": tuple(y.size()[-2:]), "y_hat": y_hat}
        y, z = latents
        z_strings = net.entropy_bottleneck.compress(z)
        z_hat = net.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        with single_thread():
            scales, means = self._hyper(net, z_hat)
        idx = net.gaussian_conditional.build_indexes(scales)
        y_strings = net.gaussian_conditional.compress(y, idx, means=means)
        y_hat = net.gaussian_conditional.quantize(y, "dequantize", means)
        return {"strings": [y_strings, z_strings], "shape": tuple(z.size()[-2:]), "y_hat": y_hat}

    def synthesize(self, y_hat, rate_index: int, lambda_k=None, bias=None):
        with exact_on(self.device):
            return self.net(rate_index).g_s(y_hat)

    reconstruct = synthesize  # decompress runs the same g_s

    @torch.no_grad()
    def decompress(self, strings, shape, rate_index: int, lambda_k=None, bias=None, version: int = bitstream.VERSION):
        # every version: the zoo's indexes come from CompressAI's own float32 h_s
        # compressai runs h_s inside decompress: single-threaded, as in compress_latents
        with single_thread():
            return self.net(rate_index).decompress(strings, list(shape))["x_hat"]


class ZooVbrBackend(_OneNetwork):
    """CompressAI's variable-rate zoo models (``*-vbr``): one network, the rate index is its level.

    Kamisli, Racapé and Choi, "Variable-Rate Learned Image Compression with
    Multi-Objective Optimization and Quantization-Reconstruction Offsets", DCC 2024.
    Level ``s`` (0..levels-1) codes at the network's ``lmbda[s]``; the model
    codes its latents itself, so they are not refined (like the autoregressive family).
    """

    kind = "vbr"
    supports_refine = supports_lambda_k = supports_bias = False

    def __init__(self, slug: str, net):
        self.slug, self.net = slug, net
        harden(net)
        if hasattr(net, "_decompress_ar"):  # mbt2018-vbr's context loop decodes y itself
            from .models.zoo_ar import bound

            bound(net)

    def rate_range(self) -> tuple[int, int]:
        return 0, len(self.net.lmbda) - 1

    def rate_index(self, lmbda: float) -> int:
        return min(range(len(self.net.lmbda)), key=lambda s: abs(math.log(self.net.lmbda[s] / lmbda)))

    def rate_lambda(self, rate_index: int) -> float:
        return float(self.net.lmbda[rate_index])

    def encode_latents(self, x, rate_index: int) -> tuple:
        return (x,)

    def rd_terms(self, latents, rate_index: int, round_fn: RoundFn = hard_round, lambda_k=None, bias=None):
        raise OptionsError(f"latent refinement is not available for {self.slug}")

    @torch.no_grad()
    def compress_latents(self, latents, rate_index: int) -> dict:
        with single_thread():
            out = self.net.compress(latents[0], stage=2, s=rate_index)
        return {"strings": out["strings"], "shape": tuple(out["shape"]), "y_hat": None}

    def synthesize(self, y_hat, rate_index: int, lambda_k=None, bias=None):
        raise OptionsError(f"{self.slug} decodes its latents itself (decompress)")

    reconstruct = synthesize

    @torch.no_grad()
    def decompress(self, strings, shape, rate_index: int, lambda_k=None, bias=None, version: int = bitstream.VERSION):
        with single_thread():  # every version: CompressAI's own float32 h_s
            return self.net.decompress(strings, list(shape), stage=2, s=rate_index)["x_hat"]
