"""The bf16 decision and output folder of a training run."""

import torch

from codec.amp import bf16_supported


def resolve_amp(setting: str, device: torch.device) -> bool:
    if setting == "on":
        return True
    if setting == "off":
        return False
    return bf16_supported(device)


def prepare_run(cfg, device: str | None):
    """Device (CUDA when present), thread count, bf16 decision and output folder of a training run.

    Returns:
        (torch.device, bool amp, Path out) for any config with ``threads``, ``amp`` and ``out``.
    """
    from pathlib import Path

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    return device, resolve_amp(cfg.amp, device), out
