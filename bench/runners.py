"""How the benchmarks reach each codec: one measured encode/decode round trip.

metalic is reached through the small :class:`MetalicRunner` protocol rather
than through the model code, so the evaluation package imports (and is
tested) without a trained model. :func:`metalic_runner` is the adapter over
``codec.pipeline`` that the CLI uses; it imports the pipeline lazily.

:func:`measure` is the one place where a point of an RD curve is measured, for
metalic and for the anchors alike, so both are timed and scored identically::

    image (uint8) --encode--> bytes --decode--> x_hat (uint8)
          |                     |                   |
          |                 len(bytes)*8/(W*H)      |
          +------ PSNR, MS-SSIM (metrics.py) -------+
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from codec import metrics

__all__ = ["MetalicRunner", "PipelineRunner", "metalic_runner", "measure"]


@runtime_checkable
class MetalicRunner(Protocol):
    """What the benchmarks need from metalic: bytes out, pixels back.

    ``encode`` must return the complete container (header included), since
    rate is measured from its length; ``decode`` must return the image at its
    original size (padding removed), as HxWx3 uint8 RGB.
    """

    def encode(self, img: np.ndarray, lmbda: float) -> bytes:
        """Compress an HxWx3 uint8 RGB image at rate parameter ``lmbda``."""
        ...

    def decode(self, data: bytes) -> np.ndarray:
        """Decompress a container to an HxWx3 uint8 RGB image."""
        ...


class PipelineRunner:
    """:class:`MetalicRunner` over ``codec.pipeline`` (the library's encode job).

    Args:
        weights: str, path or None. Weights file for the encoder; None lets
            ``codec.pipeline.Encoder`` load the shipped default model.
        preset: str. Encoder preset sent with every request (``fast``,
            ``balanced``, ``max``).
        **encoder_kwargs: passed to ``codec.pipeline.Encoder`` unchanged.
    """

    def __init__(self, weights: Any = None, preset: str = "fast", **encoder_kwargs: Any) -> None:
        # Imported here, not at module level: the eval package must import
        # (and its tests run) before the model code exists or without torch
        # weights on disk.
        from codec import pipeline

        if weights is not None:
            encoder_kwargs["weights"] = weights
        self._pipeline = pipeline
        self._encoder = pipeline.Encoder(**encoder_kwargs)
        self._weights = None if weights is None else str(weights)
        self.preset = preset

    def encode(self, img: np.ndarray, lmbda: float) -> bytes:
        """Run the encode job at ``lmbda`` and return the container bytes."""
        image = Image.fromarray(np.asarray(img, dtype=np.uint8))
        result = self._encoder.encode(image, {"lmbda": float(lmbda), "preset": self.preset})
        return bytes(result.bitstream)

    def decode(self, data: bytes) -> np.ndarray:
        """Decode a container with ``codec.pipeline.decode``."""
        return self._pipeline.decode(data, weights=self._weights).rgb


def metalic_runner(weights: Any = None, preset: str = "fast", **encoder_kwargs: Any) -> MetalicRunner:
    """Build the :class:`MetalicRunner` the CLI uses (see :class:`PipelineRunner`)."""
    return PipelineRunner(weights=weights, preset=preset, **encoder_kwargs)


def measure(
    img: np.ndarray,
    encode: Callable[[], bytes],
    decode: Callable[[bytes], np.ndarray],
) -> dict[str, Any]:
    """Time one encode and one decode and score the result.

    Args:
        img: np.ndarray. The HxWx3 uint8 original.
        encode: callable. ``() -> bytes``; the complete file.
        decode: callable. ``bytes -> HxWx3 uint8``.

    Returns:
        dict with ``bytes`` (int), ``bpp``, ``psnr`` (dB), ``ms_ssim``
        (``nan`` on small images), ``encode_s`` and ``decode_s`` (wall seconds).
    """
    t0 = time.perf_counter()
    data = encode()
    t1 = time.perf_counter()
    x_hat = decode(data)
    t2 = time.perf_counter()
    x_hat = np.asarray(x_hat)
    if x_hat.shape != img.shape:
        raise ValueError(f"decoder returned shape {x_hat.shape} for an image of shape {img.shape}")
    height, width = img.shape[:2]
    return {
        "bytes": len(data),
        "bpp": metrics.bpp(len(data), width, height),
        "psnr": metrics.psnr(img, x_hat),
        "ms_ssim": metrics.ms_ssim(img, x_hat),
        "encode_s": t1 - t0,
        "decode_s": t2 - t1,
    }
