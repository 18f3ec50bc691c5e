"""Benchmark reports as Markdown tables and a Plotly chart; pure functions of ``run_bench``'s report.

Plotly is imported inside ``bench_figure`` only, so the engine never loads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

DEFINITIONS = """\
Definitions:
- **tau**: new tokens / target forwards, the prefill and the target's bonus token included (plain decoding = 1.00).
  For `hf-prompt-lookup` the forwards are counted with a hook on the model; `-` where they could not be counted.
- **tokens/s**: new tokens / decode seconds, summed over the prompts. Our engine's decode seconds are the draft,
  verify and commit phases of every step (prefill included; building the trace records excluded); for `hf-*`
  they are the whole `generate` call. **wall s** is the whole call for every method.
- **speedup**: tokens/s / tokens/s of `none` (our plain decoding of the same target) over the same prompts, same run.
- **match**: fraction of prompts whose generated token ids equal `none`'s exactly (greedy decoding only). Below 1.00
  with a lossless method means numerical near-ties (e.g. bfloat16 tree vs. single-token forwards), not a wrong draft.
- **draft / verify ms**: mean milliseconds per decoding step after the prefill (our engine only).
- **drafter fwd/cycle**: drafter forwards per speculative cycle (Jakiro's hybrid schedule saves the last one).
- **interval**: the middle 95% of the ratio over 2,000 redraws of the prompts (with replacement, within each
  category). It covers which prompts were drawn, not a whole run's drift on a shared machine: overlapping
  intervals are not different, and separate ones still want a second run.
"""

COLUMNS = [
    ("tau", "tau", "{:.2f}"), ("tokens_per_s", "tokens/s", "{:.1f}"), ("speedup", "speedup", "{:.2f}x"),
    ("match_rate", "match", "{:.2f}"), ("draft_ms", "draft ms", "{:.1f}"), ("verify_ms", "verify ms", "{:.1f}"),
    ("drafter_forwards_per_cycle", "drafter fwd/cycle", "{:.2f}"), ("new_tokens", "new tokens", "{}"),
    ("wall_s", "wall s", "{:.1f}"),
]
CATEGORY_TABLES = [
    ("speedup", "Speedup over `none`", "{:.2f}x"), ("tau", "tau", "{:.2f}"), ("tokens_per_s", "Tokens/s", "{:.1f}"),
    ("match_rate", "Greedy match with `none`", "{:.2f}"),
]


def fmt(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def method_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per method, every metric."""
    rows = [[f"`{name}`"] + [fmt(m.get(key), pattern) for key, _, pattern in COLUMNS] for name, m in results.items()]
    return table(["method"] + [label for _, label, _ in COLUMNS], rows)


def category_table(per_category: dict[str, dict[str, dict[str, Any]]], key: str, pattern: str) -> str:
    """Rows = categories, columns = methods, cells = one metric."""
    methods = list(next(iter(per_category.values())).keys()) if per_category else []
    rows = [[cat, str(next(iter(by_method.values()))["prompts"])] + [fmt(by_method[m][key], pattern) for m in methods]
            for cat, by_method in per_category.items()]
    return table(["category", "prompts"] + [f"`{m}`" for m in methods], rows)


def _span(bounds: list[float | None], pattern: str) -> str:
    return "-" if None in bounds else f"{fmt(bounds[0], pattern)} - {fmt(bounds[1], pattern)}"


def interval_tables(stats: dict[str, Any]) -> str:
    """Speedup and tau of each method with their bootstrap intervals, then every pair of methods against each other
    (``core.bench_stats.to_json``'s layout)."""
    methods = list(dict.fromkeys([*stats["speedup"], *stats["tau"]]))
    rows = [[f"`{m}`", _span(stats["speedup"][m], "{:.2f}x") if m in stats["speedup"] else "-",
             _span(stats["tau"][m], "{:.2f}") if m in stats["tau"] else "-"] for m in methods]
    parts = [table(["method", "speedup interval", "tau interval"], rows)]
    if stats["paired"]:
        pairs = [[f"`{p['a']}` / `{p['b']}`", fmt(p["ratio"], "{:.3f}"), _span(p["interval"], "{:.3f}")]
                 for p in stats["paired"]]
        parts.append(table(["tokens/s of A / B", "ratio", "interval"], pairs))
    return "\n\n".join(parts)


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, command, overall table, per-category tables, definitions."""
    machine, config = report["machine"], report["config"]
    engine = config["engine"]
    lines = [
        "# Benchmark",
        "",
        f"- date: {machine['date']}",
        f"- machine: {machine['cpu']} ({machine['cores']} cores, {machine['torch_threads']} torch threads)"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
        + ("" if machine.get("native_bf16", True) else "; no native bfloat16 (emulated: slow)"),
        f"- target: `{machine['target']}` on {machine['device']}, {machine['dtype']}"
        + (f"; linear layers: {machine['layout']}" if machine.get("layout") else ""),
        f"- torch {machine['torch']}, transformers {machine['transformers']}, python {machine['python']}",
        f"- prompts: {config['prompts']} ({', '.join(f'{c} {n}' for c, n in config['categories'].items())}), "
        f"max new tokens {engine['max_new_tokens']}, "
        + ("greedy" if config["greedy"] else f"sampling {engine['sampling']}")
        + f", tree {engine['tree']}",
    ]
    if config.get("command"):
        lines.append(f"- command: `{config['command']}`")
    lines += ["", "## Overall", "", method_table(report["results"]), ""]
    if report.get("intervals"):
        lines += ["## How sure", "", interval_tables(report["intervals"]), ""]
    per_category = report["per_category"]
    for key, title, pattern in CATEGORY_TABLES:
        lines += [f"## {title} by category", "", category_table(per_category, key, pattern), ""]
    lines += [DEFINITIONS]
    return "\n".join(lines)


def write_plot(report: dict[str, Any], path: str | Path, include_plotlyjs: bool | str = True) -> None:
    """``bench_figure`` as a standalone HTML file."""
    bench_figure(report).write_html(str(path), include_plotlyjs=include_plotlyjs)


def bench_figure(report: dict[str, Any], colors: dict[str, str] | None = None):
    """Grouped bars of tokens/s and speedup per method, per category and overall; the speedups carry their bootstrap
    intervals as error bars when the report has them. ``colors``: method -> colour, for those that have one."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    groups = {**report["per_category"], "overall": report["results"]}
    categories = list(groups)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("tokens/s", "speedup over none"))
    stats = report.get("intervals") or {}
    spans = {**stats.get("speedup_by_category", {}), "overall": stats.get("speedup", {})}  # category: method: [lo, hi]
    for i, method in enumerate(report["results"]):
        color = (colors or {}).get(method, _PALETTE[i % len(_PALETTE)])
        for row, key in ((1, "tokens_per_s"), (2, "speedup")):
            values = [groups[c][method][key] for c in categories]
            bounds = [spans.get(c, {}).get(method) for c in categories] if key == "speedup" else [None]
            bounds = [b if b is not None and None not in b else None for b in bounds]
            error = None if all(b is None for b in bounds) else dict(  # 95% of the prompts' redraws
                type="data", symmetric=False, color="#444", thickness=1.2, width=3,
                array=[None if b is None else b[1] - v for b, v in zip(bounds, values)],
                arrayminus=[None if b is None else v - b[0] for b, v in zip(bounds, values)])
            fig.add_trace(go.Bar(
                x=categories, y=values, name=method, legendgroup=method, showlegend=row == 1, marker_color=color,
                error_y=error, hovertemplate=f"{method}<br>%{{x}}: %{{y:.2f}}<extra></extra>",
            ), row=row, col=1)
    fig.add_hline(y=1.0, line_dash="dot", line_color="gray", row=2, col=1)
    machine = report["machine"]
    fig.update_layout(barmode="group", height=700, template="plotly_white",
                      title=f"{machine['target']} ({machine['dtype']}, {machine['device']}) — {machine['date']}")
    return fig


_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
