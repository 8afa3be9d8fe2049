"""The encode job and the decoder: image → container bytes → image.

:class:`Encoder` runs the staged encode of DESIGN 2.3 (rate search, latent
refinement, λ_k adaptation, bias-cluster search, rate control), then entropy
codes, packs, decodes the bytes again on the CPU and checks the result equals
what it measured. :func:`decode` is the one cheap pass.

Typical workflow::

    enc = Encoder()                                   # loads the model once
    res = enc.encode(open("a.png", "rb").read(), {"target_bpp": 0.25, "preset": "fast"})
    open("a.mlic", "wb").write(res.bitstream)
    decode(res.bitstream).image.save("a_hat.png")
"""

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import bitstream
from .bitstream import ImageMode, Payload
from .constants import DEFAULT_MAX_PIXELS, DEFAULT_MODEL
from .errors import BitstreamError, MetalicError, ModelError
from .adapt.coding import Coder
from .adapt.goal import Goal
from .image import load_image, output_image, pad, tensor_to_rgb, to_tensor
from .metrics import ms_ssim, psnr
from .rans import check_string
from .timing import stage
from .options import EncodeOptions, validate_options
# λ_k values sit on the container's λ grid whatever a backend's rate index means
# (only the default model has λ_k); the rate index itself goes through the backend
from .rate import index_to_lambda as lambda_k_value
from .weights import LoadedModel, load_model

Progress = Callable[[dict], None]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class EncodeResult:
    bitstream: bytes
    metadata: dict
    reconstruction: np.ndarray = field(repr=False)  # (H, W, 3) uint8, what the decoder gives


@dataclass
class DecodeResult:
    image: "object"  # PIL.Image.Image in the policy's output mode
    rgb: np.ndarray = field(repr=False)  # (H, W, 3) uint8
    metadata: dict = field(default_factory=dict)


@dataclass
class Candidate:
    """One fully coded encode: what a stage produced, measured on real bytes."""

    data: bytes
    rgb: np.ndarray
    bpp: float
    psnr: float
    rate_index: int
    lambda_k: tuple[int, ...] = ()
    bias: np.ndarray | None = None
    latents: tuple | None = None  # (y_g, z) that produced it
    coded: dict | None = None  # the backend's compress_latents output: strings, shape, y_hat

    def summary(self, backend) -> dict:
        return {"bpp": self.bpp, "psnr": self.psnr, "bytes": len(self.data), "lmbda": backend.rate_lambda(self.rate_index)}


