"""The explorer's look, shared by every view: source and method colours, escaping for Plotly, the base layout.

Token text drawn inside Plotly goes through ``escape``; every figure gets ``base_layout``.
"""
from __future__ import annotations

import html
import textwrap
from typing import Any

import plotly.graph_objects as go

# Accepted draft tokens are coloured by who proposed them; the target's own tokens are grey.
SOURCE_COLORS = {
    "expert 0": "#3b76c4",
    "expert 1": "#f28e2b",
    "contrastive": "#3aa45b",
    "draft": "#a05fb4",
    "lookup": "#c9a227",  # copied from earlier in the context
    "bonus": "#9a9a9a",
    "target": "#c8c8c8",
}
ROOT_COLOR = "#333333"
METHOD_COLORS = {"jakiro": "#3b76c4", "eagle": "#a05fb4", "none": "#8c8c8c"}
EXTRA_METHOD_COLORS = ["#e15759", "#76b7b2", "#edc948", "#59a14f"]
FADED = "rgba(150, 150, 150, 0.45)"


def escape(text: str) -> str:
    """Escape <, > and & for Plotly's HTML subset (it does not decode &quot;, so quotes stay as they are)."""
    return html.escape(text, quote=False)


def base_layout(fig: go.Figure, height: int, **extra: Any) -> go.Figure:
    """Mutates ``fig``: the explorer's plain, transparent layout at ``height``, ``extra`` overriding it; returns ``fig``."""
    layout = dict(
        template="none", height=height, margin=dict(l=10, r=10, t=10, b=10), uirevision="keep",
        font=dict(size=12), paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
    )
    fig.update_layout(**{**layout, **extra})
    return fig


def empty_figure(message: str, height: int = 160) -> go.Figure:
    """A figure with no axes and ``message`` in the middle: the empty state of every plot."""
    fig = go.Figure()
    lines = textwrap.wrap(message, 72) or [""]
    fig.add_annotation(text="<br>".join(escape(line) for line in lines), x=0.5, y=0.5, xref="paper", yref="paper",
                       showarrow=False, font=dict(size=13, color="#777"))
    return base_layout(fig, height, xaxis=dict(visible=False), yaxis=dict(visible=False))


def method_label(name: str) -> str:
    """The name a method is shown under; an unknown method keeps its own name."""
    return {"jakiro": "Jakiro (MoE)", "eagle": "EAGLE-2 (single head)", "none": "plain decoding"}.get(name, name)


def method_color(name: str, index: int = 0) -> str:
    """A method's colour; a method without one takes an extra colour by its ``index``."""
    return METHOD_COLORS.get(name, EXTRA_METHOD_COLORS[index % len(EXTRA_METHOD_COLORS)])


def darker(color: str, factor: float = 0.5) -> str:
    """A ``#rrggbb`` colour scaled towards black (lines drawn over bars of the same hue stay visible)."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{int(c * factor):02x}" for c in (r, g, b))
