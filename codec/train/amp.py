"""Whether bf16 autocast pays on this device."""

import torch


def bf16_supported(device: torch.device) -> bool:
    """True on CUDA with bf16, or on a CPU with AMX/AVX512-BF16 (oneDNN fast path).

    Without those units bf16 autocast on a CPU is emulated and slower than
    float32, so training falls back to float32 there.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


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
