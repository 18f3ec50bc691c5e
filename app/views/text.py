"""Records and summaries as text: tokens, step lookups, the counters table, the API summary, the CSV table.

Every function reads the plain records that ``core.engine.SpecDecoder.stream`` yields (see ``core.trace``)
or the ``Summary`` that ``core.trace.summarize`` computes from them; nothing here touches a model or a tensor.
"""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from core.trace import Summary, steps_of

from app.views.style import SOURCE_COLORS, escape, method_label

Record = dict[str, Any]

COUNTER_DEFINITIONS = (
    "**τ** = tokens emitted per target forward, counting the bonus token (plain decoding = 1.00). "
    "**tokens/s** = new tokens ÷ model time (draft + verify + commit of every step; UI time excluded). "
    "**speedup** = this method's tokens/s ÷ plain decoding's tokens/s on the same prompt and settings, "
    "measured in this run. **draft / verify ms** = mean time per step to grow the tree / run the target "
    "over it. **accepted/cycle** = draft tokens accepted per speculative cycle (bonus excluded)."
)


# --- tokens ---------------------------------------------------------------------------------------


def visible_token(text: str, limit: int = 12) -> str:
    """A token made readable in a figure: whitespace shown, long tokens cut. Not escaped."""
    shown = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "")
    shown = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in shown)
    if not shown:
        shown = "∅"
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def figure_token(text: str, limit: int = 12) -> str:
    """``visible_token`` escaped for Plotly, which renders a subset of HTML (``<s>`` would vanish)."""
    return escape(visible_token(text, limit))


def highlighted_tokens(records: Iterable[Record]) -> list[tuple[str, str]]:
    """One (text, source) pair per emitted token, for ``gr.HighlightedText``; a line break is
    shown as ↵ before it and an empty token as ∅, so every token stays clickable."""
    return [(display_text(t["text"]), t["source"]) for step in steps_of(records) for t in step["emitted"]]


def display_text(text: str) -> str:
    """A token's text as ``gr.HighlightedText`` shows it: ↵ before a line break, ∅ for an empty token."""
    if not text:
        return "∅"
    return text.replace("\r", "").replace("\n", "↵\n")


def legend_for(records: list[Record] | None, name: str) -> dict[str, str]:
    """The colours a method's tokens can take (the legend lists only these)."""
    if name == "none":
        keys = ["target"]
    elif is_moe(records or []) or (not records and name == "jakiro"):
        keys = ["expert 0", "expert 1", "contrastive", "bonus", "target"]
    else:
        keys = ["draft", "bonus", "target"]
    if any(token["source"] == "lookup" for step in steps_of(records or []) for token in step["emitted"]):
        keys.insert(-2, "lookup")
    return {k: SOURCE_COLORS[k] for k in keys}


def token_steps(records: Iterable[Record]) -> list[int]:
    """The step that emitted each token, in the order of ``highlighted_tokens``."""
    return [step["step"] for step in steps_of(records) for _ in step["emitted"]]


def first_position(records: Iterable[Record], step: int) -> int:
    """Where in the answer step ``step`` starts: the index of the first token it emitted (for a step past the
    end, the run's length)."""
    steps = token_steps(records)
    return next((i for i, s in enumerate(steps) if s >= step), len(steps))


def step_at_position(records: Iterable[Record], position: int) -> int:
    """The step that emitted the token at ``position`` of the answer (the last step past the end; 0 if none)."""
    steps = token_steps(records)
    return steps[min(position, len(steps) - 1)] if steps else 0


def inspected_steps(left: list[Record], right: list[Record], step: int, by_position: bool = True,
                    position: int | None = None) -> tuple[int, int]:
    """The steps the step inspector shows for two runs. By number: ``step`` for both. By place in the answer: the
    step of each that produced the token at ``position``, or, with no position, the left run's ``step`` and the
    right run's step that produced the token where the left one's step starts."""
    if not by_position:
        return step, step
    if position is None:
        return step, step_at_position(right, first_position(left, step))
    return step_at_position(left, position), step_at_position(right, position)


def trace_text(records: list[Record]) -> str:
    """The generated text without stop tokens, joined from the recorded token texts."""
    head = records[0] if records and records[0].get("type") == "header" else {}
    stops = set(head.get("stop_token_ids", []))
    return "".join(t["text"] for step in steps_of(records) for t in step["emitted"] if t["token_id"] not in stops)


# --- records --------------------------------------------------------------------------------------


def spec_steps(records: Iterable[Record]) -> list[Record]:
    """The speculative steps (one draft tree each), without the prefill and plain decoding steps."""
    return [s for s in steps_of(records) if s["kind"] == "spec"]


def step_at(records: Iterable[Record], step: int) -> Record | None:
    """The record of step number ``step``; None when the run has no such step."""
    return next((s for s in steps_of(records) if s["step"] == step), None)


def last_step(records: Iterable[Record]) -> int:
    """The number of the run's last step (0 when it has none)."""
    return max((s["step"] for s in steps_of(records)), default=0)


def is_moe(records: list[Record]) -> bool:
    """Whether the trace's header names a drafter with an MoE FFN (Jakiro) rather than a dense one."""
    head = records[0] if records else {}
    drafter = head.get("drafter") or {}
    return drafter.get("ffn") == "moe"


# --- counters -------------------------------------------------------------------------------------


def speedup(summary: Summary | None, plain: Summary | None) -> float | None:
    """tokens/s of a method over plain decoding's; None until both are measured."""
    if summary is None or plain is None or plain.tokens_per_s <= 0 or summary.new_tokens == 0:
        return None
    return summary.tokens_per_s / plain.tokens_per_s


