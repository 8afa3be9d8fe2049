"""Crafted containers for fuzzing the decoder: valid checksums, every field drawn at random.

Each case goes through the project's own container writer (``bitstream.pack``),
so it passes framing and the CRC and reaches the decoder's value checks and
the entropy decoding. Fields are drawn per case from a seeded generator, so a
case is named by its seed and rebuilt exactly (``StreamForge().case(seed)``):

- image size from buckets (tiny, small, medium, at the 4096x4096 limit, up to 16384 per side),
- mode, rate index, λ_k and bias indices inside and outside their ranges,
- latent shape mostly the derived one, sometimes off,
- model id and weights hash mostly the real ones, sometimes foreign,
- strings: canonical codings of random latents (sometimes with escapes),
  mutated ones (bit flips, words cut or added, swapped strings) and raw
  patterns (zeros, 0xFF, random, the 57-byte stream of issue 11).

A canonical case (``expect_ok``) must decode to the encoder side's
reconstruction; every other case must end in a result or a ``BitstreamError``.
:func:`run_cases` applies that oracle and bounds the process's RSS.

``StreamForge(model, weights)`` forges for another registered model the same
way; for the autoregressive zoo models (``mbt2018``, ``mbt2018-vbr``, whose
released weights are never downloaded) :func:`small_ar_weights` writes small
seeded ones. Their canonical strings are the model's own coding of a random
image, and the reference is CompressAI's own, unbounded decoding of them.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from codec import bitstream
from codec.bitstream import ImageMode, Payload
from codec.constants import DEFAULT_MAX_PIXELS, NUM_DECODER_BLOCKS
from codec.errors import BitstreamError

CANONICAL_PIXELS = 192 * 192
"""Pixels. Largest image a case codes canonical strings for (its decode runs the synthesis)."""

CANONICAL_AR_PIXELS = 128 * 128
"""Pixels. The same for the autoregressive models, whose decoding loops over every latent position."""

FOREIGN_SLUGS = ("metalic-vr-base", "bmshj2018-hyperprior", "mbt2018", "no-such-model", "a")

AR_MODELS = ("mbt2018", "mbt2018-vbr")
"""Autoregressive zoo models the forge builds small weights for."""

AR_LATENT_GAIN = 100.0
"""Gain on the small models' last analysis layer: random weights give near-empty y strings without it."""


@dataclass
class Case:
    seed: int
    data: bytes
    kind: str
    expect_ok: bool = False
    reference: np.ndarray | None = field(default=None, repr=False)  # (H, W, 3) uint8 the encoder side measured


