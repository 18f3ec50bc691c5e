"""The target's linear layers in the faster of two weight layouts on this CPU, chosen by timing both (lossless).

A stock ``nn.Linear`` computes ``x @ W.T`` with W stored [out, in]. On some CPUs MKL's float32 kernel for that
product is slow at the few rows a tree verification has (2-48), and the same product on a transposed contiguous
copy, ``x @ Wt`` with Wt [in, out], runs up to twice as fast (session 25's Intel Xeon: 16 tokens 173 -> 100 ms a
target forward); on others it gains nothing. The swap is made in place (the stock weight is freed), modules keep
their names, and ``weight`` still reads [out, in], so stock modeling code runs unchanged; plain and speculative
decoding of a target always run on the same layout.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

LAYOUTS = ("auto", "stock", "transposed")


class TransposedLinear(nn.Module):
    """``nn.Linear`` computed on its weight stored transposed: the same product, another kernel."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)  # [in, out]
        self.bias = linear.bias

    @property
    def weight(self) -> torch.Tensor:
        """[out, in], a view: what code that reads a linear layer's weight expects."""
        return self.weight_t.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        y = x @ self.weight_t
        return y if self.bias is None else y + self.bias

    def to_linear(self) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight_t.device, dtype=self.weight_t.dtype)
        linear.weight = nn.Parameter(self.weight_t.detach().t().contiguous(), requires_grad=False)
        linear.bias = self.bias
        return linear


def set_layout(module: nn.Module, transposed: bool) -> int:
    """Mutates ``module``: every linear layer inside it in the given layout. Returns how many were swapped."""
    kind = nn.Linear if transposed else TransposedLinear
    swaps = [(name, m) for name, m in module.named_modules() if type(m) is kind]
    for name, m in swaps:
        module.set_submodule(name, TransposedLinear(m) if transposed else m.to_linear())
    return len(swaps)


def is_transposed(module: nn.Module) -> bool:
    return any(isinstance(m, TransposedLinear) for m in module.modules())


@dataclass(frozen=True)
class LayoutChoice:
    """What was timed and what was kept."""

    transposed: bool
    stock_ms: float  # median time of the probe forwards (one token and a tree's worth), stock layout
    transposed_ms: float  # the same, transposed layout

    def describe(self) -> str:
        kept = "transposed" if self.transposed else "stock"
        return f"{kept} (probe forwards: stock {self.stock_ms:.1f} ms, transposed {self.transposed_ms:.1f} ms)"


def choose_layout(module: nn.Module, probe: Callable[[], None], rounds: int = 3, margin: float = 0.95) -> LayoutChoice:
    """Mutates ``module``: times ``probe`` (target forwards) in both layouts, alternating so that drift in the
    machine's speed hits both alike, and keeps the transposed layout only where it is faster by ``margin``. Both
    copies of the weights are held while timing, so that alternating costs no copying."""
    layouts = {False: {name: m for name, m in module.named_modules() if type(m) is nn.Linear}}
    layouts[True] = {name: TransposedLinear(m) for name, m in layouts[False].items()}
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds + 1):  # the first round warms up
        for transposed, modules in layouts.items():
            for name, m in modules.items():
                module.set_submodule(name, m)
            t0 = time.perf_counter()
            probe()
            if r:
                times[transposed].append((time.perf_counter() - t0) * 1e3)
    stock, swapped = (sorted(times[k])[rounds // 2] for k in (False, True))
    keep = swapped < margin * stock
    for name, m in layouts[keep].items():
        module.set_submodule(name, m)
    return LayoutChoice(keep, stock, swapped)
