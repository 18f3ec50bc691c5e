"""What the machine computes natively: bfloat16 is fast only where the hardware has it.

A CPU without AVX512-BF16 or AMX (e.g. an Ice Lake Xeon) emulates bfloat16 matrix products: on this project's
Intel machine (session 22) recording the target's features ran at ~125 tokens/s in bfloat16 against ~510 in
float32, one core each, and a Jakiro training step took 50 s in bf16 mixed precision against 14-16 s in fp32.
So the commands that default to bfloat16 for speed (feature recording, training's mixed precision) ask here first
and fall back to float32 where bfloat16 would only be slower.
"""
from __future__ import annotations

import torch


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (CUDA: Ampere or newer; CPU: AVX512-BF16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private in torch.cpu; absent in old versions
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_dtype_name(name: str, device: torch.device | str = "cpu") -> str:
    """``name`` itself, or for ``auto`` the dtype a throughput-bound job should run in on ``device``: bfloat16
    where native, else float32."""
    if name != "auto":
        return name
    return "bfloat16" if native_bf16(device) else "float32"
