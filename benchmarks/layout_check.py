"""The kernels of the target's linear layers and head (core.layout), two settings paired in one process: each
method's tokens/s, speedup over plain decoding on the same kernels, and whether both settings give the same tokens.

One target is loaded; its kernels are switched before each prompt's runs (the order alternating prompt by prompt),
and each setting has its own decoders, so that each measures its own verification cost and plain step. A setting is
DECODER/HEAD kernels (stock, transposed, onednn).

    python benchmarks/heldout_prompts.py H.jsonl
    python benchmarks/layout_check.py --prompts H.jsonl --limit-per-category 1 [--drafters jakiro,eagle]
        [--layouts stock/transposed,transposed/transposed]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", required=True)
    p.add_argument("--limit-per-category", type=int, default=1)
    p.add_argument("--drafters", default="jakiro,eagle")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--no-fallback", action="store_true")
    p.add_argument("--layouts", default="stock/transposed,transposed/transposed",
                   help="two DECODER/HEAD kernel settings, the first the reference")
    args = p.parse_args()
    layouts = args.layouts.split(",")
    if len(layouts) != 2 or not all(len(x.split("/")) == 2 for x in layouts):
        p.error("--layouts takes two DECODER/HEAD settings, e.g. stock/transposed,stock/onednn")
    cli = build_parser().parse_args(["bench", "--prompts", args.prompts, "--dtype", args.dtype,
                                     "--max-new-tokens", str(args.max_new_tokens)]
                                    + (["--no-fallback"] if args.no_fallback else []))
    prompts = load_prompts(args.prompts, None, args.limit_per_category)
    target = TargetModel.load(cli.target, cli.dtype, cli.device, False, layout="stock")
    cfg, moe_cfg = engine_config(cli, moe=False), engine_config(cli, moe=True)
    specs = ["none"] + args.drafters.split(",")
    methods = {}
    for layout in layouts:  # each setting's decoders warm up, and time their costs, on their own kernels
        target.set_layout(*layout.split("/"))
        methods[layout] = [EngineMethod.build(s, target, cfg, moe_cfg, cli.seed) for s in specs]
        for m in methods[layout]:
            m.decoder.generate(target.encode_chat(prompts[0].text), replace(m.cfg, max_new_tokens=16), detail=False)
    tokens = {(layout, s): 0 for layout in layouts for s in specs}
    seconds = dict.fromkeys(tokens, 0.0)
    same = 0
    for i, prompt in enumerate(prompts):
        ids = target.encode_chat(prompt.text)
        outputs = {}
        for layout in (layouts if i % 2 == 0 else layouts[::-1]):
            target.set_layout(*layout.split("/"))
            for spec, m in zip(specs, methods[layout]):
                summary = summarize(m.decoder.generate(ids, m.cfg, detail=False))
                tokens[layout, spec] += summary.new_tokens
                seconds[layout, spec] += summary.decode_s
                outputs[layout, spec] = summary.text_tokens
        same += len(set(map(tuple, outputs.values()))) == 1
        print(f"{i + 1}/{len(prompts)} {prompt.category}", file=sys.stderr, flush=True)
    old, new = layouts
    print(f"{len(prompts)} prompts, {args.dtype}, {args.max_new_tokens} new tokens, greedy, "
          f"fallback {'off' if args.no_fallback else 'on'}; all methods and settings gave the same tokens on "
          f"{same}/{len(prompts)} prompts; settings are decoder/head kernels\n")
    print(f"| method | {old} tok/s | speedup | {new} tok/s | speedup | {new} / {old} |")
    print("|---|---|---|---|---|---|")
    for spec in specs:
        rate = {layout: tokens[layout, spec] / seconds[layout, spec] for layout in layouts}
        plain = {layout: tokens[layout, "none"] / seconds[layout, "none"] for layout in layouts}
        print(f"| {spec} | {rate[old]:.1f} | {rate[old] / plain[old]:.2f}x | {rate[new]:.1f} | "
              f"{rate[new] / plain[new]:.2f}x | {rate[new] / rate[old]:.2f}x |")


if __name__ == "__main__":
    main()
