"""Pure builders: trace records and summaries in, Plotly figures, highlighted text and tables out.

Nothing here touches a model or a tensor; every function reads the plain records that
``core.engine.SpecDecoder.stream`` yields (see ``core.trace``) and the ``Summary`` that
``core.trace.summarize`` computes from them. Token text drawn inside Plotly is HTML-escaped.
"""
from __future__ import annotations

import html
import math
import textwrap
from collections import Counter, defaultdict
from typing import Any, Iterable

import networkx as nx
import pandas as pd
import plotly.graph_objects as go

from core.trace import Summary, expert_topk_overlap, node_source, steps_of, topk_overlap

Record = dict[str, Any]

# Accepted draft tokens are coloured by who proposed them; the target's own tokens are grey.
SOURCE_COLORS = {
    "expert 0": "#3b76c4",
    "expert 1": "#f28e2b",
    "contrastive": "#3aa45b",
    "draft": "#a05fb4",
    "bonus": "#9a9a9a",
    "target": "#c8c8c8",
}
ROOT_COLOR = "#333333"
METHOD_COLORS = {"jakiro": "#3b76c4", "eagle": "#a05fb4", "none": "#8c8c8c"}
EXTRA_METHOD_COLORS = ["#e15759", "#76b7b2", "#edc948", "#59a14f"]
FADED = "rgba(150, 150, 150, 0.45)"
COUNTER_DEFINITIONS = (
    "**τ** = tokens emitted per target forward, counting the bonus token (plain decoding = 1.00). "
    "**tokens/s** = new tokens ÷ model time (draft + verify + commit of every step; UI time excluded). "
    "**speedup** = this method's tokens/s ÷ plain decoding's tokens/s on the same prompt and settings, "
    "measured in this run. **draft / verify ms** = mean time per step to grow the tree / run the target "
    "over it. **accepted/cycle** = draft tokens accepted per speculative cycle (bonus excluded)."
)
EXPERT_OVERLAP_NOTE = (
    "Lines: experts' top-k overlap = |top-k(E0) ∩ top-k(E1)| ÷ k at each node an MoE drafter expanded, "
    "by depth of the children it proposes; top-k(Ei) = the k = tree top-k tokens expert i alone ranks highest "
    "(1.0 = both experts would propose the same children)."
)
HOVER_TOP_TOKENS = 6  # expert top-k tokens listed in a tree node's hover


# --- tokens ---------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Escape <, > and & for Plotly's HTML subset (it does not decode &quot;, so quotes stay as they are)."""
    return html.escape(text, quote=False)


def visible_token(text: str, limit: int = 12) -> str:
    """A token made readable in a figure: whitespace shown, long tokens cut. Not escaped."""
    shown = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "")
    shown = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in shown)
    if not shown:
        shown = "∅"
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def figure_token(text: str, limit: int = 12) -> str:
    """``visible_token`` escaped for Plotly, which renders a subset of HTML (``<s>`` would vanish)."""
    return _escape(visible_token(text, limit))


def highlighted_tokens(records: Iterable[Record]) -> list[tuple[str, str]]:
    """One (text, source) pair per emitted token, for ``gr.HighlightedText``; a line break is
    shown as ↵ before it and an empty token as ∅, so every token stays clickable."""
    return [(display_text(t["text"]), t["source"]) for step in steps_of(records) for t in step["emitted"]]


def display_text(text: str) -> str:
    if not text:
        return "∅"
    return text.replace("\r", "").replace("\n", "↵\n")


def legend_for(records: list[Record] | None, name: str) -> dict[str, str]:
    """The colours a method's tokens can take (the legend lists only these)."""
    if name == "none":
        keys = ["target"]
    elif _is_moe(records or []) or (not records and name == "jakiro"):
        keys = ["expert 0", "expert 1", "contrastive", "bonus", "target"]
    else:
        keys = ["draft", "bonus", "target"]
    return {k: SOURCE_COLORS[k] for k in keys}


def token_steps(records: Iterable[Record]) -> list[int]:
    """The step that emitted each token, in the order of ``highlighted_tokens``."""
    return [step["step"] for step in steps_of(records) for _ in step["emitted"]]


