"""When speculation does not pay, decode plainly for a while, then probe again.

Speculation pays while (tokens per cycle) / (cycle time) > 1 / (plain step time). The policy
keeps short running means of both sides, measured on this machine during this generation,
and is a pure state machine: ``decide`` says what the next step should be and why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from core.config import FallbackConfig

SWITCH_NOTE = "fallback: the last"  # how the note of a step that switched to plain decoding starts
RECENT_CYCLES = 4  # the cycles whose speed the adaptive tree's stopping rule reads (core.engine), whatever the window


@dataclass
class FallbackState:
    spec_tokens: list[int] = field(default_factory=list)  # tokens emitted by the judged cycles of the window
    spec_ms: list[float] = field(default_factory=list)  # their draft + verify + commit time
    recent_tokens: list[int] = field(default_factory=list)  # every speculative cycle's, the last RECENT_CYCLES
    recent_ms: list[float] = field(default_factory=list)  # (the adaptive tree's stopping rule reads these)
    plain_ms: float | None = None  # running mean of a plain step
    cooldown_left: int = 0
    failed_probes: int = 0  # windows in a row that did not pay: the next cooldown is cooldown x 2^this (capped)
    total_tokens: int = 0  # emitted by every step of this generation, speculative or plain
    total_ms: float = 0.0  # the time those steps took
    last_note: str = ""


def record_step(state: FallbackState, kind: str, emitted: int, ms: float, cfg: FallbackConfig,
                judged: bool = True) -> None:
    """Mutates ``state`` with one finished step. A speculative cycle that is not ``judged`` counts towards the
    generation's totals but not the window: the cycle in which the drafter catches up on the prompt or on steps
    decoded plainly (session 29: 4-5 ms more drafting, ~3% of a 4-cycle judgement) is a cost already paid, not
    one that speculating on would keep paying."""
    state.total_tokens += emitted
    state.total_ms += ms
    if kind == "spec":
        state.recent_tokens = (state.recent_tokens + [emitted])[-RECENT_CYCLES:]
        state.recent_ms = (state.recent_ms + [ms])[-RECENT_CYCLES:]
    if kind == "spec" and judged:
        state.spec_tokens = (state.spec_tokens + [emitted])[-cfg.window:]
        state.spec_ms = (state.spec_ms + [ms])[-cfg.window:]
    elif kind == "plain":
        state.plain_ms = ms if state.plain_ms is None else 0.8 * state.plain_ms + 0.2 * ms
        state.cooldown_left = max(0, state.cooldown_left - 1)


def record_plain_estimate(state: FallbackState, ms: float) -> None:
    """Mutates ``state``: a plain step's time as estimated from a speculative cycle (running mean, as plain steps)."""
    state.plain_ms = ms if state.plain_ms is None else 0.8 * state.plain_ms + 0.2 * ms


def recent(state: FallbackState, cycles: int) -> tuple[int, float]:
    """Tokens emitted, and milliseconds spent, by the last ``cycles`` (<= RECENT_CYCLES) speculative cycles, judged
    or not, since the start or the last switch to plain decoding."""
    return sum(state.recent_tokens[-cycles:]), sum(state.recent_ms[-cycles:])


def expected_speedup(state: FallbackState, cycles: int) -> float | None:
    """Speed of the last ``cycles`` judged speculative cycles over plain decoding's; None before both are
    measured."""
    tokens, ms = sum(state.spec_tokens[-cycles:]), sum(state.spec_ms[-cycles:])
    if state.plain_ms is None or ms <= 0:
        return None
    return state.plain_ms * max(1, tokens) / ms


def overall_speedup(state: FallbackState) -> float | None:
    """Speed of the whole generation so far over plain decoding's; None before both are measured."""
    if state.plain_ms is None or state.total_ms <= 0:
        return None
    return state.plain_ms * state.total_tokens / state.total_ms


def optimistic_speedup(state: FallbackState, cycles: int, confidence: float) -> float | None:
    """``expected_speedup`` with the mean tokens per cycle raised by ``confidence`` standard errors: a few cycles
    of bursty acceptance (sampling) are weak evidence that speculation does not pay. None before both sides are
    measured."""
    gain = expected_speedup(state, cycles)
    tokens = state.spec_tokens[-cycles:]
    if gain is None or len(tokens) < 2 or confidence <= 0:
        return gain
    mean = sum(tokens) / len(tokens)
    var = sum((t - mean) ** 2 for t in tokens) / (len(tokens) - 1)
    return gain * (mean + confidence * math.sqrt(var / len(tokens))) / max(mean, 1e-9)


def can_judge(state: FallbackState, cfg: FallbackConfig) -> bool:
    """Enough speculative cycles since the start (or the last probe) to judge them: ``judge_after``, at most
    ``window``."""
    return len(state.spec_ms) >= min(cfg.judge_after, cfg.window)


def decide(state: FallbackState, cfg: FallbackConfig) -> tuple[str, str]:
    """("spec" | "plain", why). Mutates ``state.cooldown_left`` when it switches to plain."""
    if not cfg.enabled:
        return "spec", ""
    if state.cooldown_left > 0:
        steps = f"{state.cooldown_left} more step{'s' if state.cooldown_left > 1 else ''}"
        return "plain", f"fallback: plain decoding for {steps}, then probe again"
    gain = expected_speedup(state, cfg.window)
    if gain is None or not can_judge(state, cfg):
        return "spec", ""
    if optimistic_speedup(state, cfg.window, cfg.confidence) >= cfg.margin:
        state.failed_probes = 0
        return "spec", ""
    overall = overall_speedup(state)
    if cfg.ahead > 0 and overall is not None and overall >= cfg.ahead:
        return "spec", ""  # a slow patch in a generation well ahead of plain decoding: the user is not slower
    # A probe costs about judge_after cycles that do not pay; where speculation keeps failing (sampling at a high
    # temperature), probing as often as at first would make the drafter a net loss, so the wait doubles each time.
    state.cooldown_left = min(cfg.cooldown << state.failed_probes, cfg.max_cooldown)
    state.failed_probes += 1
    judged = len(state.spec_ms)
    state.spec_tokens, state.spec_ms, state.recent_tokens, state.recent_ms = [], [], [], []
    so_far = f", the answer so far at {overall:.2f}x" if cfg.ahead > 0 and overall is not None else ""
    return "plain", (f"{SWITCH_NOTE} {judged} cycles ran at {gain:.2f}x plain decoding "
                     f"(break-even {cfg.margin:.2f}x{so_far}); decoding plainly for {state.cooldown_left} steps")
