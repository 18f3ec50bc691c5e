"""Command line: ``python -m core generate|bench|train|prepare ...`` (argparse lives at the edges)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from core.bench import add_parser as add_bench_parser
from core.config import (LOOKUP_MAX, LOOKUP_RUNS, LOOKUP_TOKENS, DRAFTER_WEIGHTS, DTYPE_CHOICES, WEIGHTS_HELP,
                         ConfigError, EngineConfig, FallbackConfig, SamplingConfig, TreeConfig)
from core.drafter import DrafterMismatchError
from core.layout import LAYOUTS
from core.models import DEFAULT_TARGET, ModelSourceError
from core.target import PromptError
from core.trace import TraceError, summarize, write_jsonl
from core.train.cli import add_parser as add_train_parser

USER_ERRORS = (ConfigError, PromptError, DrafterMismatchError, ModelSourceError, TraceError, ValueError, OSError)
DRAFTER_ADVICE = (
    "Use a drafter folder saved for this target by `python -m core train fit --export`, "
    "or --drafter none for plain decoding"
)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET, help="HF hub id (in the local cache) or local folder")
    p.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES,
                   help="auto: bfloat16 where the hardware computes it natively, else float32")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the checkpoint folder")
    p.add_argument("--layout", default="auto", choices=LAYOUTS,
                   help="the kernel of the target's linear layers and head (lossless; stock: nn.Linear, transposed: "
                        "x @ a transposed weight copy, onednn: oneDNN's kernel; auto: the fastest of them here, for "
                        "the decoder and the head each, timed at load; only float32 on a CPU can differ)")


def add_decode_args(p: argparse.ArgumentParser) -> None:
    d = TreeConfig()
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--tree-top-k", type=int, default=d.top_k)
    p.add_argument("--depth", type=int, default=d.depth)
    p.add_argument("--total-tokens", type=int, default=d.total_tokens)
    p.add_argument("--schedule", choices=["auto", "standard", "hybrid"], default="auto",
                   help="auto: hybrid for MoE drafters, standard otherwise")
    p.add_argument("--decoupled", action="store_true", help="siblings from the union of the experts' proposals")
    p.add_argument("--tree-size", choices=["adaptive", "fixed"], default="adaptive",
                   help="adaptive: verify only the nodes that pay on this machine (--total-tokens is the cap)")
    p.add_argument("--no-layer-stop", action="store_true",
                   help="adaptive trees: draft every layer some node could pay for, even when the layer cannot pay "
                        "for its drafter forward")
    p.add_argument("--lookup", type=int, default=LOOKUP_TOKENS,
                   help="also verify up to N tokens that followed the last n-gram earlier in the context "
                        "(prompt lookup inside the draft tree); 0 = off")
    p.add_argument("--lookup-ngram", type=int, default=d.lookup_ngram, help="longest n-gram the lookup matches")
    p.add_argument("--lookup-max", type=int, default=LOOKUP_MAX,
                   help="while text is being copied (a whole run accepted), double the run length up to N tokens")
    p.add_argument("--lookup-curve", type=int, default=d.lookup_curve,
                   help="a k-token match shorter than --lookup-ngram looks up lookup x (k / ngram)^P tokens; "
                        "0 = all alike")
    p.add_argument("--lookup-runs", type=int, default=LOOKUP_RUNS,
                   help="distinct runs looked up after a full --lookup-ngram match (the most recent first)")
    p.add_argument("--lookup-alone", action="store_true",
                   help="when the longest n-gram is followed by a full chain, verify it alone and skip drafting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-fallback", action="store_true",
                   help="always speculate (by default the engine decodes plainly while speculation does not pay)")


def engine_config(args: argparse.Namespace, moe: bool) -> EngineConfig:
    schedule = args.schedule if args.schedule != "auto" else ("hybrid" if moe and args.depth >= 2 else "standard")
    return EngineConfig(
        tree=TreeConfig(top_k=args.tree_top_k, depth=args.depth, total_tokens=args.total_tokens,
                        schedule=schedule, decoupled=args.decoupled, adaptive=args.tree_size == "adaptive",
                        layer_stop=not args.no_layer_stop,
                        lookup=args.lookup, lookup_max=args.lookup_max, lookup_ngram=args.lookup_ngram,
                        lookup_curve=args.lookup_curve,
                        lookup_runs=args.lookup_runs, lookup_alone=args.lookup_alone),
        sampling=SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k),
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        fallback=FallbackConfig(enabled=not args.no_fallback),
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from core.engine import SpecDecoder
    from core.registry import build_proposer
    from core.target import TargetModel

    if not args.prompt.strip():
        raise PromptError("the prompt is empty: pass --prompt TEXT")
    target = TargetModel.load(args.target, args.dtype, args.device, args.trust_remote_code, args.layout)
    try:
        proposer = build_proposer(args.drafter, target, args.seed, args.drafter_weights)
    except DrafterMismatchError as err:
        raise DrafterMismatchError(f"{err}. {DRAFTER_ADVICE}") from err
    cfg = engine_config(args, moe=bool(proposer and proposer.drafter.cfg.is_moe))
    decoder = SpecDecoder(target, proposer)
    t0 = time.perf_counter()
    records = []
    for record in decoder.stream(args.prompt, cfg):
        records.append(record)
        if not args.json and record["type"] == "step":
            sys.stdout.write("".join(t["text"] for t in record["emitted"] if t["token_id"] not in target.stop_token_ids))
            sys.stdout.flush()
    wall = time.perf_counter() - t0
    summary = summarize(records)
    if args.trace:
        write_jsonl(records, args.trace)
    if args.json:
        print(json.dumps({
            "text": target.decode(summary.text_tokens),
            "token_ids": summary.text_tokens,
            "new_tokens": summary.new_tokens,
            "target_forwards": summary.target_forwards,
            "tau": summary.tau,
            "wall_s": wall,
            "tokens_per_s": summary.tokens_per_s,
            "stop_reason": records[-1]["stop_reason"],
            "drafter": decoder.name,
            "summary": summary.to_dict(),
        }))
    else:
        print(f"\n\n[{decoder.name}] {summary.new_tokens} tokens in {summary.target_forwards} target forwards: "
              f"tau {summary.tau:.2f}, {summary.tokens_per_s:.1f} tokens/s", file=sys.stderr)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from core.models import resolve_target

    print(resolve_target(args.target))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate one answer, speculatively or plainly")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--drafter", default="jakiro", help="jakiro | eagle | none | PATH to a drafter folder")
    gen.add_argument("--drafter-weights", choices=DRAFTER_WEIGHTS, default="auto", help=WEIGHTS_HELP)
    add_model_args(gen)
    add_decode_args(gen)
    gen.add_argument("--trace", default=None, help="write the step trace to this JSONL file")
    gen.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    gen.set_defaults(func=cmd_generate)
    prep = sub.add_parser("prepare", help="convert the default model into the cache (done by make setup)")
    prep.add_argument("--target", default=DEFAULT_TARGET)
    prep.set_defaults(func=cmd_prepare)
    add_bench_parser(sub)
    add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
