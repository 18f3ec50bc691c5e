"""Quantized drafter weights: w8a8 (int8 weights and activations), or int8 / int4 weights alone.

A drafter forward on a CPU reads ~10-20 MB of matrices, half of them the draft vocabulary's rows of the target's
lm_head (benchmarks/RESULTS.md, "What a drafter forward costs"). Stored as int8 with one scale per output row
(half the bytes of bfloat16), or as int4 with a scale and an offset per group of 64 inputs (a quarter), every
matrix is multiplied by ``torch``'s CPU kernels for them (``aten._weight_int8pack_mm`` /
``aten._weight_int4pack_mm_for_cpu``, the ones gpt-fast uses on CPUs). Those kernels turned out arithmetic bound
at drafting's 1-16 rows; w8a8 (the default where FBGEMM runs, since session 20) also rounds each call's inputs to
8 bits, after evening out their channels (``core.calibrate``), so FBGEMM's integer kernel does the product, 3-5x
faster. Only the drafter is quantized: its proposals change by rounding, the target verifies them as before, so
decoding stays exactly as lossless as it was.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from core.config import AUTO_DRAFTER_WEIGHTS, DRAFTER_WEIGHTS
from core.drafter import Drafter, MoEFFN

INT8_MAX = 127
INT4_GROUP = 64  # inputs sharing one int4 scale and offset
INT4_ROWS = 16  # the int4 kernel packs rows in blocks of 16: others are padded with zero rows
INT8_BLOCK = 16  # the int8 kernel's bfloat16 path reads inputs in blocks of 16 (other widths crash it)
# The activations' dtype the kernels multiply in, whatever the drafter's dtype: the only one they vectorise on CPUs
# (measured on this CPU at 4 rows, the 8,192 x 576 int8 head: 0.72 ms with bfloat16 activations, 8.2 ms with
# float32 ones; a float32 matmul takes 2.7 ms; float16 activations were ~30x slower than bfloat16 ones at one
# thread). Only the drafter's proposals see the rounding.
KERNEL_DTYPE = torch.bfloat16


def vnni() -> bool:
    """Whether this CPU has AVX-512 VNNI, where FBGEMM's u8 x s8 kernel sums products in int32. Without it (AVX2)
    pairs of products are summed in int16 first, which saturates with 8-bit activations: on session 26's AMD EPYC
    (Zen 3) the tests' random w8a8 products came out 13-23% off (the real drafters' smoothed inputs lost no tau),
    until the activations were rounded to 7 bits there (``reduce_range``; FBGEMM's own advice for such CPUs)."""
    return bool(getattr(torch.cpu, "_is_vnni_supported", lambda: False)())


REDUCE_RANGE = not vnni()  # W8A8Linear's activations in 7 bits where 8 would saturate


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: weight [N, K] -> (qweight [N, K] int8, scales [N] float32), weight ~ q * scale."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / INT8_MAX  # [N]
    q = (w / scales[:, None]).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)  # [N, K]
    return q, scales


def quantize_groups(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per group of ``group`` inputs: weight [N, K] -> (q [N, K] int32 in 0..15, scales [N, K/group],
    offsets [N, K/group]), weight ~ q * scale + offset (float32)."""
    n, k = weight.shape
    w = weight.detach().float().reshape(n, k // group, group)  # [N, G, group]
    low, high = w.amin(-1), w.amax(-1)  # [N, G]
    scales = (high - low).clamp(min=1e-12) / 15
    q = ((w - low[..., None]) / scales[..., None]).round().clamp(0, 15).to(torch.int32)
    return q.reshape(n, k), scales, low


class Int8Linear(nn.Module):
    """A bias-free linear layer with int8 weights and a per-row scale (inference only)."""

    def __init__(self, weight: torch.Tensor) -> None:  # weight [N, K], floating point
        super().__init__()
        if weight.shape[1] % INT8_BLOCK:
            raise ValueError(f"int8 weights need inputs in blocks of {INT8_BLOCK}, this matrix has {weight.shape[1]}")
        q, scales = quantize_rows(weight)
        self.register_buffer("qweight", q.to(weight.device).contiguous())  # [N, K] int8 (the kernel reads rows)
        self.register_buffer("scales", scales.to(weight.device, KERNEL_DTYPE))  # [N]
        self.out_features, self.in_features = q.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [.., K] -> [.., N] in x's dtype (multiplied in the scales' dtype)."""
        flat = x.reshape(-1, self.in_features).to(self.scales.dtype).contiguous()  # the kernel takes a 2-D input
        out = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scales)  # [m, N]
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


