"""A torch-free stand-in for the codec, with the same contract as ``codec``.

Used by the service and worker unit tests, and by the end-to-end tests only
when ``METALIC_E2E_CODEC=fake`` (they use the real codec by default). Its
bitstream is a lossless zlib container: ``FAKEMLIC | width | height | crc32 | zlib(RGB)``.
"""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from PIL import Image

from codec.errors import BitstreamError, ImageError, ImageTooLargeError, OptionsError

MAGIC = b"FAKEMLIC"
HEADER = struct.Struct(">8sIII")
FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "TIFF"}
STEPS = {"fast": 4, "balanced": 10, "max": 20}


class ImageInfo(NamedTuple):
    width: int
    height: int
    mode: str
    format: str


def probe_image(data: bytes, max_pixels: int) -> ImageInfo:
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (width, height), mode = im.format, im.size, im.mode
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from None
    except Exception as exc:  # Pillow raises many types on garbage
        raise ImageError(f"cannot read the image: {exc}") from None
    if fmt not in FORMATS:
        raise ImageError(f"unsupported format {fmt}")
    if width <= 0 or height <= 0:
        raise ImageError("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLargeError(f"{width}x{height} is more than {max_pixels} pixels")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as exc:
        raise ImageError(f"the image is truncated or corrupt: {exc}") from None
    return ImageInfo(width, height, mode, fmt)


def validate_options(options: dict) -> dict:
    options = dict(options)
    ranges = {"target_bpp": (0.01, 8.0), "lmbda": (1e-4, 1.0), "target_psnr": (15.0, 60.0)}
    given = [k for k in ranges if options.get(k) is not None]
    if len(given) > 1:
        raise OptionsError(f"give at most one of target_bpp, lmbda, target_psnr (got {', '.join(given)})")
    for key in given:
        lo, hi = ranges[key]
        if not lo <= float(options[key]) <= hi:
            raise OptionsError(f"{key} must be in [{lo}, {hi}]")
    if options.get("preset", "balanced") not in STEPS:
        raise OptionsError("preset must be fast, balanced or max")
    steps = options.get("refine_steps")
    if steps is not None and not 0 <= int(steps) <= 5000:
        raise OptionsError("refine_steps must be in [0, 5000]")
    options.setdefault("preset", "balanced")
    options.setdefault("model", "metalic-vr")
    return options


def _rgb(image) -> Image.Image:
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    return image.convert("RGB")


@dataclass
class EncodeResult:
    bitstream: bytes
    metadata: dict = field(default_factory=dict)


@dataclass
class DecodeResult:
    image: Any
    metadata: dict = field(default_factory=dict)


class Encoder:
    """Fake encoder: ``FAKE_STEP_SECONDS`` (env) per progress step, so tests can kill mid-job."""

    def __init__(self, model: str = "metalic-vr", device: str | None = None):
        self.model = model
        self.device = device or "cpu"

    def encode(self, image, options: dict, progress=None) -> EncodeResult:
        started = time.perf_counter()
        rgb = _rgb(image)
        if options.get("fail"):
            raise ImageError("asked to fail")
        steps = options.get("refine_steps") or STEPS[options.get("preset", "balanced")]
        delay = float(os.environ.get("FAKE_STEP_SECONDS", "0.01"))
        payload = zlib.compress(rgb.tobytes(), 6)
        bitstream = HEADER.pack(MAGIC, rgb.width, rgb.height, zlib.crc32(payload)) + payload
        bpp = 8 * len(bitstream) / (rgb.width * rgb.height)
        for step in range(1, steps + 1):
            time.sleep(delay)
            if progress:
                progress({"stage": "refine", "step": step, "steps": steps, "bpp": bpp, "psnr": 99.0})
        return EncodeResult(bitstream, {"bpp": bpp, "psnr": 99.0, "bytes": len(bitstream),
                                        "width": rgb.width, "height": rgb.height, "model": self.model,
                                        "seconds": time.perf_counter() - started})


def decode(data: bytes, device: str = "cpu") -> DecodeResult:
    if len(data) < HEADER.size:
        raise BitstreamError("truncated header")
    magic, width, height, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError("not a metalic bitstream")
    if not (0 < width <= 16384 and 0 < height <= 16384):
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

    def probe_image(self, data: bytes, max_pixels: int) -> ImageInfo:
        return probe_image(data, max_pixels)

    def validate_options(self, options: dict) -> dict:
        return validate_options(options)

    def decode(self, data: bytes, device: str) -> DecodeResult:
        return decode(data, device)
