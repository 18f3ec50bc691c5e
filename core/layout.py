"""The target's linear layers computed by the fastest of three kernels on this CPU, chosen by timing (lossless).

A stock ``nn.Linear`` computes ``x @ W.T`` with W stored [out, in] through MKL. At the few rows a tree verification
has (2-48), which kernel is fast depends on the CPU: on session 25's Intel Xeon the same product on a transposed
contiguous copy, ``x @ Wt`` with Wt [in, out], ran up to twice as fast (16 tokens 173 -> 100 ms a target forward);
on session 26's AMD EPYC (Zen 3, AVX2) the transposed copy was the slowest for the 49,152-row head and oneDNN's
kernel (``torch.ops.mkldnn._linear_pointwise``) twice as fast as stock there. So each kernel is a module with
the interface of ``nn.Linear`` (``weight`` reads [out, in]); a swap is made in place, modules keep their names, and
stock modeling code runs unchanged. Plain and speculative decoding of a target always run on the same kernels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

KERNELS = ("stock", "transposed", "onednn")
LAYOUTS = ("auto",) + KERNELS


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's linear kernel (CPU builds with MKL-DNN)."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


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
        return _linear(self.weight_t.detach().t().contiguous(), self.bias)


class OneDnnLinear(nn.Module):
    """``nn.Linear`` computed by oneDNN's float32 kernel on the same weight tensor (no copy). Where autograd is
    needed, or for another dtype or device, it computes what ``nn.Linear`` does (oneDNN's op has no backward)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # [out, in], [out] | None: shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        if grad or x.device.type != "cpu" or x.dtype != torch.float32 or self.weight.dtype != torch.float32:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")

    def to_linear(self) -> nn.Linear:
        return _linear(self.weight, self.bias)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    linear.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, requires_grad=False)
    linear.bias = bias
    return linear


_MODULES: dict[str, type[nn.Module]] = {"stock": nn.Linear, "transposed": TransposedLinear, "onednn": OneDnnLinear}


def kernel_of(m: nn.Module) -> str | None:
    """The kernel a linear layer computes with, None for any other module."""
    return next((name for name, kind in _MODULES.items() if type(m) is kind), None)


def swap(m: nn.Module, kernel: str) -> nn.Module:
    """A linear layer ``m`` (any kernel) as the same layer computed by ``kernel``; ``m`` itself when it already is."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
    if kernel == "onednn" and not onednn_available():
        raise ValueError("kernel 'onednn' is not in this torch build (it has no MKL-DNN)")
    if kernel_of(m) == kernel:
        return m
    linear = m if type(m) is nn.Linear else m.to_linear()
    return linear if kernel == "stock" else _MODULES[kernel](linear)


def linears(module: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer inside ``module`` (whichever kernel), by name."""
    return {name: m for name, m in module.named_modules() if kernel_of(m) is not None}


def set_layout(module: nn.Module, kernel: str) -> int:
    """Mutates ``module``: every linear layer inside it computed by ``kernel``. Returns how many were swapped."""
    swaps = [(name, m) for name, m in linears(module).items() if kernel_of(m) != kernel]
    for name, m in swaps:
        module.set_submodule(name, swap(m, kernel))
    return len(swaps)


def layout_of(module: nn.Module) -> str | None:
    """The kernel of the linear layers inside ``module``, "mixed" when they differ, None when there are none."""
    kinds = {kernel_of(m) for m in linears(module).values()}
    return None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"


def available_kernels() -> tuple[str, ...]:
    return tuple(k for k in KERNELS if k != "onednn" or onednn_available())


@dataclass(frozen=True)
class LayoutChoice:
    """What was timed and what was kept."""

    kept: str  # one of KERNELS
    ms: dict[str, float]  # median time of the probe in each kernel timed

    def describe(self, what: str = "probe forwards") -> str:
        times = ", ".join(f"{k} {v:.1f} ms" for k, v in self.ms.items())
        return f"{self.kept} ({what}: {times})"


def choose_layout(module: nn.Module, probe: Callable[[], None], rounds: int = 3, margin: float = 0.95) -> LayoutChoice:
    """Mutates ``module``: times ``probe`` with its linear layers in each available kernel, round-robin so that
    drift in the machine's speed hits all alike, and keeps the fastest, but another kernel than stock only where it
    is faster than stock by ``margin``. All copies of the weights are held while timing, so switching costs none."""
    kernels = available_kernels()  # stock first
    stock = {name: swap(m, "stock") for name, m in linears(module).items()}
    layouts = {k: stock if k == "stock" else {name: swap(m, k) for name, m in stock.items()} for k in kernels}
    times: dict[str, list[float]] = {k: [] for k in kernels}
    for r in range(rounds + 1):  # the first round warms up
        for kernel, modules in layouts.items():
            for name, m in modules.items():
                module.set_submodule(name, m)
            t0 = time.perf_counter()
            probe()
            if r:
                times[kernel].append((time.perf_counter() - t0) * 1e3)
    ms = {k: sorted(v)[rounds // 2] for k, v in times.items()}
    fastest = min(ms, key=ms.get)
    keep = fastest if ms[fastest] < margin * ms["stock"] else "stock"
    for name, m in layouts[keep].items():
        module.set_submodule(name, m)
    return LayoutChoice(keep, ms)
