"""Statistics over whole runs, one Plotly figure each: acceptance by depth, accept lengths, expert usage
and acceptance, sibling diversity with the experts' top-k overlap, expert share, routing confidence.

Pure: ``Summary`` objects (``core.trace.summarize``) or whole traces in, figures or plain rows out.
"""
from __future__ import annotations

import textwrap
from collections import Counter, defaultdict
from typing import Any, Iterable

import plotly.graph_objects as go

from core.trace import Summary, expert_topk_overlap, node_source

from app.views.style import SOURCE_COLORS, base_layout, darker, empty_figure, escape, method_color, method_label
from app.views.text import is_moe, spec_steps

Record = dict[str, Any]

EXPERT_OVERLAP_NOTE = (
    "Lines: experts' top-k overlap = |top-k(E0) ∩ top-k(E1)| ÷ k at each node an MoE drafter expanded, "
    "by depth of the children it proposes; top-k(Ei) = the k = tree top-k tokens expert i alone ranks highest "
    "(1.0 = both experts would propose the same children)."
)


NONE_VERIFIED = "no drafted node was verified yet (the adaptive tree size verified none, or only looked-up ones)"
LEGEND_PER_ROW = 3  # horizontal legend entries that fit one row of a half-width figure


def bar_figure(series: dict[str, tuple[list[Any], list[float]]], colors: dict[str, str], xtitle: str, ytitle: str,
          height: int = 280, barmode: str = "group", hover: dict[str, list[str]] | None = None,
          rate: bool = False, empty: str = "no speculative steps yet") -> go.Figure:
    """Bar traces, one per series (a None value draws no bar); ``rate`` fixes the y axis to [0, 1]; ``empty`` is
    the message when no series has a bar."""
    if not any(y is not None for _, ys in series.values() for y in ys):
        return empty_figure(empty, height)
    fig = go.Figure()
    for name, (xs, ys) in series.items():
        fig.add_trace(go.Bar(x=xs, y=ys, name=name, marker_color=colors.get(name, "#777777"),
                             hovertext=(hover or {}).get(name), hoverinfo="text+y" if hover else None))
    yaxis = dict(title=dict(text=ytitle), gridcolor="#e6e6e6", zeroline=False)
    if rate:
        yaxis["range"] = [0, 1.05]
    else:
        yaxis["rangemode"] = "tozero"
    legend_rows = 1 + (len(series) - 1) // LEGEND_PER_ROW  # the legend sits above the plot: room for each row
    return base_layout(
        fig, height + 20 * (legend_rows - 1), barmode=barmode, bargap=0.25, yaxis=yaxis,
        xaxis=dict(title=dict(text=xtitle), dtick=1, showgrid=False),
        legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"),
        margin=dict(l=60, r=10, t=30 + 20 * (legend_rows - 1), b=45),
    )


def _empty(drafters: dict[str, Any]) -> str:
    """What an empty figure says: no drafter ran a speculative step, or none had a drafted node verified."""
    return NONE_VERIFIED if drafters else "no speculative steps yet"


def _drafters(summaries: dict[str, Summary]) -> dict[str, Summary]:
    """The summaries of drafting methods that ran at least one speculative step."""
    return {name: s for name, s in summaries.items() if name != "none" and s.spec_steps}


def acceptance_by_depth_figure(summaries: dict[str, Summary]) -> go.Figure:
    """alpha_d = P(depth d accepted | depth d-1 accepted), one bar group per drafter."""
    drafters = _drafters(summaries)
    series = {method_label(n): (list(range(1, len(s.acceptance_by_depth) + 1)), s.acceptance_by_depth)
              for n, s in drafters.items()}
    colors = {method_label(n): method_color(n, i) for i, n in enumerate(drafters)}
    return bar_figure(series, colors, "tree depth d", "acceptance α_d", rate=True, empty=_empty(drafters))


def accept_length_figure(summaries: dict[str, Summary]) -> go.Figure:
    """Histogram of draft tokens accepted per speculative cycle, as shares of each drafter's cycles."""
    drafters = _drafters(summaries)
    series = {}
    for name, s in drafters.items():
        total = sum(s.accept_length_hist.values()) or 1
        lengths = list(range(0, max(s.accept_length_hist, default=0) + 1))
        series[method_label(name)] = (lengths, [s.accept_length_hist.get(k, 0) / total for k in lengths])
    colors = {method_label(n): method_color(n, i) for i, n in enumerate(drafters)}
    return bar_figure(series, colors, "draft tokens accepted in one cycle", "share of cycles", rate=True,
                 empty=_empty(drafters))


