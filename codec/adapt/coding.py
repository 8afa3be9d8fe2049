"""The narrow interface the adaptation stages code through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Coder:
    """What a stage may use of an encoder: its backend, its model's name, and coding one candidate.

    Args:
        backend: Backend. The model behind the rate index (:class:`codec.backends.Backend`).
        model_name: str. Registry name, for the reasons a stage reports when it skips.
        code: callable. ``code(x, rgb, mode, rate_index, latents=None, lambda_k=(), bias=None, ...)``
            entropy-codes, packs and decodes one candidate (:meth:`codec.pipeline.Encoder.code`).
    """

    backend: Any
    model_name: str
    code: Callable[..., Any]