def trace_text(records: list[Record]) -> str:
    """The generated text without stop tokens, joined from the recorded token texts."""
    head = records[0] if records and records[0].get("type") == "header" else {}
    stops = set(head.get("stop_token_ids", []))
    return "".join(t["text"] for step in steps_of(records) for t in step["emitted"] if t["token_id"] not in stops)


def spec_steps(records: Iterable[Record]) -> list[Record]:
    return [s for s in steps_of(records) if s["kind"] == "spec"]


def step_at(records: Iterable[Record], step: int) -> Record | None:
    return next((s for s in steps_of(records) if s["step"] == step), None)


def last_step(records: Iterable[Record]) -> int:
    return max((s["step"] for s in steps_of(records)), default=0)


# --- counters -------------------------------------------------------------------------------------


def speedup(summary: Summary | None, plain: Summary | None) -> float | None:
    """tokens/s of a method over plain decoding's; None until both are measured."""
    if summary is None or plain is None or plain.tokens_per_s <= 0 or summary.new_tokens == 0:
        return None
    return summary.tokens_per_s / plain.tokens_per_s


def counters_markdown(summaries: dict[str, Summary | None], running: str | None = None, device: str = "") -> str:
    """The live counters table, one row per method, with the definitions underneath."""
    plain = summaries.get("none")
    rows = [
        "| method | tokens | target forwards | τ | tokens/s | speedup | draft ms/step | verify ms/step | accepted/cycle |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, summary in summaries.items():
        label = method_label(name) + (" ⏳" if name == running else "")
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
    note = f"\n\n<small>{COUNTER_DEFINITIONS}{where}</small>"
    return "\n".join(rows) + note


def method_label(name: str) -> str:
    return {"jakiro": "Jakiro (MoE)", "eagle": "EAGLE-2 (single head)", "none": "plain decoding"}.get(name, name)


def method_color(name: str, index: int = 0) -> str:
    return METHOD_COLORS.get(name, EXTRA_METHOD_COLORS[index % len(EXTRA_METHOD_COLORS)])


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


def step_markdown(name: str, records: list[Record], step: int) -> str:
    """What happened in one step of one method, in a sentence or two."""
    record = step_at(records, step)
    title = f"**{method_label(name)}**"
    if record is None:
        return f"{title}: no step {step} (this run ended at step {last_step(records)})."
    emitted = " ".join(f"`{visible_token(t['text'], 20)}`" for t in record["emitted"]) or "nothing"
    if record["kind"] != "spec":
        what = "prefill (the prompt, no draft tree)" if record["kind"] == "prefill" else "one plain decoding step"
        return f"{title} step {step}: {what}, emitted {emitted}; target {record['verify_ms']:.1f} ms."
    return (
        f"{title} step {step}: accepted **{record['accepted_len']}** of {record['tree_nodes']} verified nodes "
        f"({record['candidates']} scored, {record['drafter_forwards']} drafter forwards) → emitted {emitted}. "
        f"Draft {record['draft_ms']:.1f} ms, verify {record['verify_ms']:.1f} ms, running τ {record['tau']:.2f}."
    )


def tree_graph(nodes: list[Record]) -> nx.DiGraph:
    """The draft tree as a DiGraph: node ids with their records as attributes, edges parent -> child."""
    graph = nx.DiGraph()
    for node in nodes:
        graph.add_node(node["id"], **node)
    for node in nodes:
        if node["parent"] >= 0:
            graph.add_edge(node["parent"], node["id"])
    return graph


def tidy_layout(graph: nx.DiGraph, root: int = 0) -> dict[int, tuple[float, float]]:
    """Left-to-right tidy tree: x = depth; leaves take rows in DFS order (best-scored child first);
    a parent sits at the middle of its first and last child, so no two edges cross."""
    pos: dict[int, tuple[float, float]] = {}
    next_row = 0

    def children(node: int) -> list[int]:
        return sorted(graph.successors(node), key=lambda c: (-graph.nodes[c].get("score", 0.0), c))

    stack: list[tuple[int, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, expanded = stack.pop()
        kids = children(node)
        if not kids:
            pos[node] = (float(depth), float(-next_row))
            next_row += 1
        elif expanded:
            ys = [pos[k][1] for k in kids]
            pos[node] = (float(depth), (ys[0] + ys[-1]) / 2)
        else:
            stack.append((node, depth, True))
            stack.extend((k, depth + 1, False) for k in reversed(kids))
    return pos


def _hover(node: Record) -> str:
    source = "root" if node["parent"] < 0 else node_source(node["branch"], node["expert"])
    lines = [
        f"<b>{_escape(repr(node['token']))}</b>  (id {node['id']}, depth {node['depth']}, {source})",
    ]
    if node["parent"] >= 0:
        lines.append(f"draft prob {math.exp(node['logp']):.3f} · cumulative score {node['score']:.2f}")
    target = node.get("target_prob")
    if node["parent"] >= 0:
        lines.append("target prob " + (f"{target:.3f}" if target is not None else "– (not verified)"))
    routing = node.get("routing") or []
    if len(routing) == 4 and any(routing):
        w0, w1, v0, v1 = routing
        lines.append(f"routing w0 {w0:.2f} w1 {w1:.2f} · v0 {v0:.2f} v1 {v1:.2f}")
    if node["parent"] >= 0:
        verdict = "verified, rejected" if node["kept"] else "not verified (cut by the rerank or the adaptive tree size)"
        lines.append("accepted" if node["accepted"] else verdict)
    return "<br>".join(lines + _expert_topk_lines(node))


def _expert_topk_lines(node: Record) -> list[str]:
    """What each expert alone would propose below this node (MoE traces that recorded it; else nothing)."""
    topk, texts = node.get("expert_topk"), node.get("expert_topk_text")
    if not topk or not texts:
        return []
    k = len(topk[0])
    lines = []
    for expert, tokens in enumerate(texts):
        shown = " | ".join(figure_token(t, 10) for t in tokens[:HOVER_TOP_TOKENS])
        lines.append(f"expert {expert} top-{k}: {shown}{' …' if k > HOVER_TOP_TOKENS else ''}")
    shared = round(topk_overlap(topk) * k)
    lines.append(f"experts' top-{k} overlap {shared}/{k}")
    return lines


def _base_layout(fig: go.Figure, height: int, **extra: Any) -> go.Figure:
    layout = dict(
        template="none", height=height, margin=dict(l=10, r=10, t=10, b=10), uirevision="keep",
        font=dict(size=12), paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
    )
    fig.update_layout(**{**layout, **extra})
    return fig


def empty_figure(message: str, height: int = 160) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=_escape(message), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=13, color="#777"))
    return _base_layout(fig, height, xaxis=dict(visible=False), yaxis=dict(visible=False))


LABEL_SLOT = 0.68  # share of a depth column kept for a node's label; edges start after it


def tree_figure(record: Record | None, label_chars: int = 11) -> go.Figure:
    """The draft tree of one speculative step, drawn left to right.

    Edges are one elbow trace (``None``-separated) plus a thick trace for the accepted path;
    nodes are one trace per source; nodes not verified (rerank or adaptive size) are faded; hover shows probabilities.
    """
    if record is None or record.get("kind") != "spec":
        return empty_figure("no draft tree at this step")
    nodes = record.get("nodes") or []
    if not nodes:
        return empty_figure("this trace was recorded without tree details")
    graph = tree_graph(nodes)
    pos = tidy_layout(graph)
    accepted_edges = set(zip(record["accepted_path"], record["accepted_path"][1:]))
    fig = go.Figure()
    for on_path, color, width in ((False, "#c9c9c9", 1), (True, "#222222", 3)):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for parent, child in graph.edges:
            if ((parent, child) in accepted_edges) != on_path:
                continue
            (x0, y0), (x1, y1) = pos[parent], pos[child]
            elbow = x0 + LABEL_SLOT + (1 - LABEL_SLOT) / 2
            xs += [x0 + LABEL_SLOT, elbow, elbow, x1 - 0.03, None]
            ys += [y0, y0, y1, y1, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=width), hoverinfo="skip",
                                 name="accepted path" if on_path else "edges", showlegend=on_path))
    groups: dict[str, list[Record]] = defaultdict(list)
    for node in nodes:
        groups["root" if node["parent"] < 0 else node_source(node["branch"], node["expert"])].append(node)
    for source, members in groups.items():
        color = ROOT_COLOR if source == "root" else SOURCE_COLORS.get(source, "#777777")
        fig.add_trace(go.Scatter(
            x=[pos[n["id"]][0] for n in members], y=[pos[n["id"]][1] for n in members],
            mode="markers+text", name=source, textposition="middle right", cliponaxis=False,
            text=[figure_token(n["token"], label_chars) for n in members],
            textfont=dict(size=11, color=["#111111" if n["kept"] else FADED for n in members]),
            marker=dict(
                color=color, size=[11 if n["accepted"] else 8 for n in members],
                opacity=[1.0 if n["kept"] else 0.3 for n in members],
                line=dict(color="#111111", width=[2.5 if n["accepted"] else 0 for n in members]),
            ),
            hovertext=[_hover(n) for n in members], hoverinfo="text",
        ))
    rows = 1 - min(y for _, y in pos.values())
    depth = max(x for x, _ in pos.values())
    return _base_layout(
        fig, height=int(min(1400, max(260, 19 * rows + 70))),
        xaxis=dict(visible=False, range=[-0.15, depth + 0.95], fixedrange=False),
        yaxis=dict(visible=False, range=[-rows + 0.4, 0.7]),
        legend=dict(orientation="h", x=0, y=0, yanchor="top", font=dict(size=11)),
        margin=dict(l=5, r=5, t=34, b=30), hoverlabel=dict(align="left"),
    )


