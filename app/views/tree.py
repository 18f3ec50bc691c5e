"""The draft tree of one speculative step: as a graph, laid out, drawn, and as its attention mask.

Pure: step records (see ``core.trace``) in, Plotly figures out; token text drawn inside Plotly is HTML-escaped.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import networkx as nx
import plotly.graph_objects as go

from core.trace import node_source, topk_overlap

from app.views.style import FADED, ROOT_COLOR, SOURCE_COLORS, base_layout, empty_figure, escape
from app.views.text import figure_token, plain_reason

Record = dict[str, Any]

HOVER_TOP_TOKENS = 6  # expert top-k tokens listed in a tree node's hover
LABEL_SLOT = 0.68  # share of a depth column kept for a node's label; edges start after it


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
    """A node's hover text: token, id, depth, source; for drafted nodes the probabilities and the verdict;
    routing weights and each expert's top-k where the trace recorded them."""
    source = "root" if node["parent"] < 0 else node_source(node["branch"], node["expert"])
    lines = [
        f"<b>{escape(repr(node['token']))}</b>  (id {node['id']}, depth {node['depth']}, {source})",
    ]
    if source == "lookup":
        lines.append("copied from earlier in the context (no draft probability)")
    elif node["parent"] >= 0:
        lines.append(f"draft prob {math.exp(node['logp']):.3f} · cumulative score {node['score']:.2f} "
                     f"(log of the path's draft prob {math.exp(node['score']):.3f})")
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


def tree_figure(record: Record | None, label_chars: int = 11) -> go.Figure:
    """The draft tree of one speculative step, drawn left to right.

    Edges are one elbow trace (``None``-separated) plus a thick trace for the accepted path;
    nodes are one trace per source; nodes not verified (rerank or adaptive size) are faded; hover shows probabilities.
    """
    if record is None or record.get("kind") != "spec":
        if record is not None and record.get("note"):
            return empty_figure(f"no draft tree at this step: {plain_reason(record)}")
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
    return base_layout(
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
    hover = [[f"{escape(repr(by_id[r]['token']))} (id {r}) {'sees' if v else 'does not see'} "
              f"{escape(repr(by_id[c]['token']))} (id {c})" for c, v in zip(kept, row)]
             for r, row in zip(kept, mask)]
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, zmin=0, zmax=2, showscale=False, xgap=1, ygap=1,
        colorscale=[[0, "#f4f4f4"], [0.5, "#9ec3e6"], [1, "#1f4e8c"]], hovertext=hover, hoverinfo="text",
    ))
    size = len(kept)
    return base_layout(
        fig, height=int(min(900, max(220, 15 * size + 110))),
        xaxis=dict(tickangle=-60, tickfont=dict(size=9), side="top", showgrid=False),
        yaxis=dict(autorange="reversed", tickfont=dict(size=9), showgrid=False),
        margin=dict(l=10, r=10, t=90, b=10),
    )
