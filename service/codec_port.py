"""The service's one door to the codec library: probe, validate options, decode.

The API process only needs the image rules, the option schema and decode, so they sit behind
:class:`CodecPort`. The default :class:`LibraryCodec` imports ``codec`` lazily
(``probe_image`` and ``validate_options`` never import torch; ``decode`` does, on
first use); unit tests inject a fake with ``create_app(codec=...)``.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Protocol

class CodecPort(Protocol):
    """What the API needs of the codec; the image rules and option schema are the codec's own."""

    def sniff_format(self, data: bytes) -> str | None: ...

    def probe_image(self, data: bytes, max_pixels: int) -> Any:
        """The codec's whole image policy under ``max_pixels``; raises the codec's ImageError."""

    def validate_options(self, options: dict) -> dict: ...

    def decode(self, data: bytes, device: str, max_pixels: int) -> Any: ...


def _import(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


class LibraryCodec:
    """:class:`CodecPort` backed by the ``codec`` package.

    Args:
        decoder: str. ``module:attribute`` of the decode function.
    """

    def __init__(self, decoder: str = "codec.pipeline:decode"):
        self._decoder_path = decoder
        self._decode = None
        # Model loading in the codec is not thread-safe (two threads can build two different
        # seeded models), so the first load happens under this lock, then decodes run freely.
        self._load_lock = threading.Lock()
        self.ready = threading.Event()

    def preload(self, model: str, device: str) -> None:
        """Load ``model`` for decoding now (at startup), so /readyz can report it and decodes don't race."""
        with self._load_lock:
            from codec.weights import load_model

            load_model(model, device)
            self.ready.set()

    def sniff_format(self, data: bytes) -> str | None:
        from codec.image import sniff_format

        return sniff_format(data)

    def probe_image(self, data: bytes, max_pixels: int) -> Any:
        from codec.image import probe_image

        return probe_image(data, max_pixels)

    def validate_options(self, options: dict) -> dict:
        from codec.options import validate_options

        normalized = validate_options(options)
        # The codec returns a frozen EncodeOptions; the job carries plain JSON.
        return normalized.to_dict() if hasattr(normalized, "to_dict") else dict(normalized)

    def decode(self, data: bytes, device: str, max_pixels: int) -> Any:
        if self._decode is None:
            self._decode = _import(self._decoder_path)
        if not self.ready.is_set():
            with self._load_lock:
                result = self._decode(data, device=device, max_pixels=max_pixels)
                self.ready.set()
                return result
        return self._decode(data, device=device, max_pixels=max_pixels)
