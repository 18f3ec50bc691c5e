"""Weight-only int8 drafter weights: half the bytes a bfloat16 drafter forward reads.

On a CPU a drafter forward is memory bound: each matrix costs what reading it costs (benchmarks/RESULTS.md,
"What a drafter forward costs"), half of it the draft vocabulary's rows of the target's lm_head. Stored as int8
with one scale per output row, every matrix is read in half the bytes by ``torch``'s int8 x bfloat16 kernel
(``aten._weight_int8pack_mm``, the one gpt-fast uses on CPUs). Only the drafter is quantized: its proposals
change by rounding, the target verifies them as before, so decoding stays exactly as lossless as it was.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from core.drafter import Drafter, MoEFFN

INT8_MAX = 127


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: weight [N, K] -> (qweight [N, K] int8, scales [N] float32), weight ~ q * scale."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / INT8_MAX  # [N]
    q = (w / scales[:, None]).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)  # [N, K]
    return q, scales


class Int8Linear(nn.Module):
    """A bias-free linear layer with int8 weights and a per-row scale (inference only)."""

    def __init__(self, weight: torch.Tensor) -> None:  # weight [N, K], floating point
        super().__init__()
        q, scales = quantize_rows(weight)
        self.register_buffer("qweight", q.to(weight.device).contiguous())  # [N, K] int8 (the kernel reads rows)
        self.register_buffer("scales", scales.to(weight.device, weight.dtype))  # [N] in the activations' dtype
        self.out_features, self.in_features = q.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [.., K] in the scales' dtype -> [.., N]."""
        flat = x.reshape(-1, self.in_features).contiguous()  # the kernel takes a 2-D input
        out = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scales)  # [m, N]
        return out.reshape(*x.shape[:-1], self.out_features)


class Int8Experts(nn.Module):
    """The MoE experts' down projections in int8: act [.., n, E, I] -> [.., n, E, H] (MoEFFN.down's einsum)."""

    def __init__(self, down: torch.Tensor) -> None:  # down [E, I, H]: expert e computes x @ down[e]
        super().__init__()
        self.experts = nn.ModuleList(Int8Linear(d.T) for d in down)  # each [H, I]

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        return torch.stack([expert(act[..., e, :]) for e, expert in enumerate(self.experts)], dim=-2)


def is_quantized(drafter: Drafter) -> bool:
    return any(isinstance(m, Int8Linear) for m in drafter.modules())


def weights_name(drafter: Drafter | None) -> str | None:
    """How a drafter drafts, for traces and reports: "int8", "native" (the target's dtype), None without one."""
    return None if drafter is None else "int8" if is_quantized(drafter) else "native"


def own_weights(drafter: Drafter) -> int:
    """The drafter's own weights, quantized or not (not the target's head rows it reads)."""
    int8 = sum(m.qweight.numel() for name, m in drafter.named_modules()
               if isinstance(m, Int8Linear) and name != "head")
    return int8 + sum(p.numel() for p in drafter.parameters())


def int8_supported(device: torch.device) -> bool:
    """The int8 kernel runs on CPUs; GPU drafting is bound by kernel launches, not by weight bytes."""
    return device.type == "cpu"


def quantize_drafter(drafter: Drafter) -> Drafter:
    """A copy of a bound drafter (see ``Drafter.bind_head``) whose matrices and draft head are int8.

    Norms, the vocabulary map and the bound head kept for reference stay as they are; ``drafter`` is not
    modified. The copy is for inference only (its int8 buffers take no gradient)."""
    if drafter.head_weight is None:
        raise RuntimeError("bind the drafter to the target's lm_head before quantizing it (its head is quantized too)")
    quantized = copy.deepcopy(drafter).eval()
    linears = [(name, module) for name, module in quantized.named_modules() if isinstance(module, nn.Linear)]
    for name, module in linears:
        parent_name, _, attr = name.rpartition(".")
        parent = quantized.get_submodule(parent_name) if parent_name else quantized
        setattr(parent, attr, Int8Linear(module.weight))
    for module in quantized.modules():
        if isinstance(module, MoEFFN) and isinstance(module.down, nn.Parameter):
            down = module.down
            del module.down  # the Parameter, replaced by a module with the same call
            module.down = Int8Experts(down.detach())
    quantized.head = Int8Linear(quantized.head_weight)
    return quantized
