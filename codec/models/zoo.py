"""CompressAI zoo architectures as metalic backends, from local weights only.

Each zoo model is fixed-rate: one weights file per quality level. Weights come
from a local file or folder (``--weights``) or from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, where ``compressai.zoo`` would have put
them); nothing is ever downloaded. The container's rate index is the quality.
"""

import re
from pathlib import Path

import torch

from ..errors import ModelError
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

for _slug in ZOO:
    register_model(_slug)(lambda _slug=_slug: _slug)


def _url_name(arch: str, quality: int) -> str | None:
    from compressai.zoo.image import model_urls

    url = model_urls.get(arch.replace("_", "-"), {}).get("mse", {}).get(quality)
    return url.rsplit("/", 1)[-1] if url else None


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
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state:
        state = state["state_dict"]
    from compressai.zoo.pretrained import load_pretrained

    try:
        net = model_architectures[arch].from_state_dict(load_pretrained(state))
    except (KeyError, RuntimeError, ValueError) as e:
        raise ModelError(f"{path.name} is not a {slug} state dict: {e}") from None
    return net


def load(slug: str, device: str, weights: str | None):
    import hashlib

    from ..backends import ZooBackend
    from ..weights import LoadedModel, sha256_file

    files = find_weights(slug, weights)
    if not files:
        raise ModelError(f"no local weights for {slug}: pass a weights file or folder, or put CompressAI's "
                         f"files in {Path(torch.hub.get_dir()) / 'checkpoints'} (metalic never downloads)")
    nets = {}
    digest = hashlib.sha256()
    for q, path in sorted(files.items()):
        net = build(slug, path)
        net.update(force=True)
        nets[q] = net.eval().to(device)
        digest.update(bytes.fromhex(sha256_file(path)))
    return LoadedModel(slug, ZooBackend(slug, ZOO[slug][1], nets, TRAINING_LAMBDAS), digest.digest()[:8], True)