def expert_usage_figure(summaries: dict[str, Summary]) -> go.Figure:
    """Verified nodes per depth, stacked by the drafter's source that proposed them (one panel per drafter, side by
    side); looked-up nodes are left out: they are no expert's, and their long chains would crowd the axis (the
    acceptance-per-source figure shows them)."""
    series: dict[str, tuple[list[Any], list[float]]] = {}
    order: list[str] = []  # drafter by drafter, depth 1 first (Plotly would order by first appearance)
    for name, s in _drafters(summaries).items():
        depths: set[int] = set()
        for source, by_depth in s.expert_usage.items():
            if source == "lookup":
                continue
            key = f"{method_label(name)} · {source}" if len(_drafters(summaries)) > 1 else source
            xs = [f"{name} d{d}" for d in by_depth]
            series[key] = (xs, list(by_depth.values()))
            depths.update(by_depth)
        order += [f"{name} d{d}" for d in sorted(depths)]
    colors = {k: SOURCE_COLORS.get(k.split(" · ")[-1], "#777777") for k in series}
    fig = bar_figure(series, colors, "drafter and depth", "verified nodes", barmode="stack",
                empty=_empty(_drafters(summaries)))
    fig.update_xaxes(dtick=None, type="category", categoryorder="array", categoryarray=order)
    return fig


def expert_acceptance_figure(summaries: dict[str, Summary]) -> go.Figure:
    """Accepted / verified nodes per proposing source, per drafter."""
    series = {}
    for name, s in _drafters(summaries).items():
        series[method_label(name)] = (list(s.expert_acceptance), list(s.expert_acceptance.values()))
    colors = {method_label(n): method_color(n, i) for i, n in enumerate(_drafters(summaries))}
    fig = bar_figure(series, colors, "proposed by", "accepted ÷ verified", rate=True, empty=_empty(_drafters(summaries)))
    fig.update_xaxes(dtick=None, type="category")
    return fig


def sibling_stats(records: Iterable[Record]) -> dict[int, dict[str, float]]:
    """Per depth, over every drafted candidate (kept or cut; looked-up nodes are not the drafter's): the
    share of distinct tokens among siblings (children of one node), the share of candidates that repeat a
    token drafted under another parent at the same depth, and each source's share of the candidates."""
    per_depth: dict[int, dict[str, Any]] = defaultdict(lambda: {"groups": [], "tokens": [], "sources": Counter()})
    for step in spec_steps(records):
        children: dict[int, list[Record]] = defaultdict(list)
        for node in step.get("nodes", []):
            if node["parent"] >= 0 and node["branch"] != "lookup":
                children[node["parent"]].append(node)
        for kids in children.values():
            depth = kids[0]["depth"]
            per_depth[depth]["groups"].append(len({k["token_id"] for k in kids}) / len(kids))
        by_depth: dict[int, list[Record]] = defaultdict(list)
        for kids in children.values():
            by_depth[kids[0]["depth"]].extend(kids)
        for depth, layer in by_depth.items():
            per_depth[depth]["tokens"].append(len({k["token_id"] for k in layer}) / len(layer))
            per_depth[depth]["sources"].update(node_source(k["branch"], k["expert"]) for k in layer)
    out = {}
    for depth in sorted(per_depth):
        d = per_depth[depth]
        total = sum(d["sources"].values()) or 1
        out[depth] = {
            "distinct_among_siblings": sum(d["groups"]) / len(d["groups"]),
            "distinct_in_layer": sum(d["tokens"]) / len(d["tokens"]),
            **{f"share {src}": n / total for src, n in sorted(d["sources"].items())},
        }
    return out


def sibling_diversity_figure(traces: dict[str, list[Record]]) -> go.Figure:
    """Bars: distinct tokens in each tree layer (1.0 = no two parents drafted the same token), per drafter; each
    bar's hover also gives the distinct tokens among siblings (the children of one node: 1.0 unless candidates
    from two experts meet, as decoupled siblings may). Lines: the experts' top-k overlap by depth (MoE drafters
    whose traces recorded it), defined underneath."""
    series, colors, hover = {}, {}, {}
    overlaps: dict[str, dict[int, float]] = {}  # drafter label -> depth -> mean overlap
    for i, (name, records) in enumerate(_drafter_traces(traces).items()):
        stats = sibling_stats(records)
        label = method_label(name)
        series[label] = (list(stats), [v["distinct_in_layer"] for v in stats.values()])
        hover[label] = [f"depth {d}: distinct in the layer {v['distinct_in_layer']:.2f}, among siblings "
                        f"{v['distinct_among_siblings']:.2f}" for d, v in stats.items()]
        colors[label] = method_color(name, i)
        _, by_depth = expert_topk_overlap(records)
        if by_depth:
            overlaps[label] = by_depth
    fig = bar_figure(series, colors, "tree depth", "distinct ÷ candidates; overlap", rate=True, hover=hover)
    if overlaps:
        _add_overlap_lines(fig, overlaps, colors)
    return fig


def _add_overlap_lines(fig: go.Figure, overlaps: dict[str, dict[int, float]], colors: dict[str, str]) -> None:
    """Mutates ``fig``: one dashed line per MoE drafter, and the definition written below the plot."""
    for label, by_depth in overlaps.items():
        fig.add_trace(go.Scatter(
            x=list(by_depth), y=list(by_depth.values()), mode="lines+markers",
            name=f"{label} · experts' top-k overlap",
            line=dict(color=darker(colors[label]), dash="dash", width=2.5),
            marker=dict(symbol="diamond", size=9, line=dict(color="#ffffff", width=1)),
            hovertemplate="children at depth %{x}: overlap %{y:.2f}<extra></extra>",
        ))
    note = "<br>".join(escape(line) for line in textwrap.wrap(EXPERT_OVERLAP_NOTE, 95))
    fig.add_annotation(text=note, x=0, y=-0.28, xref="paper", yref="paper", xanchor="left", yanchor="top",
                       showarrow=False, align="left", font=dict(size=10, color="#555555"))
    fig.update_layout(height=370, margin=dict(l=60, r=10, t=50, b=115))  # t: the long line name wraps the legend


