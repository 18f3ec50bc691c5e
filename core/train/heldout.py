"""tau of a drafter on the held-out slice of the training prompts (never the benchmark).

The training loop holds out every n-th training sequence (``TrainConfig.holdout_every``), counted within
each answer folder or, for releases 1-3, over all of them (``holdout_scheme``); the same prompts, answered
by the engine with the drafter, show whether teacher-forced accuracy turns into accepted tokens when the
drafter runs on its own predictions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.config import EngineConfig, FallbackConfig, TreeConfig
from core.engine import SpecDecoder
from core.trace import Summary, summarize


@dataclass(frozen=True)
class HeldOutPrompt:
    prompt: str
    source: str
    folder: str  # the answer folder it came from


def heldout_prompts(answer_dirs: list[Path], every: int = 50, limit: int | None = None,
                    folder: str | None = None, counts: dict[str, int] | None = None,
                    per_folder: bool = True) -> list[HeldOutPrompt]:
    """Every ``every``-th answered prompt, counted within each folder (``per_folder``) or over all folders in
    the order the feature recorder reads them (so these are the sequences training held out); optionally only
    those from the folder named ``folder``.

    ``counts`` (folder name -> answers it held when the features were recorded, see ``recorded_counts``) keeps
    the indexing that of the training run after more answers were appended; without it every answer counts.
    """
    out = []
    index = 0
    for directory in answer_dirs:
        seen = 0
        index = 0 if per_folder else index
        for shard in sorted(directory.glob("shard-*.jsonl")) if directory.is_dir() else []:
            for line in shard.open():
                if counts is not None and seen >= counts.get(directory.name, 0):
                    break
                seen += 1
                if index % every == 0 and folder in (None, directory.name):
                    rec = json.loads(line)
                    out.append(HeldOutPrompt(prompt=rec["prompt"], source=rec.get("source", "answers"),
                                             folder=directory.name))
                index += 1
    return out[:limit]


def parse_counts(text: str) -> dict[str, int]:
    """``"answers=2368,answers-broad=1440"`` -> ``{"answers": 2368, "answers-broad": 1440}``."""
    counts = {}
    for part in text.split(","):
        name, _, number = part.strip().partition("=")
        if not name or not number.strip().isdigit():
            raise ValueError(f"--counts: {part.strip()!r} is not FOLDER=N (e.g. answers=2368,answers-broad=1440)")
        counts[name] = int(number)
    return counts


def heldout_tau(decoder: SpecDecoder, prompts: list[HeldOutPrompt], tree: TreeConfig,
                max_new_tokens: int = 96) -> dict[str, object]:
    """Greedy generation on each prompt without fallback; tau overall and by source, acceptance by depth."""
    cfg = EngineConfig(tree=tree, max_new_tokens=max_new_tokens, fallback=FallbackConfig(enabled=False))
    summaries: list[tuple[str, Summary]] = [(p.source, summarize(decoder.generate(p.prompt, cfg, detail=False)))
                                            for p in prompts]
    return {
        "prompts": len(prompts),
        "tau": _tau([s for _, s in summaries]),
        "by_source": {src: _tau([s for k, s in summaries if k == src]) for src in sorted({k for k, _ in summaries})},
        "alpha_by_depth": _alpha([s for _, s in summaries]),
    }


def _tau(summaries: list[Summary]) -> float:
    return sum(s.new_tokens for s in summaries) / max(1, sum(s.target_forwards for s in summaries))


def _alpha(summaries: list[Summary]) -> list[float]:
    """alpha_d = P(depth d accepted | depth d-1 accepted), pooled over every speculative cycle."""
    hist: dict[int, int] = {}
    for s in summaries:
        for length, count in s.accept_length_hist.items():
            hist[int(length)] = hist.get(int(length), 0) + count
    at_least = [sum(c for n, c in hist.items() if n >= d) for d in range(max(hist, default=0) + 1)]
    return [at_least[d] / at_least[d - 1] for d in range(1, len(at_least)) if at_least[d - 1]]