def ancestor_rows(nodes: list[Record]) -> tuple[list[int], list[list[int]]]:
    """Kept node ids (root first) and the tree attention mask over them: row i sees column j
    when j is i or one of its ancestors."""
    kept = sorted(n["id"] for n in nodes if n["kept"])
    parent = {n["id"]: n["parent"] for n in nodes}
    index = {node: i for i, node in enumerate(kept)}
    mask = []
    for node in kept:
        row = [0] * len(kept)
        cur = node
        while cur >= 0:
            row[index[cur]] = 1
            cur = parent[cur]
        mask.append(row)
    return kept, mask


def mask_figure(record: Record | None) -> go.Figure:
    """Heatmap of the tree attention mask over the verified nodes; accepted rows drawn darker."""
    if record is None or record.get("kind") != "spec" or not record.get("nodes"):
        return empty_figure("no tree attention mask at this step")
    by_id = {n["id"]: n for n in record["nodes"]}
    kept, mask = ancestor_rows(record["nodes"])
    z = [[v * (2 if by_id[node]["accepted"] else 1) for v in row] for node, row in zip(kept, mask)]
    labels = [f"{figure_token(by_id[n]['token'], 10)} ·{n}" for n in kept]
    hover = [[f"{_escape(repr(by_id[r]['token']))} (id {r}) {'sees' if v else 'does not see'} "
              f"{_escape(repr(by_id[c]['token']))} (id {c})" for c, v in zip(kept, row)]
             for r, row in zip(kept, mask)]
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, zmin=0, zmax=2, showscale=False, xgap=1, ygap=1,
        colorscale=[[0, "#f4f4f4"], [0.5, "#9ec3e6"], [1, "#1f4e8c"]], hovertext=hover, hoverinfo="text",
    ))
    size = len(kept)
    return _base_layout(
        fig, height=int(min(900, max(220, 15 * size + 110))),
        xaxis=dict(tickangle=-60, tickfont=dict(size=9), side="top", showgrid=False),
        yaxis=dict(autorange="reversed", tickfont=dict(size=9), showgrid=False),
        margin=dict(l=10, r=10, t=90, b=10),
    )


