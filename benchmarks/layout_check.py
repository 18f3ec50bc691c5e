"""The target's linear-layer layout (core.layout), stock against transposed, paired in one process: each method's
tokens/s, speedup over plain decoding on the same layout, and whether both layouts give the same tokens.

One target is loaded; its layout is switched before each prompt's runs (the order alternating prompt by prompt), and
each layout has its own decoders, so that each measures its own verification cost and plain step.

    python benchmarks/heldout_prompts.py H.jsonl
    python benchmarks/layout_check.py --prompts H.jsonl --limit-per-category 1 [--drafters jakiro,eagle]
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: the models are local
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.bench import EngineMethod, load_prompts  # noqa: E402
from core.cli import build_parser, engine_config  # noqa: E402
from core.target import TargetModel  # noqa: E402
from core.trace import summarize  # noqa: E402

LAYOUTS = ("stock", "transposed")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", required=True)
    p.add_argument("--limit-per-category", type=int, default=1)
    p.add_argument("--drafters", default="jakiro,eagle")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--no-fallback", action="store_true")
    args = p.parse_args()
    cli = build_parser().parse_args(["bench", "--prompts", args.prompts, "--dtype", args.dtype,
                                     "--max-new-tokens", str(args.max_new_tokens)]
                                    + (["--no-fallback"] if args.no_fallback else []))
    prompts = load_prompts(args.prompts, None, args.limit_per_category)
    target = TargetModel.load(cli.target, cli.dtype, cli.device, False, layout="stock")
    cfg, moe_cfg = engine_config(cli, moe=False), engine_config(cli, moe=True)
    specs = ["none"] + args.drafters.split(",")
    methods = {}
    for layout in LAYOUTS:  # each layout's decoders warm up, and time their costs, on their own layout
        target.set_layout(layout)
        methods[layout] = [EngineMethod(s, target, cfg, moe_cfg, cli.seed) for s in specs]
        for m in methods[layout]:
            m.decoder.generate(target.encode_chat(prompts[0].text), replace(m.cfg, max_new_tokens=16), detail=False)
    tokens = {(layout, s): 0 for layout in LAYOUTS for s in specs}
    seconds = dict.fromkeys(tokens, 0.0)
    same = 0
    for i, prompt in enumerate(prompts):
        ids = target.encode_chat(prompt.text)
        outputs = {}
        for layout in (LAYOUTS if i % 2 == 0 else LAYOUTS[::-1]):
            target.set_layout(layout)
            for spec, m in zip(specs, methods[layout]):
                summary = summarize(m.decoder.generate(ids, m.cfg, detail=False))
                tokens[layout, spec] += summary.new_tokens
                seconds[layout, spec] += summary.decode_s
                outputs[layout, spec] = summary.text_tokens
        same += len(set(map(tuple, outputs.values()))) == 1
        print(f"{i + 1}/{len(prompts)} {prompt.category}", file=sys.stderr, flush=True)
    print(f"{len(prompts)} prompts, {args.dtype}, {args.max_new_tokens} new tokens, greedy, "
          f"fallback {'off' if args.no_fallback else 'on'}; all methods and layouts gave the same tokens on "
          f"{same}/{len(prompts)} prompts\n")
    print("| method | stock tok/s | stock speedup | transposed tok/s | transposed speedup | transposed / stock |")
    print("|---|---|---|---|---|---|")
    for spec in specs:
        rate = {layout: tokens[layout, spec] / seconds[layout, spec] for layout in LAYOUTS}
        plain = {layout: tokens[layout, "none"] / seconds[layout, "none"] for layout in LAYOUTS}
        print(f"| {spec} | {rate['stock']:.1f} | {rate['stock'] / plain['stock']:.2f}x | {rate['transposed']:.1f} | "
              f"{rate['transposed'] / plain['transposed']:.2f}x | {rate['transposed'] / rate['stock']:.2f}x |")


if __name__ == "__main__":
    main()