def expert_share_figure(traces: dict[str, list[Record]]) -> go.Figure:
    """Share of drafted candidates per proposing source and depth (MoE drafters)."""
    series: dict[str, tuple[list[Any], list[float]]] = {}
    moe = {n: r for n, r in _drafter_traces(traces).items() if is_moe(r)}
    for name, records in moe.items():
        stats = sibling_stats(records)
        sources = sorted({k for v in stats.values() for k in v if k.startswith("share ")})
        for key in sources:
            label = key.removeprefix("share ")
            label = f"{method_label(name)} · {label}" if len(moe) > 1 else label
            series[label] = ([f"{name} d{d}" for d in stats], [v.get(key, 0.0) for v in stats.values()])
    colors = {k: SOURCE_COLORS.get(k.split(" · ")[-1], "#777777") for k in series}
    if not series:
        return empty_figure("no MoE drafter in this session", 280)
    fig = bar_figure(series, colors, "drafter and depth", "share of candidates", barmode="stack", rate=True)
    fig.update_xaxes(dtick=None, type="category")
    return fig


def routing_confidence(records: Iterable[Record], bins: int = 5) -> list[dict[str, float]]:
    """Verified MoE nodes binned by the confidence of the gate that produced them (the larger
    routing weight of the head in use: w for MoE nodes, v for contrastive ones), with the
    acceptance rate in each bin (None for an empty bin)."""
    edges = [0.5 + 0.5 * i / bins for i in range(bins + 1)]
    counts = [[0, 0] for _ in range(bins)]
    for step in spec_steps(records):
        for node in step.get("nodes", []):
            routing = node.get("routing") or []
            if node["parent"] < 0 or not node["kept"] or len(routing) != 4 or not any(routing):
                continue
            pair = routing[2:] if node["branch"] == "contrastive" else routing[:2]
            confidence = max(pair)
            index = min(bins - 1, max(0, int((confidence - 0.5) / 0.5 * bins)))
            counts[index][0] += 1
            counts[index][1] += int(node["accepted"])
    return [
        {"low": edges[i], "high": edges[i + 1], "nodes": n, "acceptance": (a / n if n else None)}
        for i, (n, a) in enumerate(counts)
    ]


def routing_confidence_figure(traces: dict[str, list[Record]]) -> go.Figure:
    """Acceptance per routing-confidence bin (``routing_confidence``), one bar group per MoE drafter."""
    series, colors, hover = {}, {}, {}
    for i, (name, records) in enumerate(_drafter_traces(traces).items()):
        if not is_moe(records):
            continue
        rows = routing_confidence(records)
        label = method_label(name)
        series[label] = ([f"{r['low']:.1f}–{r['high']:.1f}" for r in rows], [r["acceptance"] for r in rows])
        hover[label] = [f"{r['nodes']} verified nodes" for r in rows]
        colors[label] = method_color(name, i)
    if not series:
        return empty_figure("no MoE drafter in this session", 280)
    fig = bar_figure(series, colors, "routing confidence (max gate weight)", "acceptance", hover=hover, rate=True,
                empty=NONE_VERIFIED)
    fig.update_xaxes(dtick=None, type="category")
    return fig


def diversity_columns(traces: dict[str, list[Record]]) -> dict[str, dict[str, str]]:
    """Per drafting method, the statistics tab's trace-level numbers as CSV cells: distinct tokens per layer and
    among siblings by depth, and (MoE drafters) acceptance per routing-confidence bin with its node count."""
    out = {}
    for name, records in _drafter_traces(traces).items():
        by_depth = sibling_stats(records)
        row = {
            "distinct_in_layer_by_depth": " ".join(f"{d}:{v['distinct_in_layer']:.3f}" for d, v in by_depth.items()),
            "distinct_among_siblings_by_depth": " ".join(f"{d}:{v['distinct_among_siblings']:.3f}"
                                                         for d, v in by_depth.items()),
            "routing_confidence_acceptance": "",
        }
        if is_moe(records):
            row["routing_confidence_acceptance"] = " ".join(
                f"{r['low']:.1f}-{r['high']:.1f}:{'-' if r['acceptance'] is None else format(r['acceptance'], '.3f')}"
                f"(n={r['nodes']})" for r in routing_confidence(records))
        out[name] = row
    return out


def _drafter_traces(traces: dict[str, list[Record]]) -> dict[str, list[Record]]:
    """The traces of drafting methods that ran at least one speculative step."""
    return {n: r for n, r in traces.items() if n != "none" and spec_steps(r)}
