"""A torch-free stand-in for the codec, with the same contract as ``codec``.

Used by the service and worker unit tests, and by the end-to-end tests only
when ``METALIC_E2E_CODEC=fake`` (they use the real codec by default). Its image
rules and option schema are the codec's; only the coding differs: a lossless
zlib container ``FAKEMLIC | width | height | crc32 | zlib(RGB)``, whose PSNR is
measured like the codec's. tests/codec/test_codec_contract.py runs the same
checks on it and on the real codec.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

import numpy as np

from codec import image as codec_image
from codec import options as codec_options
from codec.constants import DEFAULT_MAX_PIXELS
from codec.errors import BitstreamError
from codec.metrics import psnr

MAGIC = b"FAKEMLIC"
HEADER = struct.Struct(">8sIII")
STEPS = {"fast": 4, "balanced": 10, "max": 20}
"""Progress steps a preset reports when ``refine_steps`` is 0 (a stand-in for the stages' work)."""

# The image rules and the option schema are the codec's own (all torch-free), so
# the service and worker tests see exactly what the real codec accepts and refuses.
probe_image = codec_image.probe_image
sniff_format = codec_image.sniff_format


def validate_options(options: dict) -> dict:
    return codec_options.validate_options(options).to_dict()


def _rgb(image, max_pixels: int) -> Image.Image:
    """The input under the codec's image policy (a refused image raises the codec's ImageError)."""
    return Image.fromarray(codec_image.load_image(image, max_pixels).rgb)


@dataclass
class EncodeResult:
    bitstream: bytes
    metadata: dict = field(default_factory=dict)


@dataclass
class DecodeResult:
    image: Any
    metadata: dict = field(default_factory=dict)


def hang_in_native_code(seconds: float) -> None:
    """What a deadlocked native call looks like from Python: the main thread never comes back to the
    interpreter, and RQ's SIGALRM job timeout never gets to run (the signal is blocked, as native
    code that masks signals or is stuck in an uninterruptible call leaves it)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)


def hang_holding_the_gil(seconds: float) -> None:
    """A native call that never comes back *and keeps the GIL*: libc's sleep called through
    ``ctypes.PyDLL``, which (unlike ``CDLL``) does not release the GIL around the call, so no other
    thread of the process (the watchdog, the reaper) runs either. SIGALRM blocked as above."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    libc = ctypes.PyDLL(None)
    libc.sleep.argtypes, libc.sleep.restype = [ctypes.c_uint], ctypes.c_uint
    libc.sleep(int(seconds))


class Encoder:
    """Fake encoder: ``FAKE_STEP_SECONDS`` (env) per progress step, so tests can kill mid-job.

    ``FAKE_HANG_AT_STEP=n`` with ``FAKE_HANG_SECONDS`` makes step n hang in "native code"
    (:func:`hang_in_native_code`), for the tests of the worker's watchdog; with
    ``FAKE_HANG_HOLDS_GIL=1`` the hang keeps the GIL (:func:`hang_holding_the_gil`), for the
    tests of the liveness watcher.
    """

    def __init__(self, model: str = "metalic-vr", device: str | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.model = model
        self.device = device or "cpu"
        self.max_pixels = max_pixels

    def encode(self, image, options: dict, progress=None) -> EncodeResult:
        started = time.perf_counter()
        rgb = _rgb(image, self.max_pixels)
        opts = codec_options.validate_options(options)
        steps = opts.refine_steps or STEPS[opts.preset]
        delay = float(os.environ.get("FAKE_STEP_SECONDS", "0.01"))
        payload = zlib.compress(rgb.tobytes(), 6)
        bitstream = HEADER.pack(MAGIC, rgb.width, rgb.height, zlib.crc32(payload)) + payload
        bpp = 8 * len(bitstream) / (rgb.width * rgb.height)
        quality = psnr(np.asarray(rgb), np.asarray(decode(bitstream).image))
        hang_at = int(os.environ.get("FAKE_HANG_AT_STEP", "0"))
        for step in range(1, steps + 1):
            if step == hang_at:
                hang = hang_holding_the_gil if os.environ.get("FAKE_HANG_HOLDS_GIL") == "1" else hang_in_native_code
                hang(float(os.environ.get("FAKE_HANG_SECONDS", "3600")))
            time.sleep(delay)
            if progress:
                progress({"stage": "refine", "step": step, "steps": steps, "bpp": bpp, "psnr": quality})
        return EncodeResult(bitstream, {"bpp": bpp, "psnr": quality, "bytes": len(bitstream),
                                        "width": rgb.width, "height": rgb.height, "model": self.model,
                                        "seconds": time.perf_counter() - started})


def decode(data: bytes, device: str = "cpu", max_pixels: int = 16384 * 16384) -> DecodeResult:
    if len(data) < HEADER.size:
        raise BitstreamError("truncated header")
    magic, width, height, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError("not a metalic bitstream")
    if not (0 < width <= 16384 and 0 < height <= 16384) or width * height > max_pixels:
        raise BitstreamError("bad image size")
    payload = data[HEADER.size :]
    if zlib.crc32(payload) != crc:
        raise BitstreamError("checksum mismatch")
    try:
        raw = zlib.decompressobj().decompress(payload, width * height * 3 + 1)
    except zlib.error as exc:
        raise BitstreamError(f"corrupt payload: {exc}") from None
    if len(raw) != width * height * 3:
        raise BitstreamError("payload length mismatch")
    return DecodeResult(Image.frombytes("RGB", (width, height), raw), {"width": width, "height": height,
                                                                     "model": "metalic-vr"})


class FakeCodec:
    """:class:`service.codec_port.CodecPort` over this module."""

    def sniff_format(self, data: bytes) -> str | None:
        return sniff_format(data)

    def probe_image(self, data: bytes, max_pixels: int):
        return probe_image(data, max_pixels)

    def validate_options(self, options: dict) -> dict:
        return validate_options(options)

    def decode(self, data: bytes, device: str, max_pixels: int) -> DecodeResult:
        return decode(data, device, max_pixels)
