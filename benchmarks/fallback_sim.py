"""Tune the fallback policy (core.policy) offline, on real cycle traces, without re-timing every candidate.

``collect`` runs each drafter with the fallback off and plain decoding on every prompt and saves, per generation,
each cycle's emitted tokens and milliseconds (a small JSON). ``simulate`` replays those traces under fallback
settings: the policy code itself decides each step; a plain step emits one token at the measured plain-step time;
a speculative step at position p replays the traced cycle that covers p (the tokens it accepted from p on, at its
full time: a slight under-estimate of speculation resumed mid-run). Speedups are against plain decoding of the
same tokens, and the same replay with the fallback off is the reference a setting must beat. ``--cost-scale X``
replays every cycle at X times its traced time against the same plain step: a machine where a cycle costs more
plain steps (or an engine whose plain-step estimate is X times too low), where speculation pays less or not at all.
``--price-noise S`` prices the policy's plain step off by a log-normal factor (spread S, one per generation and
draw) as a noisy machine does (session 29: +-7-9% per prompt), while the plain steps it takes cost the true time.

    python benchmarks/heldout_prompts.py H.jsonl
    python benchmarks/fallback_sim.py collect --prompts H.jsonl --limit-per-category 2 --dtype bfloat16 --out T0.json
    python benchmarks/fallback_sim.py collect ... --temperature 1.0 --out T1.json
    python benchmarks/fallback_sim.py simulate T0.json T1.json [--cost-scale 1.3] [--price-noise 0.08]
"""
from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import os
import random
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: the models are local
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import FallbackConfig  # noqa: E402
from core.policy import FallbackState, can_judge, decide, record_plain_estimate, record_step  # noqa: E402


@dataclass(frozen=True)
class Trace:
    starts: list[int]  # token position each cycle started at
    tokens: list[int]  # tokens each cycle emitted
    ms: list[float]  # each cycle's draft + verify + commit time


