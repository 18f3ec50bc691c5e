"""What-if: how many drafted nodes should a cycle verify on this machine?

1. Measure the verification cost line (``core.sizing.measure_verify_cost``).
2. Generate with a large tree on held-out training prompts (never the benchmark), keeping every
   verified node's acceptance. A smaller tree that keeps the T best nodes accepts exactly the part of
   the accepted path that lies inside it, so one large-tree run tells the accepted tokens for every T.
3. For fixed T and for the adaptive rule (``core.sizing.best_size``), print tau and the modelled
   tokens per second: (tokens) / (measured draft ms + modelled verify ms).

    .venv/bin/python benchmarks/tree_size.py --drafter jakiro --prompts 12
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import EngineConfig, FallbackConfig, TreeConfig  # noqa: E402
from core.engine import SpecDecoder  # noqa: E402
from core.registry import build_proposer  # noqa: E402
from core.sizing import Calibration, best_size, fit_cost, measure_verify_cost  # noqa: E402
from core.target import TargetModel  # noqa: E402
from core.train.heldout import heldout_prompts  # noqa: E402

ANSWERS = Path(__file__).resolve().parents[1] / "assets" / "train-data"


def cycles(records: list[dict]) -> list[tuple[list[float], list[bool], float]]:
    """Per spec cycle: kept drafted nodes' scores and accepted flags (best first), and draft ms."""
    out = []
    for r in records:
        if r.get("type") == "step" and r["kind"] == "spec":
            nodes = sorted((n for n in r["nodes"] if n["kept"] and n["depth"] > 0), key=lambda n: -n["score"])
            out.append(([n["score"] for n in nodes], [n["accepted"] for n in nodes], r["draft_ms"]))
    return out


def simulate(data, cost, sizes):
    rows = {}
    for T in sizes:
        tokens = sum(1 + sum(acc[:T]) for _, acc, _ in data)
        ms = sum(d + cost.verify_ms(min(T, len(acc)) + 1) for _, acc, d in data)
        rows[f"fixed {T}"] = (tokens / len(data), tokens / ms * 1e3, float(T))
    calib, tokens, ms, chosen = Calibration(), 0, 0.0, []
    for scores, acc, d in data:
        probs = torch.tensor(scores).exp()
        T = best_size(probs, cost, d, calib.ratio, len(acc))
        calib.update(float(probs[:T].sum()), sum(acc[:T]))
        tokens += 1 + sum(acc[:T])
        ms += d + cost.verify_ms(T + 1)
        chosen.append(T)
    rows["adaptive"] = (tokens / len(data), tokens / ms * 1e3, sum(chosen) / len(chosen))
    return rows, calib.ratio


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--drafter", default="jakiro")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--prompts", type=int, default=12)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--total-tokens", type=int, default=64)
    args = p.parse_args()
    target = TargetModel.load("default", args.dtype)
    samples = measure_verify_cost(target)
    cost = fit_cost(samples)
    print("verify cost samples (nodes, ms):", [(n, round(ms, 1)) for n, ms in samples])
    print(f"fit: {cost.fixed_ms:.1f} ms + {cost.per_node_ms:.2f} ms per extra node")
    proposer = build_proposer(args.drafter, target)
    moe = proposer.drafter.cfg.is_moe
    tree = TreeConfig(total_tokens=args.total_tokens, schedule="hybrid" if moe else "standard")
    cfg = EngineConfig(tree=tree, max_new_tokens=args.max_new_tokens, fallback=FallbackConfig(enabled=False))
    decoder = SpecDecoder(target, proposer)
    data = []
    for hp in heldout_prompts([ANSWERS / "answers", ANSWERS / "answers-broad"], limit=args.prompts):
        data += cycles(decoder.generate(hp.prompt, cfg))
    rows, ratio = simulate(data, cost, (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64))
    plain = 1e3 / cost.verify_ms(1)
    print(f"{len(data)} cycles; calibration ratio (accepted / predicted) {ratio:.2f}; plain {plain:.1f} tok/s (model)")
    print("| tree | tau | tokens/s (model) | speedup (model) | mean nodes |\n|---|---|---|---|---|")
    for name, (tau, tps, nodes) in rows.items():
        print(f"| {name} | {tau:.2f} | {tps:.1f} | {tps / plain:.2f}x | {nodes:.1f} |")
    print(json.dumps({"samples": samples, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
