"""Where a speculative cycle's time goes, on this machine, with the real model and a shipped drafter.

Wraps the engine's parts in wall-clock timers (no change to the engine), generates on held-out
training prompts (never the benchmark), and prints milliseconds per cycle for: drafter layer
forwards, drafter lm_head + log-softmax, tree building (top-k, frontier, rerank, mask), target
decoder forward, target lm_head, verification of the tree against the logits, KV-cache gather, the
context lookup (matching and grafting its runs), and the rest (Python glue, embedding lookups, tensor bookkeeping). It also prints the ceiling
tau x (plain step) / (cycle) and how far the measured speed is from it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/profile_cycle.py --drafter jakiro --prompts 6 --adaptive
    (the engine's defaults: add --adaptive; --no-lookup turns the context lookup off)
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core.drafting  # noqa: E402
import core.engine  # noqa: E402
from core.config import LOOKUP_MAX, LOOKUP_TOKENS, EngineConfig, FallbackConfig, TreeConfig  # noqa: E402
from core.drafter import Drafter  # noqa: E402
from core.engine import SpecDecoder  # noqa: E402
from core.registry import build_proposer  # noqa: E402
from core.target import TargetModel  # noqa: E402
from core.trace import summarize  # noqa: E402
from core.train.heldout import heldout_prompts  # noqa: E402

ANSWERS = Path(__file__).resolve().parents[1] / "assets" / "train-data"
SPENT: dict[str, float] = defaultdict(float)  # part -> ms, accumulated


def timed(part: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[part] += (time.perf_counter() - t0) * 1e3
    return wrapper


def time_module(part: str, module) -> None:
    """Time a torch module's forward with hooks (it stays the same object)."""
    start: list[float] = []
    module.register_forward_pre_hook(lambda *_: start.append(time.perf_counter()))

    def done(*_):
        SPENT[part] += (time.perf_counter() - start.pop()) * 1e3
    module.register_forward_hook(done)


def instrument(target: TargetModel) -> None:
    Drafter.forward = timed("drafter layer", Drafter.forward)
    Drafter.log_probs = timed("drafter lm_head + log-softmax", Drafter.log_probs)
    for name in ("assemble", "select_frontier", "top_children"):
        setattr(core.drafting, name, timed("tree building", getattr(core.drafting, name)))
    core.engine.kept_subtree = timed("tree building", core.engine.kept_subtree)
    core.engine.verify_tree = timed("verify tokens against logits", core.engine.verify_tree)
    core.engine.keep_accepted = timed("KV-cache gather + truncate", core.engine.keep_accepted)
    core.engine.look_up = timed("context lookup + graft", core.engine.look_up)
    core.engine.graft = timed("context lookup + graft", core.engine.graft)
    time_module("target decoder forward", target.decoder)
    target.logits = timed("target lm_head", target.logits)  # the head product, whichever layout it uses


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--drafter", default="jakiro")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--total-tokens", type=int, default=TreeConfig().total_tokens)
    p.add_argument("--adaptive", action="store_true")
    p.add_argument("--no-lookup", action="store_true")
    args = p.parse_args()
    target = TargetModel.load("default", args.dtype)
    proposer = build_proposer(args.drafter, target)
    moe = proposer.drafter.cfg.is_moe
    lookup = (0, 0) if args.no_lookup else (LOOKUP_TOKENS, LOOKUP_MAX)
    tree = TreeConfig(total_tokens=args.total_tokens, schedule="hybrid" if moe else "standard", adaptive=args.adaptive,
                      lookup=lookup[0], lookup_max=lookup[1])
    cfg = EngineConfig(tree=tree, max_new_tokens=args.max_new_tokens, fallback=FallbackConfig(enabled=False))
    spec, plain = SpecDecoder(target, proposer), SpecDecoder(target)
    prompts = heldout_prompts([ANSWERS / "answers", ANSWERS / "answers-broad"], limit=args.prompts + 1)
    spec.generate(prompts[0].prompt, cfg, detail=False)  # warm-up (and the adaptive cost line)
    plain.generate(prompts[0].prompt, cfg, detail=False)
    instrument(target)
    runs = []
    for hp in prompts[1:]:
        records = []
        for record in spec.stream(hp.prompt, cfg, detail=False):
            if record.get("kind") == "prefill":
                SPENT.clear()  # the prompt's forward is not part of any cycle
            records.append(record)
        s, parts = summarize(records), dict(SPENT)
        base = summarize(plain.generate(hp.prompt, cfg, detail=False))
        runs.append((s, base, parts))
    cycles = sum(s.spec_steps for s, _, _ in runs)
    total = {k: sum(r[2].get(k, 0.0) for r in runs) / cycles for k in {k for r in runs for k in r[2]}}
    cycle_ms = sum((s.draft_ms_per_step + s.verify_ms_per_step + s.commit_ms_per_step) * s.spec_steps
                   for s, _, _ in runs) / cycles
    plain_ms = sum(b.decode_s for _, b, _ in runs) * 1e3 / sum(b.new_tokens for _, b, _ in runs)
    tau = sum(s.new_tokens for s, _, _ in runs) / sum(s.target_forwards for s, _, _ in runs)
    rest = cycle_ms - sum(total.values())
    print(f"{args.drafter}, {args.dtype}, {len(runs)} prompts, {cycles} cycles, tree {tree}")
    print("| part | ms per cycle | share |\n|---|---|---|")
    for part, ms in sorted(total.items(), key=lambda kv: -kv[1]) + [("rest (Python glue, embeddings, bookkeeping)", rest)]:
        print(f"| {part} | {ms:.1f} | {ms / cycle_ms:.0%} |")
    print(f"| **cycle** | **{cycle_ms:.1f}** | 100% |")
    spec_tps = sum(s.new_tokens for s, _, _ in runs) / sum(s.decode_s for s, _, _ in runs)
    print(f"plain step {plain_ms:.1f} ms; tau {tau:.2f} (the ceiling: a cycle as cheap as a plain step); a cycle costs "
          f"{cycle_ms / plain_ms:.2f} plain steps, so tau x plain / cycle = {tau * plain_ms / cycle_ms:.2f}x; "
          f"measured {spec_tps * plain_ms / 1e3:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
