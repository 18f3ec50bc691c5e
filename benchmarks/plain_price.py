"""How well the fallback's price of a plain step tracks what a plain step of the engine really costs.

The fallback (core.policy) compares speculation's measured speed with plain decoding's, which it cannot see while
it speculates: it prices a plain step either by three bare one-token forwards timed once per decoder
(``plainmeasured``) or by each cycle's own verify + commit time scaled by the target's measured cost of one token
against the verified tree's size (``plainverify``, the default since session 29). A price below the real step makes
speculation look slower than it is, and the fallback switches to plain decoding where speculation still pays.

For each prompt this runs each drafter (the fallback judges but never switches: margin 0.01) and then plain
decoding, in one process, and prints each price over the median real plain step of that prompt (the bare price
timed at each prompt's first judgement, not once per decoder as the engine does: the run-to-run noise of that one
measurement comes on top).
With ``--cost-rounds N`` it also times the target's verification cost N times and prints the spread of the ratio
cost(1 token) / cost(6 tokens), the factor ``plainverify`` scales a ~6-node verification by.

    python benchmarks/heldout_prompts.py H.jsonl
    python benchmarks/plain_price.py --prompts H.jsonl --limit-per-category 2 --count 10 --cost-rounds 8
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: the models are local
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.bench import EngineMethod, load_prompts  # noqa: E402
from core.cli import build_parser, engine_config  # noqa: E402
from core.sizing import LINE_SIZES, fit_cost, measure_verify_cost  # noqa: E402
from core.target import TargetModel  # noqa: E402


def step_ms(record: dict) -> float:
    return record["draft_ms"] + record["verify_ms"] + record["commit_ms"]


def verify_price(record: dict, method: EngineMethod) -> float:
    """The default price (core.engine): this cycle's verify + commit time scaled to one token."""
    cycle_ms = record["verify_ms"] + record["commit_ms"]
    return method.decoder.verify_cost().plain_step_ms(cycle_ms, record["tree_nodes"] + 1)


def cost_spread(target: TargetModel, rounds: int) -> str:
    ratios, seconds = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        cost = fit_cost(measure_verify_cost(target), line_sizes=LINE_SIZES)
        seconds.append(time.perf_counter() - t0)
        ratios.append(cost.verify_ms(1) / cost.verify_ms(6))
    return (f"cost(1)/cost(6) over {rounds} measurements: mean {statistics.mean(ratios):.3f}, sd "
            f"{statistics.stdev(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}; "
            f"{statistics.mean(seconds):.2f} s each")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--limit-per-category", type=int, default=2)
    ap.add_argument("--count", type=int, default=10, help="the last COUNT of the selected prompts")
    ap.add_argument("--drafters", default="jakiro,eagle")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--cost-rounds", type=int, default=0)
    args = ap.parse_args()
    if args.count < 2 or args.cost_rounds == 1:
        ap.error("--count needs at least 2 prompts and --cost-rounds 0 or at least 2 (a spread needs two)")
    cli = build_parser().parse_args(["bench", "--prompts", args.prompts, "--dtype", args.dtype,
                                     "--max-new-tokens", str(args.max_new_tokens)])
    prompts = load_prompts(args.prompts, None, args.limit_per_category)[-args.count:]
    target = TargetModel.load(cli.target, cli.dtype, cli.device, False)
    cfg, moe_cfg = engine_config(cli, moe=False), engine_config(cli, moe=True)
    plain = EngineMethod.build("none", target, cfg, moe_cfg, cli.seed)
    methods = [EngineMethod.build(spec, target, cfg, moe_cfg, cli.seed) for spec in args.drafters.split(",")]
    for m in methods:  # judge on the bare price (timed at each prompt's first judgement) but never fall back; the
        # verify price is computed from the same cycles afterwards
        m.cfg = replace(m.cfg, fallback=replace(m.cfg.fallback, margin=0.01, plain_from_verify=False))
    warm = target.encode_chat(prompts[0].text)
    for m in methods + [plain]:
        m.decoder.generate(warm, replace(m.cfg, max_new_tokens=16), detail=False)
    ratios: dict[str, dict[str, list[float]]] = {m.name: {"bare": [], "verify": []} for m in methods}
    for i, prompt in enumerate(prompts):
        ids = target.encode_chat(prompt.text)
        cycles, bare = {}, {}
        for m in methods:
            m.decoder._plain_ms = None  # timed again at this prompt's first judgement
            cycles[m.name] = [r for r in m.decoder.generate(ids, m.cfg, detail=False) if r.get("kind") == "spec"]
            bare[m.name] = m.decoder._plain_ms
        real = statistics.median(step_ms(r) for r in plain.decoder.generate(ids, plain.cfg, detail=False)
                                 if r.get("kind") == "plain")
        line = [f"{i + 1}/{len(prompts)} {prompt.category}: real plain step {real:.1f} ms"]
        for m in methods:
            verify = statistics.median(verify_price(r, m) for r in cycles[m.name])
            ratios[m.name]["bare"].append(bare[m.name] / real)
            ratios[m.name]["verify"].append(verify / real)
            line.append(f"{m.name}: bare {bare[m.name]:.1f}, verify {verify:.1f}")
        print(" | ".join(line), flush=True)
    for name, prices in ratios.items():
        for price, values in prices.items():
            print(f"{name} {price}: price / real plain step, mean {statistics.mean(values):.3f}, "
                  f"sd {statistics.stdev(values):.3f}")
    if args.cost_rounds:
        print(cost_spread(target, args.cost_rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
