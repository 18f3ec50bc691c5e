"""What each kernel of core.layout costs on this CPU: all the default target's decoder linear layers (30 layers x
q, k, v, o, gate, up, down, random weights of its shapes, cycled so that weights come from memory as in a forward)
and its head (49,152 x 576), timed by rows (the tokens of one target forward). Median of --reps, in ms.

    python benchmarks/kernel_costs.py [--rows 1,4,8,16,32] [--reps 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.layout import available_kernels, swap  # noqa: E402

HIDDEN, KV, FFN, LAYERS, VOCAB = 576, 192, 1536, 30, 49152  # SmolLM2-135M
SHAPES = [(HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN), (FFN, HIDDEN), (FFN, HIDDEN), (HIDDEN, FFN)]


def median_ms(run, reps: int) -> float:
    times = []
    for _ in range(reps + 1):  # the first warms up
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times[1:])[reps // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1,4,8,16,32")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    torch.manual_seed(0)
    decoder = [nn.Linear(i, o, bias=False).requires_grad_(False) for _ in range(LAYERS) for o, i in SHAPES]
    head = nn.Linear(HIDDEN, VOCAB, bias=False).requires_grad_(False)
    print(f"| kernel | {' | '.join(str(r) for r in rows)} |")
    print("|---" * (len(rows) + 1) + "|")
    with torch.inference_mode():
        for part, layers in (("decoder", decoder), ("head", [head])):
            for kernel in available_kernels():
                mods = [swap(m, kernel) for m in layers]
                cells = []
                for n in rows:
                    xs = {d: torch.randn(n, d) for d in (HIDDEN, FFN)}  # [rows, in]
                    cells.append(median_ms(lambda: [m(xs[m.in_features]) for m in mods], args.reps))
                print(f"| {part}, {kernel} | {' | '.join(f'{c:.1f}' for c in cells)} |", flush=True)


if __name__ == "__main__":
    main()
