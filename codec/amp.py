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