class Int4Linear(nn.Module):
    """A bias-free linear layer with int4 weights, a scale and an offset per group of inputs (inference only)."""

    def __init__(self, weight: torch.Tensor, group: int = INT4_GROUP) -> None:  # weight [N, K], floating point
        super().__init__()
        n, k = weight.shape
        if k % group:
            raise ValueError(f"int4 weights need inputs in groups of {group}, this matrix has {k}")
        padded = torch.cat([weight.detach().float(), weight.new_zeros((-n) % INT4_ROWS, k, dtype=torch.float32)])
        q, scales, low = quantize_groups(padded, group)  # [N', K], [N', G], [N', G]
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(weight.device), 1)  # [N', K/2] uint8
        # the kernel computes (q - 8) * scale + zero, so zero = low + 8 * scale
        scales_zeros = torch.stack([scales, low + 8 * scales], dim=-1).transpose(0, 1)  # [G, N', 2]
        self.register_buffer("packed", packed)
        self.register_buffer("scales_zeros", scales_zeros.contiguous().to(weight.device, KERNEL_DTYPE))
        self.group = group
        self.out_features, self.in_features = n, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [.., K] -> [.., N] in x's dtype (multiplied in the scales' dtype)."""
        flat = x.reshape(-1, self.in_features).to(self.scales_zeros.dtype).contiguous()
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group, self.scales_zeros)  # [m, N']
        return out[:, : self.out_features].to(x.dtype).reshape(*x.shape[:-1], self.out_features)


class W8A8Linear(nn.Module):
    """A bias-free linear layer with int8 weights (one scale per row) whose activations are rounded to 8 bits too,
    each call (one scale for the call's rows), and multiplied by FBGEMM's integer kernel (inference only).

    The integer kernel is 3-5x faster than ``_weight_int8pack_mm`` at the rows a drafter forward has (1-16; the
    8,192 x 576 head at 4 rows: 0.13 ms against 0.53 ms on this CPU, benchmarks/RESULTS.md "Session 20"). The
    price is the activations' rounding, which a few outlier input channels would make coarse for all the others:
    given each input channel's largest magnitude while drafting (``act_absmax``, see ``core.calibrate``), the
    channels are first evened out as in SmoothQuant (x / s, W * s with s = sqrt(absmax_x / absmax_W) per channel),
    which leaves the product unchanged and moves the outliers' range into the weights' per-row scales."""

    def __init__(self, weight: torch.Tensor, act_absmax: torch.Tensor | None = None) -> None:  # weight [N, K]
        super().__init__()
        w = weight.detach().float()
        self.register_buffer("inv_smooth", None)  # [K] applied to the inputs, when smoothed
        if act_absmax is not None:
            smooth = (act_absmax.float().clamp(min=1e-5) / w.abs().amax(0).clamp(min=1e-5)).sqrt()  # [K]
            w = w * smooth  # [N, K]
            self.inv_smooth = 1.0 / smooth
        q, scales = quantize_rows(w)
        with warnings.catch_warnings():  # torch marks quantized tensors as deprecated; the kernel is still the one
            warnings.simplefilter("ignore")
            zeros = torch.zeros(q.shape[0], dtype=torch.long)
            qweight = torch._make_per_channel_quantized_tensor(q, scales.double(), zeros, 0)
            self.packed = torch.ops.quantized.linear_prepack(qweight, None)  # FBGEMM's packed layout, not a tensor
        self.out_features, self.in_features = q.shape
        self.register_buffer("qweight", q)  # [N, K] int8: what the packed kernel holds; forward never reads it, but
        # as an int8 buffer it is what makes save_drafter refuse a quantized copy (the packed object is no tensor)
        self.register_buffer("scales", scales)  # [N] float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [.., K] -> [.., N] in x's dtype (the kernel takes and returns float32)."""
        flat = x.reshape(-1, self.in_features).float()  # [m, K]
        if flat.shape[0] == 0:
            return x.new_zeros(*x.shape[:-1], self.out_features)
        if self.inv_smooth is not None:
            flat = flat * self.inv_smooth
        out = torch.ops.quantized.linear_dynamic(flat, self.packed, REDUCE_RANGE)  # [m, N]
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


def w8a8_supported() -> bool:
    """FBGEMM (x86 CPUs) holds the integer kernel W8A8Linear uses."""
    return "fbgemm" in torch.backends.quantized.supported_engines


FORMATS = {"int8": Int8Linear, "int4": Int4Linear, "w8a8": W8A8Linear}


def quantized_linear(weight: torch.Tensor, fmt: str, act_absmax: torch.Tensor | None = None) -> nn.Module:
    """``weight`` [N, K] in ``fmt``; int4 falls back to int8 for a matrix whose inputs do not form int4 groups,
    and a matrix whose inputs the int8 kernel cannot block stays a plain (frozen) linear layer. ``act_absmax``
    [K]: w8a8 only, the inputs' range per channel (see W8A8Linear)."""
    n, k = weight.shape
    if fmt == "w8a8":  # any width
        return W8A8Linear(weight, act_absmax)
    if k % INT8_BLOCK:
        plain = nn.Linear(k, n, bias=False, device=weight.device, dtype=weight.dtype)
        plain.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        return plain
    if fmt == "int4" and k % INT4_GROUP:
        fmt = "int8"
    return FORMATS[fmt](weight)


class QuantExperts(nn.Module):
    """The MoE experts' down projections, quantized: act [.., n, E, I] -> [.., n, E, H] (MoEFFN.down's einsum)."""

    def __init__(self, down: torch.Tensor, fmt: str, ranges: list[torch.Tensor | None] | None = None) -> None:
        super().__init__()  # down [E, I, H]: expert e computes x @ down[e]; ranges: each expert's input range [I]
        ranges = ranges or [None] * len(down)
        self.experts = nn.ModuleList(quantized_linear(d.T, fmt, r) for d, r in zip(down, ranges))  # each [H, I]

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        return torch.stack([expert(act[..., e, :]) for e, expert in enumerate(self.experts)], dim=-2)


def weights_name(drafter: Drafter | None) -> str | None:
    """How a drafter drafts, for traces and reports: "int4" (some matrices may be int8, see quantized_linear),
    "int8", "native" (the target's dtype), or None without a drafter."""
    if drafter is None:
        return None
    kinds = {type(m) for m in drafter.modules()}
    return ("int4" if Int4Linear in kinds else "w8a8" if W8A8Linear in kinds else "int8" if Int8Linear in kinds
            else "native")


def own_weights(drafter: Drafter) -> int:
    """The drafter's own weights, quantized or not (not the target's head rows it reads)."""
    quantized = sum(m.out_features * m.in_features for name, m in drafter.named_modules()
                    if isinstance(m, tuple(FORMATS.values())) and name != "head")
    return quantized + sum(p.numel() for p in drafter.parameters())


def quantized_supported(device: torch.device) -> bool:
    """The int8 and int4 kernels used here run on CPUs; GPU drafting is bound by kernel launches, not bytes."""
    return device.type == "cpu"


def resolve_weights(choice: str, device: torch.device) -> str:
    """A ``--drafter-weights`` choice -> "w8a8", "int8", "int4" or "native" for a target on ``device``."""
    if choice not in DRAFTER_WEIGHTS:
        raise ValueError(f"drafter weights must be one of {', '.join(DRAFTER_WEIGHTS)}, got {choice!r}")
    if choice == "auto":
        if not quantized_supported(device):
            return "native"
        return next(fmt for fmt in AUTO_DRAFTER_WEIGHTS if fmt != "w8a8" or w8a8_supported())
    if choice != "native" and not quantized_supported(device):
        raise ValueError(f"{choice} drafter weights run on a CPU only, the target is on {device.type}")
    if choice == "w8a8" and not w8a8_supported():
        raise ValueError("w8a8 drafter weights need FBGEMM (an x86 CPU build of torch): use int8 here")
    return choice


def quantize_drafter(drafter: Drafter, fmt: str = "int8", ranges: dict[str, torch.Tensor] | None = None) -> Drafter:
    """A copy of a bound drafter (see ``Drafter.bind_head``) whose matrices and draft head are in ``fmt`` ("int8",
    "int4" or "w8a8"). ``ranges``: w8a8's input range per channel of each matrix, by its name in the copy
    ("fc", "ffn.down.experts.0", "head", ...; ``core.calibrate.drafting_ranges``).

    Norms, the vocabulary map and the bound head kept for reference stay as they are; ``drafter`` is not
    modified. The copy is for inference only (its quantized buffers take no gradient)."""
    if fmt not in FORMATS:
        raise ValueError(f"quantized formats are {', '.join(FORMATS)}, got {fmt!r}")
    if drafter.head_weight is None:
        raise RuntimeError("bind the drafter to the target's lm_head before quantizing it (its head is quantized too)")
    ranges = ranges or {}
    quantized = copy.deepcopy(drafter).eval()
    linears = [(name, module) for name, module in quantized.named_modules() if isinstance(module, nn.Linear)]
    for name, module in linears:
        parent_name, _, attr = name.rpartition(".")
        parent = quantized.get_submodule(parent_name) if parent_name else quantized
        setattr(parent, attr, quantized_linear(module.weight, fmt, ranges.get(name)))
    for name, module in list(quantized.named_modules()):
        if isinstance(module, MoEFFN) and isinstance(module.down, nn.Parameter):
            down = module.down
            del module.down  # the Parameter, replaced by a module with the same call
            experts = [ranges.get(f"{name}.down.experts.{e}") for e in range(len(down))]
            module.down = QuantExperts(down.detach(), fmt, experts)
    quantized.head = quantized_linear(quantized.head_weight, fmt, ranges.get("head"))
    return quantized
