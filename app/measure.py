"""Measuring the methods on a user's own prompts, in the app: every method on every prompt, interleaved and in the
rotating order ``python -m core bench`` uses, into the same report, so the Benchmarks tab shows it (intervals
included) like a committed run and the user can download it.

One prompt's speedup swings with the prompt; a handful of them, each run by every method under the same settings,
says how much faster the drafters are on the user's own kind of text, and the intervals say how sure that is."""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from core.bench import (
    BenchPrompt, EngineMethod, HFMethod, Method, Run, bench_config, bench_runs, machine_info, make_report,
)
from core.variants import HF_METHODS
from core.target import PromptError

from app.session import Engines, Session, Settings, engine_config, is_moe

MAX_PROMPTS = 16  # each is run by every method: 16 x 3 generations of up to 256 tokens is minutes on a CPU
CATEGORY = "your prompts"
COMMAND = "app.py: Benchmarks tab, measured on the user's prompts"


@dataclass(frozen=True)
class Progress:
    """How far a measurement is: ``done`` of ``total`` generations; the last was ``method`` on prompt ``prompt``
    (1-based)."""
    done: int
    total: int
    prompt: int
    method: str


def parse_prompts(text: str | None, engines: Engines) -> list[BenchPrompt]:
    """One prompt per non-empty line; raises ValueError for none or too many, PromptError naming the line of one
    the model cannot take (too long for its context, not valid Unicode)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        raise ValueError("type the prompts to measure, one per line")
    if len(lines) > MAX_PROMPTS:
        raise ValueError(f"measure at most {MAX_PROMPTS} prompts at once (one per line), got {len(lines)}")
    for number, line in enumerate(lines, start=1):
        try:
            engines.target.encode_chat(line)
        except PromptError as err:
            raise PromptError(f"prompt {number}: {err}") from None
    return [BenchPrompt(question_id=n, category=CATEGORY, text=line) for n, line in enumerate(lines, start=1)]


def measure(engines: Engines, text: str | None, settings: Settings, peers: bool = False
            ) -> Iterator[tuple[Progress, dict[str, Any] | None]]:
    """Run every method on every prompt of ``text`` under ``settings`` (the settings panel's, for all methods
    alike; Jakiro's schedule for MoE drafters only, as in a generation); with ``peers``, transformers' own
    ``generate`` and prompt-lookup decoding of the same target too. Yields after each generation, with the
    report (``core.bench.make_report``'s) at the last one; each generation holds ``engines.lock``, so a stopped
    measurement leaves the shared decoders between two generations. Raises ConfigError, PromptError or
    ValueError before any generation when the settings or the prompts cannot be used."""
    prompts = parse_prompts(text, engines)
    configs = {moe: engine_config(settings, moe) for moe in (False, True)}
    ours = [EngineMethod(name, decoder, configs[is_moe(decoder)]) for name, decoder in engines.decoders.items()]
    for runner in ours:
        if runner.decoder.proposer is not None:
            runner.decoder.proposer.check_tree(runner.cfg.tree)
    peer_runners = [HFMethod(name, engines.target, configs[False]) for name in HF_METHODS] if peers else []
    runners: list[Method] = [*ours, *peer_runners]
    prompt_ids = [engines.target.encode_chat(p.text) for p in prompts]
    runs: dict[str, list[Run]] = {r.name: [] for r in runners}
    total = len(prompts) * len(runners)
    stream = bench_runs(runners, prompt_ids)
    for done in range(1, total + 1):
        with engines.lock:
            k, name, run = next(stream)
        runs[name].append(run)
        report = None
        if done == total:
            config = {**bench_config(runners, prompts, configs[False], configs[True], warmup_tokens=0),
                      "command": COMMAND}
            report = make_report(prompts, runs, configs[False].sampling.greedy, machine_info(engines.target), config)
        yield Progress(done, total, k + 1, name), report


def save_report(report: dict[str, Any], session: Session) -> Path:
    """The report as JSON in the session's private folder (mutates ``session.folder`` on first use)."""
    path = session.export_folder() / f"bench-{secrets.token_hex(6)}.json"
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
