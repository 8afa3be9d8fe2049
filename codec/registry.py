"""The single source of model names: ``@register_model("slug")``.

Every name a user types (CLI ``--model``, service option, container model id)
is a key of :data:`MODELS`, spelled once, lowercase with hyphens.
"""

from typing import Callable

MODELS: dict[str, Callable] = {}


def register_model(name: str):
    """Class or factory decorator that records ``name`` in :data:`MODELS`."""

    def decorator(obj):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = obj
        return obj

    return decorator
