"""Shipped weights: the manifest, sha256 checks, and the per-process model cache.

``codec/weights/manifest.json`` lists each shipped file with its sha256, model
config, training facts and log. Files load with ``torch.load(weights_only=True)``
after their hash is checked; a mismatch is a :class:`ModelError`, never a
silently different model.
"""

import functools
import hashlib
import json
import threading
import warnings
from pathlib import Path

from .errors import ModelError
from .loaded import LoadedModel, sha256_file

WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"


def read_manifest() -> dict:
    if not MANIFEST.exists():
        return {"default": None, "models": {}}
    return json.loads(MANIFEST.read_text())


def load_state(path: Path, sha256: str | None):
    import torch

    if not path.exists():
        raise ModelError(f"weights file {path} is missing")
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        raise ModelError(f"weights file {path.name} fails its sha256 check (got {digest[:12]}…, manifest {sha256[:12]}…)")
    return torch.load(path, map_location="cpu", weights_only=True), digest


_LOAD_LOCK = threading.Lock()


def load_model(name: str, device: str = "cpu", weights: str | None = None) -> LoadedModel:
    """The named model on ``device``, loaded once per process (thread-safe).

    Args:
        name: str. A registry slug (see :data:`codec.registry.MODELS`).
        device: str. "cpu" or "cuda[:i]".
        weights: str or None. A local weights file overriding the manifest.
    """
    # two decode threads must not build two models (a seeded init is not thread-safe)
    with _LOAD_LOCK:
        return _load_model(name, device, weights)


@functools.lru_cache(maxsize=8)
def _load_model(name: str, device: str = "cpu", weights: str | None = None) -> LoadedModel:
    import torch

    from . import models  # noqa: F401  (fills the registry)
    from .registry import MODELS

    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    entry = MODELS[name]
    if hasattr(entry, "load_backend"):  # a zoo model: its own weights files, its own backend
        return entry.load_backend(device, weights)
    models = read_manifest()["models"]
    manifest = models.get(name)
    if manifest is not None and "weights_of" in manifest:
        # a model that starts from another entry's file (the gated default before its fine-tune)
        manifest = models[manifest["weights_of"]]
    cls = entry
    if weights is None and manifest is None:
        # No shipped weights yet: a seeded random model still round-trips exactly.
        warnings.warn(f"no shipped weights for {name}; using a seeded random initialisation", stacklevel=2)
        torch.manual_seed(0)
        net = cls()
        digest = hashlib.sha256(b"untrained:" + name.encode()).hexdigest()
        trained = False
    else:
        path = Path(weights) if weights else WEIGHTS_DIR / manifest["file"]
        state, digest = load_state(path, None if weights else manifest["sha256"])
        try:
            config = state.get("config") or (manifest or {}).get("config", {})
            net = cls(**{k: config[k] for k in ("N", "M", "lmbda_min", "lmbda_max") if k in config})
            net.load_state_dict(state["model"])
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as e:
            # another model's file (a zoo state dict, a training snapshot of other shapes)
            raise ModelError(f"{path.name} is not a {name} weights file ({type(e).__name__}: {e})") from None
        trained = True
    if not trained or net.gaussian_conditional._quantized_cdf.numel() == 0:
        net.update(force=True)  # exported weights carry their CDF tables; snapshots do not
    net = net.eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    from .backends import VariableRateBackend

    return LoadedModel(name, VariableRateBackend(net), bytes.fromhex(digest)[:8], trained)