class Encoder:
    """Loads a model once and encodes images with it (the worker's slow path).

    Args:
        model: str. Registry slug of the model.
        device: str or None. None picks CUDA when present.
        weights: str or None. Local weights file overriding the shipped one.
        max_pixels: int. Largest image accepted.
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None, weights: str | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.device = device or default_device()
        self.weights = weights
        self.loaded: LoadedModel = load_model(model, self.device, weights)
        self.max_pixels = max_pixels

    @property
    def backend(self):
        return self.loaded.backend

    # ----- coding one candidate -------------------------------------------------------------
    def _pack(self, height, width, mode, rate_index, strings, shape, lambda_k=(), bias=None) -> bytes:
        return bitstream.pack(Payload(
            model_id=self.loaded.name, weights_hash=self.loaded.weights_hash, width=width, height=height,
            mode=mode, rate_index=rate_index, lambda_k=tuple(lambda_k),
            bias_indices=b"" if bias is None else bias.astype(np.uint8).tobytes(),
            strings=tuple(s[0] for s in strings), latent_shape=tuple(shape)))

    @property
    def coder(self) -> Coder:
        """The narrow interface the adaptation stages code through."""
        return Coder(self.backend, self.loaded.name, self.code)

    def code(self, x: torch.Tensor, rgb: np.ndarray, mode: ImageMode, rate_index: int, latents=None,
             lambda_k: tuple[int, ...] = (), bias: np.ndarray | None = None, coded: dict | None = None) -> Candidate:
        """Entropy-codes latents (or the forward pass at this λ) and measures the real file.

        ``coded`` (a candidate's own) skips the entropy coding: λ_k and bias
        indices change only the header and the synthesis, not the strings.
        """
        h, w = rgb.shape[:2]
        b = self.backend
        with torch.no_grad():
            if coded is None:
                if latents is None:
                    latents = b.encode_latents(x, rate_index)
                coded = b.compress_latents(latents, rate_index)
            out = coded
            data = self._pack(h, w, mode, rate_index, out["strings"], out["shape"], lambda_k, bias)
            lk = lambda_k_tensor(lambda_k, self.device)
            bias_t = None if bias is None else torch.from_numpy(bias.astype(np.int64))
            if out["y_hat"] is None:  # autoregressive zoo models decode themselves
                x_hat = b.decompress(out["strings"], out["shape"], rate_index)
            else:
                x_hat = b.reconstruct(out["y_hat"], rate_index, lk, bias_t)
        rec = tensor_to_rgb(x_hat[..., :h, :w])
        return Candidate(data, rec, len(data) * 8 / (h * w), psnr(rgb, rec), rate_index, tuple(lambda_k), bias, latents,
                         coded)

    # ----- the staged encode ------------------------------------------------------------------
    def encode(self, image, options: dict | EncodeOptions | None = None, progress: Progress | None = None) -> EncodeResult:
        """Encodes one image under the options; see :func:`codec.options.validate_options`.

        Raises:
            ImageError, OptionsError, ModelError.
        """
        opts = options if isinstance(options, EncodeOptions) else validate_options(options)
        if opts.model != self.loaded.name:
            raise ModelError(f"this encoder holds {self.loaded.name}, not {opts.model}")
        t0 = time.perf_counter()
        report = progress or (lambda _: None)
        img = load_image(image, self.max_pixels)
        x = pad(to_tensor(img.rgb, self.device))
        timings, stages = {}, {}

        t = time.perf_counter()
        from .adapt.rate_control import search_rate

        best = search_rate(self.coder, x, img, opts, report)
        timings["rate_search"] = time.perf_counter() - t
        stages["forward"] = best.summary(self.backend)

        from .adapt.stages import below_reach, run_stages

        if opts.refine or opts.adapt_lambda or opts.bias_search or below_reach(self.backend, opts, best):
            best = run_stages(self.coder, x, img, opts, best, report, timings, stages)

        t = time.perf_counter()
        check = decode(best.data, device="cpu", weights=self.weights, max_pixels=self.max_pixels)
        if not np.array_equal(check.rgb, best.rgb):
            diff = int(np.abs(check.rgb.astype(int) - best.rgb.astype(int)).max())
            if self.device == "cpu" or diff > 1:
                raise MetalicError(f"decoder check failed: reconstruction differs by up to {diff} levels")
        timings["verify"] = time.perf_counter() - t
        h, w = img.height, img.width
        meta = {
            "model": self.loaded.name, "width": w, "height": h, "bytes": len(best.data),
            "bpp": len(best.data) * 8 / (w * h), "psnr": psnr(img.rgb, check.rgb),
            "ms_ssim": ms_ssim(img.rgb, check.rgb), "lmbda": self.backend.rate_lambda(best.rate_index),
            "lambda_k": [lambda_k_value(i) for i in best.lambda_k] or None,
            "target_bpp": opts.target_bpp, "target_psnr": opts.target_psnr,
            "target_reached": Goal.of(opts, 0.0).reached(len(best.data) * 8 / (w * h), psnr(img.rgb, check.rgb)),
            "preset": opts.preset, "options": opts.to_dict(), "stages": stages,
            "seconds": {k: round(v, 4) for k, v in timings.items()} | {"total": round(time.perf_counter() - t0, 4)},
            "device": self.device, "warnings": list(img.warnings),
        }
        if meta["target_reached"] is False:
            meta["warnings"].append(_target_note(opts, meta))
        return EncodeResult(best.data, meta, check.rgb)


def lambda_k_tensor(lambda_k, device) -> torch.Tensor | None:
    """(1, K) λ_k values of grid indices, or None (every λ_k = λ)."""
    return torch.tensor([[lambda_k_value(i) for i in lambda_k]], device=device) if lambda_k else None


def _target_note(opts: EncodeOptions, meta: dict) -> str:
    if opts.target_bpp is not None:
        return (f"target {opts.target_bpp} bpp is out of reach of this model for this image; "
                f"encoded at the closest reachable rate, {meta['bpp']:.4f} bpp")
    return f"target {opts.target_psnr} dB is out of reach; encoded at the highest quality, {meta['psnr']:.2f} dB"


def decode(data: bytes, device: str = "cpu", weights: str | None = None,
           max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodeResult:
    """Decodes a container (one pass of the synthesis transform).

    Everything a stream declares is checked before any tensor exists: the
    image fits ``max_pixels``, the latent shape is the one the model derives
    from the image size, there are as many strings as the model writes and
    each can hold the symbols it must (:func:`codec.rans.check_string`). The
    entropy decoding itself is bounded and accepts only canonical strings
    (:mod:`codec.rans`), so a crafted stream ends in a ``BitstreamError``,
    never in a crash or an image made of other memory.

    Args:
        data: bytes. The container.
        device: str. Where the synthesis runs.
        weights: str or None. Local weights file overriding the shipped one
            (the encoder's own check of a file made with ``Encoder(weights=...)``).
        max_pixels: int. Largest width x height decoded (the image policy's limit).

    Raises:
        BitstreamError: malformed, truncated, crafted or foreign stream, or unknown/mismatched weights.
    """
    with stage("parse"):
        p = bitstream.unpack(data)
    with stage("checks"):
        b, lk, bias = _checked(p, device, weights, max_pixels)
    try:
        with torch.inference_mode():
            x_hat = b.decompress([[s] for s in p.strings], p.latent_shape, p.rate_index, lk, bias, version=p.version)
    except BitstreamError:
        raise
    except (RuntimeError, ValueError, IndexError) as e:
        raise BitstreamError(f"entropy decoding failed: {e}") from None
    with stage("to_rgb"):
        rgb = tensor_to_rgb(x_hat[..., :p.height, :p.width])
        image = output_image(rgb, p.mode)
    return DecodeResult(image, rgb, bitstream.describe(p))


def _checked(p: Payload, device: str, weights: str | None, max_pixels: int):
    """The model for a parsed stream, once everything the stream declares is checked; (backend, λ_k, bias)."""
    h, w = p.height, p.width
    if w * h > max_pixels:
        raise BitstreamError(f"stream declares a {w}x{h} image ({w * h} pixels); "
                             f"the limit is {max_pixels} pixels")
    try:
        loaded = load_model(p.model_id, device, weights)
    except ModelError as e:
        raise BitstreamError(f"stream needs model {p.model_id!r}: {e}") from None
    if loaded.weights_hash != p.weights_hash:
        raise BitstreamError(f"stream was made with other weights of {p.model_id} "
                             f"({p.weights_hash.hex()}, this decoder has {loaded.weights_hash.hex()})")
    b = loaded.backend
    if tuple(p.latent_shape) != b.latent_shape(h, w):
        raise BitstreamError(f"latent shape {p.latent_shape} does not match a {w}x{h} image")
    symbols = b.string_symbols(h, w)
    if len(p.strings) != len(symbols):
        raise BitstreamError(f"{len(p.strings)} entropy-coded strings; {p.model_id} writes {len(symbols)}")
    for i, (string, count) in enumerate(zip(p.strings, symbols)):
        check_string(string, count, f"string {i} (for {count} symbols)")
    if (p.lambda_k and not b.supports_lambda_k) or (p.bias_indices and not b.supports_bias):
        raise BitstreamError(f"{p.model_id} takes no λ_k values or bias indices")
    lo, hi = b.rate_range()
    if not lo <= p.rate_index <= hi:
        raise BitstreamError(f"rate index {p.rate_index} is outside {p.model_id}'s range {lo}..{hi}")
    lk = lambda_k_tensor(p.lambda_k, device)
    bias = None
    if p.bias_indices:
        from .layers import BiasBank

        bias = torch.frombuffer(bytearray(p.bias_indices), dtype=torch.uint8).long().view(*BiasBank.grid_shape(h, w))
    return b, lk, bias