# --- statistics -------------------------------------------------------------------------------------


def _bars(series: dict[str, tuple[list[Any], list[float]]], colors: dict[str, str], xtitle: str, ytitle: str,
          height: int = 280, barmode: str = "group", hover: dict[str, list[str]] | None = None,
          rate: bool = False) -> go.Figure:
    """Bar traces, one per series; ``rate`` fixes the y axis to [0, 1]."""
    if not any(xs for xs, _ in series.values()):
        return empty_figure("no speculative steps yet", height)
    fig = go.Figure()
    for name, (xs, ys) in series.items():
        fig.add_trace(go.Bar(x=xs, y=ys, name=name, marker_color=colors.get(name, "#777777"),
                             hovertext=(hover or {}).get(name), hoverinfo="text+y" if hover else None))
    yaxis = dict(title=dict(text=ytitle), gridcolor="#e6e6e6", zeroline=False)
    if rate:
        yaxis["range"] = [0, 1.05]
    else:
        yaxis["rangemode"] = "tozero"
    return _base_layout(
        fig, height, barmode=barmode, bargap=0.25, yaxis=yaxis,
        xaxis=dict(title=dict(text=xtitle), dtick=1, showgrid=False),
        legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"),
        margin=dict(l=60, r=10, t=30, b=45),
    )


