"""CompressAI zoo architectures as metalic backends, from local weights only.

Each zoo model is fixed-rate, one weights file per quality level (the
container's rate index is the quality), except the ``*-vbr`` models: one file,
one network, and the rate index is its level. Weights come
from a local file or folder (``--weights``) or from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, where ``compressai.zoo`` would have put
them); nothing is ever downloaded. Every slug is registered here, with the
loader :func:`codec.weights.load_model` reaches it through.
"""

import hashlib
import re
from pathlib import Path

import torch

from ..backends import ZooBackend, ZooVbrBackend
from ..errors import ModelError
from ..loaded import LoadedModel, sha256_file
from ..registry import register_model

# slug -> (compressai architecture key, has y/z latents we can refine)
ZOO = {
    "bmshj2018-factorized": ("bmshj2018-factorized", "factorized"),
    "bmshj2018-factorized-relu": ("bmshj2018_factorized_relu", "factorized"),
    "bmshj2018-hyperprior": ("bmshj2018-hyperprior", "scale-hyperprior"),
    "mbt2018-mean": ("mbt2018-mean", "mean-scale-hyperprior"),
    "mbt2018": ("mbt2018", "autoregressive"),
    "cheng2020-anchor": ("cheng2020-anchor", "autoregressive"),
    "cheng2020-attn": ("cheng2020-attn", "autoregressive"),
}

TRAINING_LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483, 7: 0.0932, 8: 0.1800}
"""λ (MSE, 0-1 range ×255²) CompressAI trained each quality with; refinement uses it."""

VBR = {
    "bmshj2018-hyperprior-vbr": "bmshj2018-hyperprior-vbr",
    "mbt2018-mean-vbr": "mbt2018-mean-vbr",
    "mbt2018-vbr": "mbt2018-vbr",
}
"""slug -> compressai.zoo.image_vbr architecture key: one network for every rate."""

VBR_ENTROPY_BOTTLENECK = {"bmshj2018-hyperprior-vbr", "mbt2018-mean-vbr"}
"""VBR architectures whose released weights carry a variable-rate entropy bottleneck."""


class ZooModel:
    """Registry entry of a zoo model: :meth:`load_backend` finds its local weights and builds its backend."""

    def __init__(self, slug: str):
        self.slug = slug

    def load_backend(self, device: str, weights: str | None):
        return load_vbr(self.slug, device, weights) if self.slug in VBR else load(self.slug, device, weights)

    def __repr__(self) -> str:
        return f"ZooModel({self.slug!r})"


for _slug in (*ZOO, *VBR):
    register_model(_slug)(ZooModel(_slug))


def _url_name(arch: str, quality: int) -> str | None:
    from compressai.zoo.image import model_urls

    url = model_urls.get(arch.replace("_", "-"), {}).get("mse", {}).get(quality)
    return url.rsplit("/", 1)[-1] if url else None


def _missing(slug: str) -> ModelError:
    return ModelError(f"no local weights for {slug}: pass a weights file or folder, or put CompressAI's "
                      f"files in {Path(torch.hub.get_dir()) / 'checkpoints'} (metalic never downloads)")


def _state(path: Path) -> dict:
    from compressai.zoo.pretrained import load_pretrained

    state = torch.load(path, map_location="cpu", weights_only=True)
    return load_pretrained(state["state_dict"] if "state_dict" in state else state)


def find_weights(slug: str, weights: str | None) -> dict[int, Path]:
    """Quality level → local weights file."""
    arch = ZOO[slug][0]
    if weights and Path(weights).is_file():
        m = re.search(r"-(\d)-[0-9a-f]+\.pth", Path(weights).name)
        return {int(m.group(1)) if m else 1: Path(weights)}
    folder = Path(weights) if weights else Path(torch.hub.get_dir()) / "checkpoints"
    found = {}
    for q in range(1, 9):
        name = _url_name(arch, q)
        if name and (folder / name).is_file():
            found[q] = folder / name
    return found


def build(slug: str, path: Path) -> torch.nn.Module:
    from compressai.zoo.image import model_architectures

    arch = ZOO[slug][0]
    state = _state(path)
    try:
        net = model_architectures[arch].from_state_dict(state)
    except (KeyError, RuntimeError, ValueError) as e:
        raise ModelError(f"{path.name} is not a {slug} state dict: {e}") from None
    return net


def load(slug: str, device: str, weights: str | None) -> LoadedModel:
    files = find_weights(slug, weights)
    if not files:
        raise _missing(slug)
    nets = {}
    digest = hashlib.sha256()
    for q, path in sorted(files.items()):
        net = build(slug, path)
        net.update(force=True)
        nets[q] = net.eval().to(device)
        digest.update(bytes.fromhex(sha256_file(path)))
    return LoadedModel(slug, ZooBackend(slug, ZOO[slug][1], nets, TRAINING_LAMBDAS), digest.digest()[:8], True)


def find_vbr_weights(slug: str, weights: str | None) -> Path | None:
    """The local weights file of a VBR model: ``weights`` itself, or CompressAI's file name in a folder."""
    from compressai.zoo.image_vbr import model_urls

    if weights and Path(weights).is_file():
        return Path(weights)
    folder = Path(weights) if weights else Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / model_urls[VBR[slug]]["mse"].rsplit("/", 1)[-1]
    return path if path.is_file() else None


def build_vbr(slug: str, state: dict) -> torch.nn.Module:
    from compressai.zoo.image_vbr import model_architectures

    kwargs = {"vr_entbttlnck": True} if slug in VBR_ENTROPY_BOTTLENECK else {}
    try:
        return model_architectures[VBR[slug]].from_state_dict(state, **kwargs)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ModelError(f"not a {slug} state dict: {e}") from None


def load_vbr(slug: str, device: str, weights: str | None) -> LoadedModel:
    path = find_vbr_weights(slug, weights)
    if path is None:
        raise _missing(slug)
    net = build_vbr(slug, _state(path))
    net.update(force=True)
    net = net.eval().to(device)
    return LoadedModel(slug, ZooVbrBackend(slug, net), bytes.fromhex(sha256_file(path))[:8], True)