class StreamForge:
    """Builds :class:`Case` s against one loaded model (the default: the shipped metalic-vr)."""

    def __init__(self, model: str = "metalic-vr", weights: str | None = None):
        from codec.weights import load_model

        self.weights = weights
        self.loaded = load_model(model, "cpu", weights)
        self.backend = self.loaded.backend
        self.autoregressive = self.backend.kind in ("autoregressive", "vbr")
        self.net = None if self.autoregressive else self.backend.net

    def decode(self, data: bytes, **kwargs):
        """``codec.pipeline.decode`` with this forge's weights (the real decoder, as a user calls it)."""
        from codec.pipeline import decode

        return decode(data, weights=self.weights, **kwargs)

    # ----- the fields ---------------------------------------------------------------------------
    def symbols(self, width: int, height: int) -> tuple[int, int]:
        return self.backend.string_symbols(height, width)

    @staticmethod
    def _size(rng) -> tuple[int, int]:
        bucket = rng.choice(["tiny", "small", "medium", "limit", "huge"], p=[0.3, 0.4, 0.2, 0.02, 0.08])
        if bucket == "tiny":
            return int(rng.integers(1, 65)), int(rng.integers(1, 65))
        if bucket == "small":
            return int(rng.integers(1, 193)), int(rng.integers(1, 193))
        if bucket == "medium":
            return int(rng.integers(1, 1025)), int(rng.integers(1, 1025))
        if bucket == "limit":
            return 4096, 4096
        return int(rng.integers(4097, 16385)), int(rng.integers(1, 16385))

    def _latents(self, rng, width, height):
        h, w = -(-height // 64), -(-width // 64)
        g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        z = torch.randn(1, self.net.entropy_bottleneck.channels, h, w, generator=g) * float(rng.choice([0.5, 2, 8]))
        y = torch.randn(1, self.net.M, 4 * h, 4 * w, generator=g) * float(rng.choice([0.3, 1, 4, 16]))
        if rng.random() < 0.3:  # a few outliers: escape symbols in both strings
            for t in (y, z):
                flat = t.view(-1)
                pick = torch.randint(0, flat.numel(), (max(1, flat.numel() // 500),), generator=g)
                flat[pick] = torch.randn(pick.numel(), generator=g) * float(rng.choice([300, 5e4]))
        return y, z

    @staticmethod
    def _mutate(rng, strings: list[bytes]) -> tuple[list[bytes], str]:
        op = rng.choice(["flip", "cut", "grow", "swap", "shuffle", "zero-tail"])
        i = int(rng.integers(len(strings)))
        s = bytearray(strings[i])
        if op == "flip":
            for _ in range(int(rng.integers(1, 4))):
                s[int(rng.integers(len(s)))] ^= 1 << int(rng.integers(8))
        elif op == "cut":
            del s[len(s) - 4 * int(rng.integers(1, max(2, len(s) // 4))):]
        elif op == "grow":
            s += rng.bytes(4 * int(rng.integers(1, 8)))
        elif op == "swap" and len(strings) > 1:
            strings = strings[::-1]
            return strings, "canonical-swap"
        elif op == "shuffle":
            words = [bytes(s[k:k + 4]) for k in range(0, len(s), 4)]
            rng.shuffle(words)
            s = bytearray(b"".join(words))
        else:
            s[len(s) // 2:] = bytes(len(s) - len(s) // 2)
        strings = list(strings)
        strings[i] = bytes(s)
        return strings, f"canonical-{op}"

    @staticmethod
    def _raw(rng, symbols: int) -> tuple[bytes, str]:
        kind = rng.choice(["tiny", "zeros", "ones", "random", "repeat", "max"])
        if kind == "tiny":
            return rng.bytes(int(rng.integers(0, 12))), "raw-tiny"
        words = int(rng.integers(2, max(3, min(symbols, 1 << 16))))
        if kind == "max":
            words = max(2, symbols)
        if kind == "zeros":
            return bytes(4 * words), "raw-zeros"
        if kind == "ones":
            return b"\xff" * (4 * words), "raw-ones"
        if kind == "repeat":
            return rng.bytes(4) * words, "raw-repeat"
        return rng.bytes(4 * words + int(rng.integers(0, 4)) * (rng.random() < 0.3)), "raw-random"

    # ----- one case -----------------------------------------------------------------------------
    def case(self, seed: int) -> Case:
        rng = np.random.default_rng(seed)
        width, height = self._size(rng)
        lo, hi = self.backend.rate_range()
        rate_index = int(rng.integers(lo, hi + 1)) if rng.random() < 0.9 else int(rng.integers(0, 1 << 16))
        lambda_k = tuple(int(v) for v in rng.integers(lo if rng.random() < 0.8 else 0, hi + 1, NUM_DECODER_BLOCKS)) \
            if rng.random() < 0.4 else ()
        patches = bitstream.num_patches(width, height)
        bias = rng.integers(0, 256, patches, dtype=np.uint8).tobytes() \
            if rng.random() < 0.3 and patches <= 1 << 16 else b""
        if bias and rng.random() < 0.7:
            bias = bytes(b % 8 for b in bias)
        latent_shape = (-(-height // 64), -(-width // 64))
        if rng.random() < 0.1:
            latent_shape = (max(1, latent_shape[0] + int(rng.integers(-1, 2))), int(rng.integers(1, 300)))
        model_id, weights_hash = self.loaded.name, self.loaded.weights_hash
        if rng.random() < 0.05:
            model_id = str(rng.choice(FOREIGN_SLUGS))
        if rng.random() < 0.05:
            weights_hash = rng.bytes(8)
        mode = ImageMode(int(rng.integers(0, len(ImageMode))))
        if self.autoregressive:  # they take neither: mostly leave them out, so more cases reach the y loop
            lambda_k = lambda_k if rng.random() < 0.2 else ()
            bias = bias if rng.random() < 0.2 else b""

        y_count, z_count = self.symbols(width, height)
        expect_ok, reference = False, None
        canonical_pixels = CANONICAL_AR_PIXELS if self.autoregressive else CANONICAL_PIXELS
        if width * height <= canonical_pixels and rng.random() < 0.6:
            if self.autoregressive:
                strings, decode_reference = self._ar_strings(rng, width, height, rate_index)
            else:
                y, z = self._latents(rng, width, height)
                coded = self.net.compress_latents(y, z)
                strings = [coded["strings"][0][0], coded["strings"][1][0]]

                def decode_reference():
                    return self.backend.reconstruct(coded["y_hat"], rate_index, _lambda_k(lambda_k),
                                                    _bias(bias, width, height))
            kind = "canonical"
            if rng.random() < 0.5:
                strings, kind = self._mutate(rng, strings)
            elif all(8 <= len(s) <= 4 * n for s, n in zip(strings, (y_count, z_count))):
                expect_ok = True
                from codec.image import tensor_to_rgb

                reference = tensor_to_rgb(decode_reference().float().clamp(0, 1)[..., :height, :width])
        else:
            (ys, ky), (zs, kz) = self._raw(rng, y_count), self._raw(rng, z_count)
            strings, kind = [ys, zs], f"{ky}/{kz}"
        n = int(rng.choice([1, 2, 3, 4], p=[0.04, 0.9, 0.04, 0.02]))
        if n != 2:
            strings, kind = (strings + [rng.bytes(8)] * 2)[:n], f"{kind}+{n}-strings"
        header_ok = (model_id == self.loaded.name and weights_hash == self.loaded.weights_hash
                     and latent_shape == (-(-height // 64), -(-width // 64)) and lo <= rate_index <= hi
                     and n == 2 and width * height <= DEFAULT_MAX_PIXELS
                     and (not lambda_k or self.backend.supports_lambda_k) and (not bias or self.backend.supports_bias))
        payload = Payload(model_id=model_id, weights_hash=weights_hash, width=width, height=height, mode=mode,
                          rate_index=rate_index, lambda_k=lambda_k, bias_indices=bias, strings=tuple(strings),
                          latent_shape=latent_shape)
        return Case(seed, bitstream.pack(payload), kind, expect_ok and header_ok, reference if header_ok else None)


    def _ar_strings(self, rng, width: int, height: int, rate_index: int):
        """The model's own coding of a random image (its padded size), and CompressAI's decoding of it."""
        lo, hi = self.backend.rate_range()
        rate = rate_index if lo <= rate_index <= hi else lo
        h, w = -(-height // 64), -(-width // 64)
        g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        x = torch.rand(1, 3, 64 * h, 64 * w, generator=g) * float(rng.choice([0.1, 0.3, 1.0, 3.0]))
        coded = self.backend.compress_latents(self.backend.encode_latents(x, rate), rate)
        strings = [coded["strings"][0][0], coded["strings"][1][0]]
        return strings, lambda: compressai_decompress(self.backend, [[s] for s in strings], coded["shape"], rate)


def ar_network(backend, rate_index: int):
    """The network of an autoregressive backend (ZooBackend: one per quality; ZooVbrBackend: one)."""
    return backend.net if backend.kind == "vbr" else backend.net(rate_index)


def compressai_decompress(backend, strings, shape, rate_index: int):
    """An autoregressive backend's decoding through CompressAI's own context loop (unbounded, unchecked).

    The bounded loop of :mod:`codec.models.zoo_ar` must give exactly this on every canonical string.
    """
    net = ar_network(backend, rate_index)
    bounded = net.__dict__.pop("_decompress_ar")
    try:
        return backend.decompress(strings, shape, rate_index)
    finally:
        net._decompress_ar = bounded


def small_ar_weights(slug: str, folder, seed: int = 0, gain: float = AR_LATENT_GAIN):
    """Writes small seeded weights of ``slug`` (one of :data:`AR_MODELS`) that the registry loads; returns the path."""
    from pathlib import Path

    from compressai.models import JointAutoregressiveHierarchicalPriors
    from compressai.zoo.image_vbr import model_architectures

    from codec.models.zoo import VBR

    torch.manual_seed(seed)
    if slug == "mbt2018":
        net, name = JointAutoregressiveHierarchicalPriors(N=16, M=24), "mbt2018-3-5eed0000.pth"  # quality 3
    elif slug == "mbt2018-vbr":
        net, name = model_architectures[VBR[slug]](N=16, M=24), f"{slug}.pth"
    else:
        raise ValueError(f"no small weights for {slug}; choose from {AR_MODELS}")
    with torch.no_grad():
        net.g_a[-1].weight *= gain
    path = Path(folder) / name
    torch.save(net.state_dict(), path)
    return path


def _lambda_k(lambda_k):
    from codec.pipeline import lambda_k_tensor

    return lambda_k_tensor(lambda_k, "cpu")


def _bias(bias: bytes, width: int, height: int):
    if not bias:
        return None
    from codec.layers import BiasBank

    return torch.frombuffer(bytearray(bias), dtype=torch.uint8).long().view(*BiasBank.grid_shape(height, width))


def issue_11_stream(forge: StreamForge) -> bytes:
    """The 57-byte stream of issue 11: right checksum, 4096x4096 declared, two 4-byte strings."""
    return bitstream.pack(Payload(
        model_id=forge.loaded.name, weights_hash=forge.loaded.weights_hash, width=4096, height=4096,
        mode=ImageMode.RGB, rate_index=forge.backend.rate_index(0.01), lambda_k=(), bias_indices=b"",
        strings=(b"\x01\x02\x03\x04", b"\x05\x06\x07\x08"), latent_shape=(64, 64)))


def outcome_key(exc: BaseException) -> str:
    """A short, stable name for why a case was refused (the first words of the reason)."""
    text = str(exc)
    for key in ("checksum", "declares a", "stream needs model", "other weights", "latent shape",
                "entropy-coded strings;", "rate index", "takes no", "rANS string holds", "whole number",
                "more than an encoder writes", "is not the coding", "escape", "ends after", "would not fit"):
        if key in text:
            return key
    return text[:40]


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


@dataclass
class Report:
    cases: int = 0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    kinds: collections.Counter = field(default_factory=collections.Counter)
    findings: list[str] = field(default_factory=list)
    max_rss: int = 0
    slowest: tuple[float, int] = (0.0, -1)
    seconds: float = 0.0

    def count(self, seed: int, kind: str, key: str, elapsed: float, rss: int, rss_limit: int, whose: str,
              started: float, every: int, progress) -> None:
        """Books one finished case: its outcome, time and RSS, and a running summary every ``every`` cases."""
        self.slowest = max(self.slowest, (elapsed, seed))
        self.max_rss = max(self.max_rss, rss)
        if rss > rss_limit:
            self.findings.append(f"seed {seed} ({kind}): {whose}RSS {rss >> 20} MiB over {rss_limit >> 20} MiB")
        self.cases += 1
        self.outcomes[key] += 1
        self.kinds[kind.split("/")[0].split("+")[0]] += 1
        if every and progress is not None and self.cases % every == 0:
            self.seconds = time.perf_counter() - started
            progress(self)


def run_cases(forge: StreamForge, seeds, decode, rss_limit: int, log=None, every: int = 0, progress=None) -> Report:
    """Decodes each case; a finding is any other exception, a wrong or missing image, or RSS over the limit.

    ``progress(report)`` is called after every ``every`` cases (a long run reports as it goes).
    """
    report = Report()
    started = time.perf_counter()
    for seed in seeds:
        case = forge.case(seed)
        if log is not None:  # a crash kills the process: the last line names the case
            log.write(f"{seed}\n")
            log.flush()
        t = time.perf_counter()
        try:
            result = decode(case.data)
        except BitstreamError as exc:
            key = outcome_key(exc)
            if case.expect_ok:
                report.findings.append(f"seed {seed} ({case.kind}): canonical stream refused: {exc}")
        except Exception as exc:  # noqa: BLE001 - the point is to catch what should not escape
            key = "untyped"
            report.findings.append(f"seed {seed} ({case.kind}): {type(exc).__name__}: {exc}")
        else:
            key = "decoded"
            if case.reference is not None and not np.array_equal(result.rgb, case.reference):
                report.findings.append(f"seed {seed} ({case.kind}): decoded pixels differ from the encoder's")
        report.count(seed, case.kind, key, time.perf_counter() - t, rss_bytes(), rss_limit, "", started, every, progress)
    report.seconds = time.perf_counter() - started
    return report


def run_service_cases(forge: StreamForge, seeds, url: str, api_key: str, api_pid: int, rss_limit: int,
                      every: int = 0, progress=None) -> Report:
    """POSTs each case to ``/decode``; a finding is a 5xx, an untyped 4xx, a dead API or its RSS over the limit."""
    import io

    import httpx
    import psutil
    from PIL import Image

    report = Report()
    api = psutil.Process(api_pid)
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=300) as client:
        for seed in seeds:
            case = forge.case(seed)
            t = time.perf_counter()
            try:
                response = client.post("/decode", files={"file": ("case.mlic", case.data)})
            except httpx.HTTPError as exc:
                report.findings.append(f"seed {seed} ({case.kind}): no answer ({type(exc).__name__}: {exc})")
                break
            status = response.status_code
            if status == 200:
                key = "200"
                size = Image.open(io.BytesIO(response.content)).size
                p = bitstream.unpack(case.data)
                if size != (p.width, p.height):
                    report.findings.append(f"seed {seed} ({case.kind}): PNG is {size}, stream declares "
                                           f"{p.width}x{p.height}")
            elif 400 <= status < 500 and response.headers.get("content-type", "").startswith(
                    "application/problem+json"):
                key = f"{status} {response.json()['code']}"
                if case.expect_ok:
                    report.findings.append(f"seed {seed} ({case.kind}): canonical stream refused: "
                                           f"{response.json()['detail']}")
            else:
                key = f"{status} untyped"
                report.findings.append(f"seed {seed} ({case.kind}): {status} {response.text[:200]}")
            elapsed = time.perf_counter() - t
            if not api.is_running() or api.status() == psutil.STATUS_ZOMBIE:
                report.findings.append(f"seed {seed} ({case.kind}): the API process died")
                break
            report.count(seed, case.kind, key, elapsed, api.memory_info().rss, rss_limit, "API ", started, every,
                         progress)
    report.seconds = time.perf_counter() - started
    return report