def _drafters(summaries: dict[str, Summary]) -> dict[str, Summary]:
    return {name: s for name, s in summaries.items() if name != "none" and s.spec_steps}


def acceptance_by_depth_figure(summaries: dict[str, Summary]) -> go.Figure:
    """alpha_d = P(depth d accepted | depth d-1 accepted), one bar group per drafter."""
    drafters = _drafters(summaries)
    series = {method_label(n): (list(range(1, len(s.acceptance_by_depth) + 1)), s.acceptance_by_depth)
              for n, s in drafters.items()}
    colors = {method_label(n): method_color(n, i) for i, n in enumerate(drafters)}
    return _bars(series, colors, "tree depth d", "acceptance α_d", rate=True)


def accept_length_figure(summaries: dict[str, Summary]) -> go.Figure:
    """Histogram of draft tokens accepted per speculative cycle, as shares of each drafter's cycles."""
    drafters = _drafters(summaries)
    series = {}
    for name, s in drafters.items():
        total = sum(s.accept_length_hist.values()) or 1
        lengths = list(range(0, max(s.accept_length_hist, default=0) + 1))
        series[method_label(name)] = (lengths, [s.accept_length_hist.get(k, 0) / total for k in lengths])
    colors = {method_label(n): method_color(n, i) for i, n in enumerate(drafters)}
    return _bars(series, colors, "draft tokens accepted in one cycle", "share of cycles", rate=True)


def expert_usage_figure(summaries: dict[str, Summary]) -> go.Figure:
    """Verified nodes per depth, stacked by the source that proposed them (one panel per drafter, side by side)."""
    series: dict[str, tuple[list[Any], list[float]]] = {}
    for name, s in _drafters(summaries).items():
        for source, by_depth in s.expert_usage.items():
            key = f"{method_label(name)} · {source}" if len(_drafters(summaries)) > 1 else source
            xs = [f"{name} d{d}" for d in by_depth]
            series[key] = (xs, list(by_depth.values()))
    colors = {k: SOURCE_COLORS.get(k.split(" · ")[-1], "#777777") for k in series}
    fig = _bars(series, colors, "drafter and depth", "verified nodes", barmode="stack")
    fig.update_xaxes(dtick=None, type="category")
    return fig


def expert_acceptance_figure(summaries: dict[str, Summary]) -> go.Figure:
    """Accepted / verified nodes per proposing source, per drafter."""
    series = {}
    for name, s in _drafters(summaries).items():
        series[method_label(name)] = (list(s.expert_acceptance), list(s.expert_acceptance.values()))
    colors = {method_label(n): method_color(n, i) for i, n in enumerate(_drafters(summaries))}
    fig = _bars(series, colors, "proposed by", "accepted ÷ verified", rate=True)
    fig.update_xaxes(dtick=None, type="category")
    return fig


def sibling_stats(records: Iterable[Record]) -> dict[int, dict[str, float]]:
    """Per depth, over every scored candidate (kept or cut): the share of distinct tokens among
    siblings (children of one node), the share of candidates that repeat a token drafted under
    another parent at the same depth, and each source's share of the candidates."""
    per_depth: dict[int, dict[str, Any]] = defaultdict(lambda: {"groups": [], "tokens": [], "sources": Counter()})
    for step in spec_steps(records):
        children: dict[int, list[Record]] = defaultdict(list)
        for node in step.get("nodes", []):
            if node["parent"] >= 0:
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
    """Bars: distinct tokens in each tree layer (1.0 = no two parents drafted the same token), per drafter.
    Lines: the experts' top-k overlap by depth (MoE drafters whose traces recorded it), defined underneath."""
    series, colors = {}, {}
    overlaps: dict[str, dict[int, float]] = {}  # drafter label -> depth -> mean overlap
    for i, (name, records) in enumerate(_drafter_traces(traces).items()):
        stats = sibling_stats(records)
        series[method_label(name)] = (list(stats), [v["distinct_in_layer"] for v in stats.values()])
        colors[method_label(name)] = method_color(name, i)
        _, by_depth = expert_topk_overlap(records)
        if by_depth:
            overlaps[method_label(name)] = by_depth
    fig = _bars(series, colors, "tree depth", "distinct ÷ candidates; overlap", rate=True)
    if overlaps:
        _add_overlap_lines(fig, overlaps, colors)
    return fig