def collect(args: argparse.Namespace) -> None:
    from core.bench import EngineMethod, load_prompts
    from core.cli import build_parser, engine_config
    from core.target import TargetModel

    cli = build_parser().parse_args(["bench", "--prompts", args.prompts, "--dtype", args.dtype,
                                     "--max-new-tokens", str(args.max_new_tokens),
                                     "--temperature", str(args.temperature), "--seed", str(args.seed)])
    prompts = load_prompts(args.prompts, None, args.limit_per_category)
    target = TargetModel.load(cli.target, cli.dtype, cli.device, False)
    cfg, moe_cfg = engine_config(cli, moe=False), engine_config(cli, moe=True)
    methods = [EngineMethod.build(f"{d}@nofallback", target, cfg, moe_cfg, cli.seed) for d in args.drafters.split(",")]
    plain = EngineMethod.build("none", target, cfg, moe_cfg, cli.seed)
    out: dict = {"config": vars(args), "plain_ms": [], "traces": {m.name: [] for m in methods}}
    for i, prompt in enumerate(prompts):
        ids = target.encode_chat(prompt.text)
        if i == 0:  # warm-up, not kept
            for m in methods + [plain]:
                m.decoder.generate(ids, replace(m.cfg, max_new_tokens=16), detail=False)
        for m in methods:
            steps = [r for r in m.decoder.generate(ids, m.cfg, detail=False) if r.get("kind") == "spec"]
            out["traces"][m.name].append({"tokens": [len(s["emitted"]) for s in steps],
                                          "ms": [s["draft_ms"] + s["verify_ms"] + s["commit_ms"] for s in steps]})
        steps = [r for r in plain.decoder.generate(ids, plain.cfg, detail=False) if r.get("kind") == "plain"]
        times = sorted(s["draft_ms"] + s["verify_ms"] + s["commit_ms"] for s in steps)
        out["plain_ms"].append(times[len(times) // 2])
        print(f"{i + 1}/{len(prompts)} {prompt.category}", file=sys.stderr, flush=True)
    Path(args.out).write_text(json.dumps(out) + "\n")


def load_traces(path: str, cost_scale: float = 1.0) -> tuple[dict[str, list[Trace]], list[float]]:
    """Traces by method, and each generation's plain-step time; ``cost_scale`` multiplies every cycle's time (a
    machine where a cycle costs more plain steps)."""
    data = json.loads(Path(path).read_text())
    traces = {}
    for name, gens in data["traces"].items():
        traces[name] = [Trace(list(itertools.accumulate(g["tokens"], initial=0))[:-1], g["tokens"],
                              [ms * cost_scale for ms in g["ms"]]) for g in gens]
    return traces, data["plain_ms"]


def replay(trace: Trace, plain_ms: float, cfg: FallbackConfig, price_error: float = 1.0) -> tuple[float, int]:
    """(milliseconds, plain steps) to emit the traced tokens under ``cfg``. The policy prices a plain step at
    ``price_error`` times the true one after every speculative cycle (as the engine's verification-based price
    does, off by the machine's drift); the plain steps it takes cost, and are measured at, the true time."""
    total = trace.starts[-1] + trace.tokens[-1]
    state, pos, ms, plain_steps = FallbackState(), 0, 0.0, 0
    while pos < total:
        if state.plain_ms is None and can_judge(state, cfg):
            state.plain_ms = plain_ms * price_error
        kind, _ = decide(state, cfg)
        if kind == "plain":
            emitted, step_ms = 1, plain_ms
            plain_steps += 1
        else:
            c = bisect.bisect_right(trace.starts, pos) - 1
            emitted, step_ms = trace.starts[c] + trace.tokens[c] - pos, trace.ms[c]
        record_step(state, kind, emitted, step_ms, cfg, judged=not (kind == "spec" and pos == 0))  # as the engine:
        # the first cycle carries the drafter's pass over the prompt
        if kind == "spec" and state.plain_ms is not None:
            record_plain_estimate(state, plain_ms * price_error)
        pos += emitted
        ms += step_ms
    return ms, plain_steps


def speedup(traces: list[Trace], plain: list[float], cfg: FallbackConfig,
            errors: list[list[float]] | None = None) -> tuple[float, float]:
    """Speedup over plain decoding (summed over generations, each replayed once per price error in ``errors[i]``,
    exact by default), and the share of steps decoded plainly."""
    spec_ms = plain_ms = 0.0
    plain_steps = steps = 0
    for i, (trace, p) in enumerate(zip(traces, plain)):
        for error in errors[i] if errors else [1.0]:
            ms, n = replay(trace, p, cfg, error)
            spec_ms += ms
            plain_ms += p * (trace.starts[-1] + trace.tokens[-1])
            plain_steps += n
            steps += n + len(trace.tokens)
    return plain_ms / spec_ms, plain_steps / steps


def grid() -> list[FallbackConfig]:
    """Off, the default, each setting moved alone, and a few combinations."""
    base = FallbackConfig()
    alone = ([replace(base, ahead=a) for a in (1.1, 1.2, 1.3, 1.5, 2.0)]
             + [replace(base, confidence=z) for z in (0.5, 1.0, 2.0)]
             + [replace(base, window=w) for w in (4, 32)]
             + [replace(base, judge_after=8), replace(base, margin=0.95), replace(base, margin=0.9),
                replace(base, cooldown=24),
                replace(base, max_cooldown=base.cooldown)])
    combined = [replace(base, ahead=a, confidence=z) for a in (1.2, 1.5) for z in (0.5, 1.0)]
    combined += [replace(base, judge_after=8, confidence=1.0), replace(base, judge_after=8, margin=0.9),
                 replace(base, margin=0.9, confidence=1.0), replace(base, judge_after=8, margin=0.9, confidence=1.0)]
    combined += [replace(base, window=32, judge_after=8, margin=0.9, confidence=1.0, ahead=a) for a in (0.0, 1.2)]
    return [FallbackConfig(enabled=False), base] + alone + combined


def label(cfg: FallbackConfig) -> str:
    """The settings that differ from the default, or "off"/"default"."""
    if not cfg.enabled:
        return "off"
    base = FallbackConfig()
    moved = [f"{f.name} {getattr(cfg, f.name)}" for f in fields(cfg) if getattr(cfg, f.name) != getattr(base, f.name)]
    return ", ".join(moved) or f"default (window {base.window}, judge after {base.judge_after}, cooldown {base.cooldown})"


def price_errors(generations: int, noise: float, draws: int, seed: int = 0) -> list[list[float]] | None:
    """Per generation, ``draws`` log-normal price errors of spread ``noise`` (the same for every setting, so the
    settings are compared on the same luck); None without noise."""
    if noise <= 0:
        return None
    rng = random.Random(seed)
    return [[math.exp(rng.gauss(0.0, noise)) for _ in range(draws)] for _ in range(generations)]


def simulate(args: argparse.Namespace) -> None:
    for path in args.traces:
        traces, plain = load_traces(path, args.cost_scale)
        errors = price_errors(len(plain), args.price_noise, args.draws)
        print(f"\n{path}" + (f", cycles {args.cost_scale}x as costly" if args.cost_scale != 1 else "")
              + (f", plain step priced with a log-normal error of {args.price_noise} ({args.draws} draws)"
                 if errors else ""))
        print(f"{'setting':64}" + "".join(f"{name:>24}" for name in traces))
        for cfg in grid():
            cells = [speedup(t, plain, cfg, errors) for t in traces.values()]
            print(f"{label(cfg):64}" + "".join(f"{s:>14.3f}x {share:>6.1%}p" for s, share in cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--prompts", required=True)
    c.add_argument("--limit-per-category", type=int, default=1)
    c.add_argument("--drafters", default="jakiro,eagle")
    c.add_argument("--dtype", default="float32")
    c.add_argument("--max-new-tokens", type=int, default=128)
    c.add_argument("--temperature", type=float, default=0.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", required=True)
    s = sub.add_parser("simulate")
    s.add_argument("traces", nargs="+")
    s.add_argument("--cost-scale", type=float, default=1.0, help="multiply each cycle's time (what-if)")
    s.add_argument("--price-noise", type=float, default=0.0,
                   help="the policy's plain-step price off by a log-normal factor of this spread, one per generation")
    s.add_argument("--draws", type=int, default=10, help="price errors drawn per generation with --price-noise")
    args = p.parse_args()
    collect(args) if args.cmd == "collect" else simulate(args)


if __name__ == "__main__":
    main()
