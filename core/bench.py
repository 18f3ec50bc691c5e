"""``python -m core bench``: every method on every prompt, interleaved, in one process.

Methods are our engine with a drafter (``jakiro``, ``eagle``, a saved drafter folder), our plain
decoding (``none``, the baseline), and the peers a user would otherwise reach for on the same
target: transformers' own ``generate`` (``hf-generate``) and its prompt-lookup decoding
(``hf-prompt-lookup``). After one warm-up generation per method (not counted), each prompt is
run by every method in turn, so drift in the machine's speed hits all methods alike; the order rotates by one
method each prompt. ``core.bench_stats`` adds bootstrap intervals over the prompts to every ratio.

Vocabulary (the markdown report repeats it):
  tau          new tokens / target forwards, the prefill and the bonus token included (plain = 1.00)
  tokens_per_s new tokens / decode seconds; engine: draft + verify + commit of every step, prefill
               included, record building excluded; hf-*: the whole ``generate`` call
  speedup      tokens_per_s / tokens_per_s of ``none`` over the same prompts
  match_rate   fraction of prompts whose token ids equal ``none``'s exactly (greedy only)
  intervals    the middle 95% of each speedup, tau and method-over-method ratio over redraws of the prompts
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import torch
from tqdm import tqdm

from core.bench_stats import intervals, to_json
from core.config import EngineConfig, to_dict
from core.engine import SpecDecoder
from core.hardware import native_bf16
from core.quant import weights_name
from core.registry import build_proposer
from core.target import TargetModel
from core.trace import fallback_switches, summarize
from core.variants import (DEFAULT_METHODS, HF_METHODS, WEIGHT_VARIANTS, apply_variants, check_methods,
                           method_name, split_variant)

BASELINE = "none"
WARMUP_TOKENS = 16
MAX_PROMPT_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class BenchPrompt:
    question_id: int | str
    category: str
    text: str  # the user turn (Spec-Bench: the first turn)


@dataclass
class Run:
    """One method on one prompt."""

    tokens: list[int]  # generated ids, a final stop token included
    target_forwards: int | None  # None where they cannot be counted
    decode_s: float  # see the module docstring (tokens_per_s)
    wall_s: float  # the whole call
    draft_ms: float | None  # summed over the cycles after the prefill; None where not split
    verify_ms: float | None
    cycles: int  # target forwards after the prefill
    accept_hist: dict[int, int] | None = None  # accepted draft tokens per speculative cycle -> count
    drafter_forwards: int = 0
    plain_steps: int = 0  # steps the fallback decoded plainly (a drafter's runs only)
    fallbacks: tuple[dict[str, Any], ...] = ()  # each switch to plain decoding: the new tokens before it, and why


class Method(Protocol):
    name: str
    cfg: EngineConfig

    def run(self, prompt_ids: list[int], cfg: EngineConfig) -> Run:
        """Generate from ``prompt_ids`` under ``cfg`` and time it."""

    def describe(self) -> dict[str, Any]:
        """Plain-data description for the report's config."""


# --- prompts ------------------------------------------------------------------------------------