def _add_overlap_lines(fig: go.Figure, overlaps: dict[str, dict[int, float]], colors: dict[str, str]) -> None:
    """Mutates ``fig``: one dashed line per MoE drafter, and the definition written below the plot."""
    for label, by_depth in overlaps.items():
        fig.add_trace(go.Scatter(
            x=list(by_depth), y=list(by_depth.values()), mode="lines+markers",
            name=f"{label} · experts' top-k overlap",
            line=dict(color=_darker(colors[label]), dash="dash", width=2.5),
            marker=dict(symbol="diamond", size=9, line=dict(color="#ffffff", width=1)),
            hovertemplate="children at depth %{x}: overlap %{y:.2f}<extra></extra>",
        ))
    note = "<br>".join(_escape(line) for line in textwrap.wrap(EXPERT_OVERLAP_NOTE, 95))
    fig.add_annotation(text=note, x=0, y=-0.28, xref="paper", yref="paper", xanchor="left", yanchor="top",
                       showarrow=False, align="left", font=dict(size=10, color="#555555"))
    fig.update_layout(height=350, margin=dict(l=60, r=10, t=30, b=115))


def expert_share_figure(traces: dict[str, list[Record]]) -> go.Figure:
    """Share of drafted candidates per proposing source and depth (MoE drafters)."""
    series: dict[str, tuple[list[Any], list[float]]] = {}
    moe = {n: r for n, r in _drafter_traces(traces).items() if _is_moe(r)}
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
    fig = _bars(series, colors, "drafter and depth", "share of candidates", barmode="stack", rate=True)
    fig.update_xaxes(dtick=None, type="category")
    return fig


def routing_confidence(records: Iterable[Record], bins: int = 5) -> list[dict[str, float]]:
    """Verified MoE nodes binned by the confidence of the gate that produced them (the larger
    routing weight of the head in use: w for MoE nodes, v for contrastive ones), with the
    acceptance rate in each bin."""
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
        {"low": edges[i], "high": edges[i + 1], "nodes": n, "acceptance": (a / n if n else 0.0)}
        for i, (n, a) in enumerate(counts)
    ]


def routing_confidence_figure(traces: dict[str, list[Record]]) -> go.Figure:
    series, colors, hover = {}, {}, {}
    for i, (name, records) in enumerate(_drafter_traces(traces).items()):
        if not _is_moe(records):
            continue
        rows = routing_confidence(records)
        label = method_label(name)
        series[label] = ([f"{r['low']:.1f}–{r['high']:.1f}" for r in rows], [r["acceptance"] for r in rows])
        hover[label] = [f"{r['nodes']} verified nodes" for r in rows]
        colors[label] = method_color(name, i)
    if not series:
        return empty_figure("no MoE drafter in this session", 280)
    fig = _bars(series, colors, "routing confidence (max gate weight)", "acceptance", hover=hover, rate=True)
    fig.update_xaxes(dtick=None, type="category")
    return fig


def _darker(color: str, factor: float = 0.5) -> str:
    """A ``#rrggbb`` colour scaled towards black (lines drawn over bars of the same hue stay visible)."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{int(c * factor):02x}" for c in (r, g, b))


def _drafter_traces(traces: dict[str, list[Record]]) -> dict[str, list[Record]]:
    return {n: r for n, r in traces.items() if n != "none" and spec_steps(r)}


def _is_moe(records: list[Record]) -> bool:
    head = records[0] if records else {}
    drafter = head.get("drafter") or {}
    return drafter.get("ffn") == "moe"