def counters_markdown(summaries: dict[str, Summary | None], running: tuple[str, ...] = (), device: str = "") -> str:
    """The live counters table, one row per method (⏳ on those in ``running``), with the definitions underneath."""
    plain = summaries.get("none")
    rows = [
        "| method | tokens | target forwards | τ | tokens/s | speedup | draft ms/step | verify ms/step | accepted/cycle |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, summary in summaries.items():
        label = method_label(name) + (" ⏳" if name in running else "")
        if summary is None or summary.target_forwards == 0:
            rows.append(f"| {label} | – | – | – | – | – | – | – | – |")
            continue
        ratio = speedup(summary, plain)
        shown_speedup = "1.00×" if name == "none" else (f"{ratio:.2f}×" if ratio is not None else "after plain run")
        accepted = f"{summary.mean_accepted:.2f}" if summary.spec_steps else "–"
        draft = f"{summary.draft_ms_per_step:.1f}" if summary.spec_steps else "–"
        rows.append(
            f"| {label} | {summary.new_tokens} | {summary.target_forwards} | {summary.tau:.2f} | "
            f"{summary.tokens_per_s:.1f} | {shown_speedup} | {draft} | {summary.verify_ms_per_step:.1f} | {accepted} |"
        )
    where = f" Device: {device}." if device else ""
    if device.startswith("cpu"):
        where += " On a CPU the timings show the trend, not GPU speedups."
    where += (" One prompt's speedup swings with the prompt and the machine; the <b>Benchmarks</b> tab has whole runs "
              "over many prompts, with intervals.")
    note = f"\n\n<small>{COUNTER_DEFINITIONS}{where}</small>"
    return "\n".join(rows) + note


def api_summary(texts: dict[str, str], summaries: dict[str, Summary | None]) -> dict[str, dict[str, Any]]:
    """The JSON the ``/generate`` endpoint returns: text, tau, tokens/s and speedup per method."""
    plain = summaries.get("none")
    out = {}
    for name, summary in summaries.items():
        if summary is None:
            continue
        ratio = 1.0 if name == "none" and summary.tokens_per_s > 0 else speedup(summary, plain)
        out[name] = {
            "text": texts.get(name, ""),
            "tau": round(summary.tau, 4),
            "tokens_per_s": round(summary.tokens_per_s, 3),
            "speedup": None if ratio is None else round(ratio, 4),
            "new_tokens": summary.new_tokens,
            "target_forwards": summary.target_forwards,
        }
    return out


def summary_table(summaries: dict[str, Summary]) -> pd.DataFrame:
    """One row per method with every scalar metric (for the CSV export)."""
    plain = summaries.get("none")
    rows = []
    for name, s in summaries.items():
        ratio = speedup(s, plain)
        rows.append({
            "method": name, "new_tokens": s.new_tokens, "target_forwards": s.target_forwards, "tau": s.tau,
            "tokens_per_s": s.tokens_per_s, "speedup_vs_plain": ratio, "spec_steps": s.spec_steps,
            "mean_accepted": s.mean_accepted, "decode_s": s.decode_s, "draft_ms_per_step": s.draft_ms_per_step,
            "verify_ms_per_step": s.verify_ms_per_step, "commit_ms_per_step": s.commit_ms_per_step,
            "drafter_forwards_per_step": s.drafter_forwards_per_step, "tree_nodes_per_step": s.tree_nodes_per_step,
            "acceptance_by_depth": " ".join(f"{a:.3f}" for a in s.acceptance_by_depth),
            "accept_length_hist": " ".join(f"{k}:{v}" for k, v in s.accept_length_hist.items()),
            "expert_acceptance": " ".join(f"{k}:{v:.3f}" for k, v in s.expert_acceptance.items()),
            "expert_topk_overlap": s.expert_topk_overlap,
            "expert_topk_overlap_by_depth": " ".join(f"{d}:{v:.3f}" for d, v in s.expert_topk_overlap_by_depth.items()),
        })
    return pd.DataFrame(rows)


# --- one step ---------------------------------------------------------------------------------------


def plain_reason(record: Record) -> str:
    """Why a drafter's step decoded plainly (the fallback policy's note), without its "fallback: " tag."""
    return str(record.get("note") or "").removeprefix("fallback: ")


def step_markdown(name: str, records: list[Record], step: int) -> str:
    """What happened in one step of one method, in a sentence or two."""
    record = step_at(records, step)
    title = f"**{method_label(name)}**"
    if record is None:
        return f"{title}: no step {step} (this run ended at step {last_step(records)})."
    emitted = " ".join(f"`{visible_token(t['text'], 20)}`" for t in record["emitted"]) or "nothing"
    if record["kind"] != "spec":
        what = "prefill (the prompt, no draft tree)" if record["kind"] == "prefill" else "one plain decoding step"
        why = plain_reason(record)
        return (f"{title} step {step}: {what}, emitted {emitted}; target {record['verify_ms']:.1f} ms."
                + (f" Why no draft: {why}." if why else ""))
    return (
        f"{title} step {step}: accepted **{record['accepted_len']}** of {record['tree_nodes']} verified nodes "
        f"({record['candidates']} scored, {record['drafter_forwards']} drafter forwards) → emitted {emitted}. "
        f"Draft {record['draft_ms']:.1f} ms, verify {record['verify_ms']:.1f} ms, running τ {record['tau']:.2f}."
    )