def load_prompts(
    path: str | Path, categories: Sequence[str] | None = None, limit_per_category: int | None = None
) -> list[BenchPrompt]:
    """Spec-Bench lines (``turns``, ``category``, ``question_id``) or ``{"prompt": ...}`` lines, in file order."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {str(path)!r} does not exist (give a .jsonl file of prompts)")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise ValueError(f"prompt file {str(path)!r} is larger than {MAX_PROMPT_FILE_BYTES // 2**20} MB")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"prompt file {str(path)!r} is not UTF-8 text: {err}") from err
    prompts = [_parse_prompt(line, number, path) for number, line in enumerate(lines, start=1) if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {str(path)!r} holds no prompts")
    return select_prompts(prompts, categories, limit_per_category)


def _parse_prompt(line: str, number: int, path: Path) -> BenchPrompt:
    where = f"line {number} of {str(path)!r}"
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON: {err.msg}") from err
    if not isinstance(item, dict):
        raise ValueError(f"{where} is not a JSON object")
    turns = item.get("turns")
    if isinstance(turns, list) and turns and isinstance(turns[0], str):
        text = turns[0]
    elif isinstance(item.get("prompt"), str):
        text = item["prompt"]
    else:
        raise ValueError(f"{where} needs 'prompt' (a string) or 'turns' (a non-empty list of strings)")
    if not text.strip():
        raise ValueError(f"{where} has an empty prompt")
    category = item.get("category", "default")
    if not isinstance(category, str) or not category:
        raise ValueError(f"{where} has a 'category' that is not a non-empty string")
    return BenchPrompt(question_id=item.get("question_id", number), category=category, text=text)


def select_prompts(
    prompts: list[BenchPrompt], categories: Sequence[str] | None = None, limit_per_category: int | None = None
) -> list[BenchPrompt]:
    """Keep the named categories (all when None) and at most ``limit_per_category`` prompts of each."""
    present = list(dict.fromkeys(p.category for p in prompts))
    if categories:
        unknown = [c for c in categories if c not in present]
        if unknown:
            raise ValueError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}: "
                             f"the prompt file has {', '.join(present)}")
        prompts = [p for p in prompts if p.category in set(categories)]
    if limit_per_category is not None:
        if limit_per_category < 1:
            raise ValueError(f"--limit-per-category must be at least 1, got {limit_per_category}")
        seen: Counter[str] = Counter()
        kept = []
        for p in prompts:
            seen[p.category] += 1
            if seen[p.category] <= limit_per_category:
                kept.append(p)
        prompts = kept
    return prompts


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


# --- methods ------------------------------------------------------------------------------------


class EngineMethod:
    """Our decoder, speculative with a drafter or plain (``none``)."""

    def __init__(self, spec: str, decoder: SpecDecoder, cfg: EngineConfig) -> None:
        """A runner over ``decoder`` (its name is the method's) with the settings ``cfg``; the app passes its own
        decoders, shared by its users."""
        self.spec, self.name, self.decoder, self.cfg = spec, decoder.name, decoder, cfg
        self.moe = bool(decoder.proposer is not None and decoder.proposer.drafter.cfg.is_moe)
        self._sync = _synchronizer(decoder.target.device)

    @classmethod
    def build(cls, spec: str, target: TargetModel, cfg: EngineConfig, moe_cfg: EngineConfig, seed: int
              ) -> EngineMethod:
        """The method ``spec`` names (``jakiro@fixed``, a drafter folder, ``none``): its proposer built on
        ``target``, its variants applied to ``cfg`` (``moe_cfg`` for an MoE drafter)."""
        base, variants = split_variant(spec)
        weights = next((v for v in variants if v in WEIGHT_VARIANTS), "auto")
        proposer = build_proposer(base, target, seed, weights)
        moe = bool(proposer is not None and proposer.drafter.cfg.is_moe)
        return cls(spec, SpecDecoder(target, proposer, method_name(spec)),
                   apply_variants(moe_cfg if moe else cfg, variants, moe))

    def run(self, prompt_ids: list[int], cfg: EngineConfig) -> Run:
        self._sync()
        t0 = time.perf_counter()
        records = self.decoder.generate(prompt_ids, cfg, detail=False)
        self._sync()
        wall = time.perf_counter() - t0
        summary = summarize(records)
        cycles = summary.target_forwards - 1
        return Run(
            tokens=summary.text_tokens, target_forwards=summary.target_forwards, decode_s=summary.decode_s,
            wall_s=wall, draft_ms=summary.draft_ms_per_step * cycles, verify_ms=summary.verify_ms_per_step * cycles,
            cycles=cycles, accept_hist=summary.accept_length_hist,
            drafter_forwards=round(summary.drafter_forwards_per_step * summary.spec_steps),
            **(fallback_switches(records) if self.decoder.proposer is not None else {}),
        )

    def describe(self) -> dict[str, Any]:
        drafter = getattr(self.decoder.proposer, "drafter", None)
        return {"kind": "engine", "spec": self.spec, "engine": to_dict(self.cfg),
                "drafter_weights": weights_name(drafter),
                "drafter": to_dict(drafter.cfg) if drafter is not None else None}


class HFMethod:
    """transformers' own ``generate`` on the target's model; target forwards counted with a hook."""

    def __init__(self, spec: str, target: TargetModel, cfg: EngineConfig) -> None:
        self.name = spec
        self.cfg = cfg
        self.target = target
        self.extra = dict(HF_METHODS[spec])
        self._sync = _synchronizer(target.device)

    def generate_kwargs(self, cfg: EngineConfig) -> dict[str, Any]:
        s = cfg.sampling
        stop = sorted(self.target.stop_token_ids)
        kwargs: dict[str, Any] = dict(max_new_tokens=cfg.max_new_tokens, eos_token_id=stop,
                                      pad_token_id=stop[0] if stop else None, do_sample=not s.greedy, **self.extra)
        if s.greedy:
            return {**kwargs, "temperature": None, "top_p": None, "top_k": None}
        return {**kwargs, "temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k}  # 0 = off, as in ours

    @torch.inference_mode()
    def run(self, prompt_ids: list[int], cfg: EngineConfig) -> Run:
        ids = torch.tensor([prompt_ids], device=self.target.device)  # [1, n]
        calls = [0]
        hook = self.target.model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        try:
            torch.manual_seed(cfg.seed)
            self._sync()
            t0 = time.perf_counter()
            out = self.target.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                             **self.generate_kwargs(cfg))
            self._sync()
            elapsed = time.perf_counter() - t0
        finally:
            hook.remove()
        tokens = out[0, len(prompt_ids):].tolist()
        return Run(tokens=tokens, target_forwards=calls[0] or None, decode_s=elapsed, wall_s=elapsed,
                   draft_ms=None, verify_ms=None, cycles=max(calls[0] - 1, 0))

    def describe(self) -> dict[str, Any]:
        kwargs = self.generate_kwargs(self.cfg)
        return {"kind": "transformers.generate", "spec": self.name, "generate_kwargs": kwargs}


def build_methods(
    specs: Sequence[str], target: TargetModel, cfg: EngineConfig, moe_cfg: EngineConfig | None = None
) -> list[Method]:
    """One runner per method; ``moe_cfg`` (default ``cfg``) is used by MoE drafters."""
    moe_cfg = moe_cfg or cfg
    return [HFMethod(s, target, cfg) if s in HF_METHODS else EngineMethod.build(s, target, cfg, moe_cfg, cfg.seed)
            for s in check_methods(specs)]


def _synchronizer(device: torch.device):
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


# --- the run ------------------------------------------------------------------------------------


def run_order(methods: int, prompt_index: int) -> list[int]:
    """The order the methods run on one prompt: rotated by one each prompt, so none always runs first or always
    follows the same method (what a method leaves in the caches, or a slow spell that starts mid-prompt, then falls
    on every method alike over the run)."""
    shift = prompt_index % methods
    return list(range(shift, methods)) + list(range(shift))


def run_bench(
    target: TargetModel,
    methods: Sequence[str],
    prompts: Sequence[BenchPrompt],
    cfg: EngineConfig,
    moe_cfg: EngineConfig | None = None,
    progress: bool = True,
    warmup: bool = True,
) -> dict[str, Any]:
    """Run every method on every prompt (prompt-major) and return the report:
    ``{"machine", "config", "results", "per_category", "per_prompt", "intervals"}`` (``core.bench_stats``)."""
    if not prompts:
        raise ValueError("no prompts to benchmark")
    runners = build_methods(methods, target, cfg, moe_cfg)
    prompt_ids = [target.encode_chat(p.text) for p in prompts]
    if warmup:
        for m in runners:
            m.run(prompt_ids[0], dataclasses.replace(m.cfg, max_new_tokens=min(WARMUP_TOKENS, m.cfg.max_new_tokens)))
    runs: dict[str, list[Run]] = {m.name: [] for m in runners}
    with tqdm(total=len(prompts) * len(runners), desc="bench", unit="gen", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for k, name, run in bench_runs(runners, prompt_ids):
            runs[name].append(run)
            bar.set_postfix_str(f"{prompts[k].category} #{prompts[k].question_id} {name}", refresh=False)
            bar.update()
    config = bench_config(runners, prompts, cfg, moe_cfg, WARMUP_TOKENS if warmup else 0)
    return make_report(prompts, runs, cfg.sampling.greedy, machine_info(target), config)


def bench_runs(runners: Sequence[Method], prompt_ids: Sequence[list[int]]) -> Iterator[tuple[int, str, Run]]:
    """(prompt index, method name, its run) for every method on every prompt, prompt-major, the methods in
    ``run_order``; a caller that stops iterating stops between two generations."""
    for k, ids in enumerate(prompt_ids):
        for m in (runners[i] for i in run_order(len(runners), k)):
            yield k, m.name, m.run(ids, m.cfg)


def bench_config(runners: Sequence[Method], prompts: Sequence[BenchPrompt], cfg: EngineConfig,
                 moe_cfg: EngineConfig | None, warmup_tokens: int) -> dict[str, Any]:
    """What a report says about how it ran: every method's settings, the prompts' categories, the baseline."""
    return {
        "methods": {m.name: m.describe() for m in runners}, "engine": to_dict(cfg),
        "engine_moe": to_dict(moe_cfg or cfg), "greedy": cfg.sampling.greedy,
        "warmup_tokens": warmup_tokens, "order": "rotated by one method each prompt",
        "prompts": len(prompts), "categories": dict(Counter(p.category for p in prompts)), "baseline": BASELINE,
    }


def make_report(
    prompts: Sequence[BenchPrompt], runs: dict[str, list[Run]], greedy: bool, machine: dict[str, Any],
    config: dict[str, Any],
) -> dict[str, Any]:
    """Aggregate per-prompt runs overall, per category and per prompt."""
    categories = list(dict.fromkeys(p.category for p in prompts))
    every = list(range(len(prompts)))
    by_category = {c: [i for i, p in enumerate(prompts) if p.category == c] for c in categories}
    baseline = runs.get(BASELINE)
    per_prompt = []
    for i, p in enumerate(prompts):
        row = {name: _prompt_entry(r[i], baseline[i] if baseline else None, greedy) for name, r in runs.items()}
        per_prompt.append({"question_id": p.question_id, "category": p.category, "methods": row})
    return {
        "machine": machine,
        "config": config,
        "results": {name: aggregate(r, baseline, every, greedy) for name, r in runs.items()},
        "per_category": {c: {name: aggregate(r, baseline, idx, greedy) for name, r in runs.items()}
                         for c, idx in by_category.items()},
        "per_prompt": per_prompt,
        "intervals": to_json(intervals({"per_prompt": per_prompt}, BASELINE)) if per_prompt else None,
    }


def aggregate(runs: list[Run], baseline: list[Run] | None, indices: list[int], greedy: bool) -> dict[str, Any]:
    """Metrics of one method over the prompts ``indices`` (see the module docstring)."""
    chosen = [runs[i] for i in indices]
    new_tokens = sum(len(r.tokens) for r in chosen)
    decode_s = sum(r.decode_s for r in chosen)
    forwards = None if any(r.target_forwards is None for r in chosen) else sum(r.target_forwards for r in chosen)
    cycles = sum(r.cycles for r in chosen)
    tps = new_tokens / decode_s if decode_s > 0 else 0.0
    speedup = match_rate = None
    if baseline is not None:
        base = [baseline[i] for i in indices]
        base_s = sum(r.decode_s for r in base)
        base_tps = sum(len(r.tokens) for r in base) / base_s if base_s > 0 else 0.0
        speedup = tps / base_tps if base_tps > 0 else None
        if greedy:
            match_rate = sum(r.tokens == b.tokens for r, b in zip(chosen, base)) / len(chosen)
    split = all(r.draft_ms is not None for r in chosen) and cycles > 0
    return {
        "prompts": len(chosen),
        "new_tokens": new_tokens,
        "target_forwards": forwards,
        "tau": new_tokens / forwards if forwards else None,
        "decode_s": decode_s,
        "tokens_per_s": tps,
        "speedup": speedup,
        "match_rate": match_rate,
        "draft_ms": sum(r.draft_ms for r in chosen) / cycles if split else None,
        "verify_ms": sum(r.verify_ms for r in chosen) / cycles if split else None,
        "wall_s": sum(r.wall_s for r in chosen),
        **acceptance_stats(chosen),
    }


def acceptance_stats(runs: list[Run]) -> dict[str, Any]:
    """Speculative cycles, mean accepted drafts per cycle, alpha_d by depth, drafter forwards per cycle."""
    hist: dict[int, int] = {}
    for run in runs:
        for length, count in (run.accept_hist or {}).items():
            hist[int(length)] = hist.get(int(length), 0) + count
    cycles = sum(hist.values())
    if not cycles:
        return {"spec_cycles": 0, "mean_accepted": None, "acceptance_by_depth": [], "drafter_forwards_per_cycle": None}
    reached = [sum(c for n, c in hist.items() if n >= d) for d in range(max(hist) + 1)]
    return {
        "spec_cycles": cycles,
        "mean_accepted": sum(n * c for n, c in hist.items()) / cycles,
        "acceptance_by_depth": [reached[d] / reached[d - 1] for d in range(1, len(reached))],
        "drafter_forwards_per_cycle": sum(r.drafter_forwards for r in runs) / cycles,
    }


def _prompt_entry(run: Run, base: Run | None, greedy: bool) -> dict[str, Any]:
    return {
        "new_tokens": len(run.tokens),
        "target_forwards": run.target_forwards,
        "decode_s": run.decode_s,
        "wall_s": run.wall_s,
        "match": run.tokens == base.tokens if base is not None and greedy else None,
        "plain_steps": run.plain_steps,
        "fallbacks": list(run.fallbacks),
    }


def machine_info(target: TargetModel) -> dict[str, Any]:
    """Where the numbers were measured."""
    import transformers

    info = {
        "cpu": _cpu_model(),
        "native_bf16": native_bf16(target.device),  # bfloat16 runs emulated (slow) where this is false
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "target": target.model_id,
        "device": str(target.device),
        "dtype": str(target.dtype).removeprefix("torch."),
        "layout": target.layout,  # the kernels of the target's linear layers and head (core.layout)
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if target.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(target.device)
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- command line -------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``python -m core`` subparsers."""
    from core.cli import add_decode_args, add_model_args  # here, so core.cli may import this module

    p = subparsers.add_parser("bench", help="tokens/s, tau and speedup of every method on a prompt set")
    p.add_argument("--prompts", required=True, help="JSONL: Spec-Bench lines (turns) or {\"prompt\": ...} lines")
    p.add_argument("--categories", default=None, help="comma-separated categories to keep (default: all)")
    p.add_argument("--limit-per-category", type=int, default=None, help="first N prompts of each category")
    p.add_argument("--drafters", default=DEFAULT_METHODS,
                   help="comma-separated: jakiro, eagle, none, hf-generate, hf-prompt-lookup, or drafter folders "
                        "('none' is added as the baseline when missing)")
    add_model_args(p)
    add_decode_args(p)
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up generation of each method")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", default=None, help="write the full report to this JSON file")
    p.add_argument("--markdown", default=None, help="write the tables to this Markdown file")
    p.add_argument("--plot", default=None, help="write a Plotly bar chart to this HTML file")
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args: argparse.Namespace) -> int:
    from core.bench_report import to_markdown, write_plot
    from core.cli import engine_config

    methods = check_methods(split_list(args.drafters))
    if BASELINE not in methods:
        methods.insert(0, BASELINE)
        print(f"note: added '{BASELINE}' (plain decoding) as the speedup baseline", file=sys.stderr)
    prompts = load_prompts(args.prompts, split_list(args.categories), args.limit_per_category)
    cfg, moe_cfg = engine_config(args, moe=False), engine_config(args, moe=True)
    target = TargetModel.load(args.target, args.dtype, args.device, args.trust_remote_code, args.layout)
    report = run_bench(target, methods, prompts, cfg, moe_cfg, progress=not args.no_progress,
                       warmup=not args.no_warmup)
    report["config"]["args"] = {k: v for k, v in vars(args).items() if k != "func"}
    if sys.argv[1:2] == ["bench"]:  # run as ``python -m core bench ...``, not through main(argv)
        report["config"]["command"] = shlex.join(["python", "-m", "core", *sys.argv[1:]])
    markdown = to_markdown(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(markdown, encoding="utf-8")
    if args.plot:
        write_plot(report, args.plot)
    print(markdown)
    return 0
