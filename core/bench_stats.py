"""How sure a benchmark's ratios are: bootstrap intervals over its prompts; pure functions of a report.

A speedup is a ratio of sums (tokens / seconds of a method over tokens / seconds of the baseline, on the same
prompts), so its uncertainty comes from which prompts were drawn. The bootstrap redraws the prompts with
replacement, within each category as the benchmark itself picks them (``--limit-per-category``; categories of one
prompt are redrawn together), recomputes the
ratio from the per-prompt numbers of every draw, and reports the middle ``level`` of those ratios. Every method is
weighed on the same draws, so a paired ratio (method A over method B) keeps what the prompts share: a long
answer, a slow spell of the machine while that prompt ran.

What it does not see: a whole run's drift (another day, another VM neighbour), which on this project's CPUs has
moved MT-bench speedups by up to ~0.08x between runs of the same command. Intervals that overlap are not
different; intervals that do not overlap still want a second run.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

DRAWS = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A statistic on the prompts that ran, and its bootstrap interval."""
    value: float
    low: float
    high: float

    def to_list(self) -> list[float | None]:
        """[low, high], None where a bound is not finite (a report's JSON allows no NaN)."""
        return [b if np.isfinite(b) else None for b in (self.low, self.high)]


def bootstrap_weights(categories: list[str], draws: int = DRAWS, seed: int = 0) -> np.ndarray:
    """How often each prompt appears in each redraw: [draws, prompts] counts, each category redrawn to its size.

    A category of one prompt cannot be redrawn within itself (it would be the same prompt every time, and a run of
    one prompt per category would claim an interval of zero width): those categories are redrawn together, as one."""
    sizes = Counter(categories)
    strata = [c if sizes[c] > 1 else None for c in categories]  # None: the pooled single-prompt categories
    rng = np.random.default_rng(seed)
    weights = np.zeros((draws, len(categories)), dtype=np.float64)  # [D, P]
    for stratum in dict.fromkeys(strata):
        idx = np.array([i for i, c in enumerate(strata) if c == stratum])
        weights[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=draws)
    return weights


def ratio_interval(num: np.ndarray, den: np.ndarray, base_num: np.ndarray, base_den: np.ndarray,
                   weights: np.ndarray, level: float = LEVEL) -> Interval:
    """(sum num / sum den) / (sum base_num / sum base_den) over the prompts, and its percentile interval.

    The four arrays are per prompt, [P]; ``weights`` is ``bootstrap_weights``' [D, P]."""
    def ratio(w: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (w @ num / (w @ den)) / (w @ base_num / (w @ base_den))

    value = float(ratio(np.ones((1, len(num))))[0])
    draws = ratio(weights)  # [D]
    draws = draws[np.isfinite(draws)]
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail]) if draws.size else (float("nan"), float("nan"))
    return Interval(value, float(low), float(high))


def _column(per_prompt: list[dict[str, Any]], method: str, key: str) -> np.ndarray | None:
    values = [p["methods"][method][key] for p in per_prompt]
    return None if any(v is None for v in values) else np.asarray(values, dtype=np.float64)


def intervals(report: dict[str, Any], baseline: str = "none", draws: int = DRAWS, seed: int = 0,
              level: float = LEVEL) -> dict[str, Any]:
    """Bootstrap intervals of a ``run_bench`` report (its ``per_prompt`` rows):

    ``{"level", "draws", "speedup": {method: Interval}, "tau": {method: Interval},
    "paired": [(method_a, method_b, Interval of tokens/s A over B)], "speedup_by_category": {category: {method:
    Interval}}}``. Speedups are over ``baseline`` (absent
    when it did not run); tau is given for the other methods whose target forwards were counted; ``paired`` holds
    every pair of the other methods, in the report's order."""
    per_prompt = report["per_prompt"]
    if not per_prompt:
        raise ValueError("the report has no per-prompt rows to redraw")
    methods = list(per_prompt[0]["methods"])
    categories = [p["category"] for p in per_prompt]
    weights = bootstrap_weights(categories, draws, seed)  # [D, P]
    tokens = {m: _column(per_prompt, m, "new_tokens") for m in methods}
    seconds = {m: _column(per_prompt, m, "decode_s") for m in methods}
    ones = np.ones(len(per_prompt))
    speedup, tau = {}, {}
    for m in methods:
        if baseline in methods and m != baseline:
            speedup[m] = ratio_interval(tokens[m], seconds[m], tokens[baseline], seconds[baseline], weights, level)
        forwards = _column(per_prompt, m, "target_forwards")
        if m != baseline and forwards is not None and forwards.sum() > 0:
            tau[m] = ratio_interval(tokens[m], forwards, ones, ones, weights, level)
    per_category = {}  # a category's columns of the stratified redraws redraw it alone (one prompt: its own value)
    for category in dict.fromkeys(categories):
        cols = np.array([c == category for c in categories])
        per_category[category] = {
            m: ratio_interval(tokens[m][cols], seconds[m][cols], tokens[baseline][cols], seconds[baseline][cols],
                              weights[:, cols], level)
            for m in speedup}
    others = [m for m in methods if m != baseline]
    paired = [(a, b, ratio_interval(tokens[a], seconds[a], tokens[b], seconds[b], weights, level))
              for a, b in itertools.combinations(others, 2)]
    return {"level": level, "draws": draws, "speedup": speedup, "tau": tau, "paired": paired,
            "speedup_by_category": per_category}


def to_json(stats: dict[str, Any]) -> dict[str, Any]:
    """``intervals``' result with plain lists, for a report's JSON."""
    return {
        "level": stats["level"], "draws": stats["draws"],
        "speedup": {m: i.to_list() for m, i in stats["speedup"].items()},
        "tau": {m: i.to_list() for m, i in stats["tau"].items()},
        "paired": [{"a": a, "b": b, "ratio": i.value if np.isfinite(i.value) else None, "interval": i.to_list()}
                   for a, b, i in stats["paired"]],
        "speedup_by_category": {c: {m: i.to_list() for m, i in by_method.items()}
                                for c, by_method in stats["speedup_by_category"].items()},
    }
