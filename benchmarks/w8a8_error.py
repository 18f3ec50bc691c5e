"""How close w8a8 drafting's matrix products are to exact ones, measured while drafting (not on random inputs).

Generates on held-out training prompts (never the benchmark) with a w8a8 drafter (core.quant.W8A8Linear) and,
for every call of every quantized matrix, compares its output with the exact float32 product of the same inputs
and the drafter's own weights, and with what int8 weights alone (bfloat16 inputs) would give. For the head it
also counts how often the top token is the exact product's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/w8a8_error.py --drafter jakiro --prompts 6
    (prompts from `python benchmarks/heldout_prompts.py H.jsonl`)
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import EngineConfig, FallbackConfig, TreeConfig  # noqa: E402
from core.engine import SpecDecoder  # noqa: E402
from core.quant import W8A8Linear, quantize_rows  # noqa: E402
from core.registry import build_proposer  # noqa: E402
from core.target import TargetModel  # noqa: E402


def exact_weights(drafter) -> dict[str, torch.Tensor]:
    """Every matrix a w8a8 copy quantizes, by its name there -> [N, K] float32."""
    weights = {n: m.weight.float() for n, m in drafter.named_modules() if isinstance(m, torch.nn.Linear)}
    if drafter.cfg.is_moe:
        weights.update({f"ffn.down.experts.{e}": d.T.float() for e, d in enumerate(drafter.ffn.down)})
    weights["head"] = drafter.head_weight.float()
    return weights


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drafter", default="jakiro")
    p.add_argument("--prompts-file", type=Path, default=Path("/tmp/h.jsonl"))
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=64)
    args = p.parse_args()
    target = TargetModel.load("smollm2-135m-instruct", dtype="bfloat16")
    proposer = build_proposer(args.drafter, target, weights="w8a8")
    exact = exact_weights(build_proposer(args.drafter, target, weights="native").drafter)
    int8 = {n: q.float() * s[:, None] for n, (q, s) in ((n, quantize_rows(w)) for n, w in exact.items())}
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    names = {m: n for n, m in proposer.drafter.named_modules() if isinstance(m, W8A8Linear)}

    def compare(module, inputs, output) -> None:
        name, x = names[module], inputs[0].reshape(-1, module.in_features).float()  # [m, K]
        ref = x @ exact[name].T  # [m, N]
        got, weight_only = output.reshape(ref.shape).float(), x.bfloat16().float() @ int8[name].T
        s = sums[name]
        s["calls"] += 1
        s["rows"] += x.shape[0]
        s["w8a8"] += ((got - ref).norm() / ref.norm()).item()
        s["int8"] += ((weight_only - ref).norm() / ref.norm()).item()
        s["top1 w8a8"] += (got.argmax(-1) == ref.argmax(-1)).sum().item()
        s["top1 int8"] += (weight_only.argmax(-1) == ref.argmax(-1)).sum().item()

    for module in names:
        module.register_forward_hook(compare)
    prompts = [json.loads(line)["prompt"] for line in args.prompts_file.read_text().splitlines()][: args.prompts]
    engine = SpecDecoder(target, proposer)
    cfg = EngineConfig(fallback=FallbackConfig(enabled=False), max_new_tokens=args.max_new_tokens,
                       tree=TreeConfig(adaptive=False))
    for prompt in prompts:
        engine.generate(prompt, cfg, detail=False)
    print(f"{args.drafter}: relative error of each matrix's output against the exact product, mean over calls")
    print("| matrix | calls | rows/call | w8a8 | int8 weights alone | head: top token as exact, w8a8 / int8 |")
    print("|---|---|---|---|---|---|")
    for name, s in sums.items():
        top = f"{s['top1 w8a8'] / s['rows']:.3f} / {s['top1 int8'] / s['rows']:.3f}" if name == "head" else ""
        print(f"| {name} | {s['calls']:.0f} | {s['rows'] / s['calls']:.1f} | {s['w8a8'] / s['calls']:.4f} | "
              f"{s['int8'] / s['calls']:.4f} | {top} |")


if __name__ == "__main__":
    main()
