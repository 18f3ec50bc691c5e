"""What one drafter forward (and its draft log-softmax) costs, per weights format, on this machine.

A shipped drafter over n frontier nodes with 300 positions of context, as drafting calls it (one sequence, a tree
mask), median of repeated calls interleaved across the formats. ``--cold`` touches 160 MB between calls, so the
weights come from memory as they do after a target forward (the caches hold the target's weights then).

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/drafter_forward.py --drafter jakiro --cold
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.registry import build_proposer  # noqa: E402
from core.target import TargetModel  # noqa: E402

CONTEXT = 300  # positions already in the drafter's cache


def one_call(drafter, cache, n: int) -> None:
    """One drafter forward over n new positions that see the whole context, then the draft log-softmax."""
    H = drafter.cfg.hidden_size
    feats, embeds = torch.randn(n, H), torch.randn(n, H)
    mask = torch.ones(n, CONTEXT + n, dtype=torch.bool)
    out = drafter(feats, embeds, torch.full((n,), CONTEXT), cache, mask)
    drafter.log_probs(out.features)
    cache.crop(CONTEXT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drafter", default="jakiro")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--weights", default="int8,w8a8,native")
    p.add_argument("--rows", default="1,4,8,16")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--cold", action="store_true", help="touch 160 MB between calls (weights come from memory)")
    args = p.parse_args()
    torch.manual_seed(0)
    target = TargetModel.load("smollm2-135m-instruct", dtype=args.dtype)
    drafters = {w: build_proposer(args.drafter, target, weights=w).drafter for w in args.weights.split(",")}
    scratch = torch.empty(40_000_000) if args.cold else None  # 160 MB of float32
    with torch.inference_mode():
        caches = {}
        for w, d in drafters.items():
            caches[w] = d.new_cache(512)
            H = d.cfg.hidden_size
            d(torch.randn(CONTEXT, H), torch.randn(CONTEXT, H), torch.arange(CONTEXT), caches[w])
        print(f"{args.drafter}, {args.dtype} target, {torch.get_num_threads()} thread(s), "
              f"{'cold' if args.cold else 'warm'} caches; ms per forward + log-softmax (median of {args.repeats})")
        print("| rows | " + " | ".join(drafters) + " |")
        print("|---|" + "---|" * len(drafters))
        for n in (int(r) for r in args.rows.split(",")):
            times: dict[str, list[float]] = {w: [] for w in drafters}
            for i in range(args.repeats + 10):
                for w, d in drafters.items():
                    if scratch is not None:
                        scratch.add_(1.0)
                    t0 = time.perf_counter()
                    one_call(d, caches[w], n)
                    if i >= 10:  # warm-up
                        times[w].append((time.perf_counter() - t0) * 1e3)
            print(f"| {n} | " + " | ".join(f"{statistics.median(t):.2f}" for t in times.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
