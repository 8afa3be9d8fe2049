"""Small seeded models and test cards for the codec and bench tests (no shipped weights needed)."""

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from codec.models.variable_rate import VariableRateHyperprior

SMALL = {"N": 16, "M": 32, "lmbda_min": 2.5e-4, "lmbda_max": 0.25}
"""Channel counts and λ range of the small default-architecture test model."""


def synthetic_image(width: int = 128, height: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth gradients, an edge and mild noise: a photo-like test card."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack([255 * xx / width, 128 + 100 * np.sin(yy / 7.0 + seed),
                    np.where(xx + yy > (width + height) / 2, 200.0, 40.0)], axis=-1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def small_net(seed: int = 0, bank: bool = False) -> VariableRateHyperprior:
    """A seeded small default-architecture model whose λ_k modulation is not the identity.

    The fresh modulation's last layer is zero (λ_k would change nothing), so it
    is perturbed; ``bank`` fills 20 bias-bank rows with small random offsets.
    """
    torch.manual_seed(seed)
    net = VariableRateHyperprior(**SMALL)
    with torch.no_grad():
        for m in net.modulations:
            m.fc[2].weight.normal_(0, 0.3)
        if bank:
            for k in range(net.bias_bank.num_layers):
                net.bias_bank.bank(k)[1:21] = torch.randn(20, net.bias_bank.bank(k).shape[1]) * 0.05
    return net


def save_weights(net, path: Path) -> Path:
    torch.save({"model": net.state_dict(), "config": dict(SMALL)}, path)
    return path


def write_start_weights(path: Path, seed: int = 0, *args) -> Path:
    """A seeded N=16, M=24 default-architecture weights file, the start of a fine-tuning test.

    ``args`` after the seed are ``(lmbda_min, lmbda_max)`` when a test needs another λ range.
    """
    torch.manual_seed(seed)
    net = VariableRateHyperprior(16, 24, *args)
    torch.save({"model": net.state_dict(), "config": net.config()}, path)
    return path


def write_training_images(folder: Path, count: int = 3) -> Path:
    """``count`` small photo-like PNGs (160x144) for a training loop to crop."""
    from tests.support.images import make_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        make_image(160, 144, seed=i).save(folder / f"{i}.png")
    return folder
