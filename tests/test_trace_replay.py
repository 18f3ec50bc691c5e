"""Replaying a saved trace in the app: whatever a trace file holds, the upload handler either explains why it
cannot be used or everything the app then computes from it (counters, summaries, every step's tree and mask,
the statistics) works. Driven through the app's own handlers, with no model loaded (viewer mode)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from app.session import Session
from app.ui import build_demo
from core.config import EngineConfig, TreeConfig
from core.engine import SpecDecoder
from core.registry import attach, random_drafter
from core.trace import write_jsonl
from tests.helpers import NO_FALLBACK

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request warns instead

Record = dict[str, Any]
# values of the wrong type, out of range, or absurd; each replaces one field of a real trace in turn
BAD_VALUES = [None, "x", -1, 2.5, 10**9, 2**60, [], {}, True, [["a"]], [[1, 2], []]]


@pytest.fixture(scope="module")
def trace(tiny_target) -> list[Record]:
    """A real Jakiro trace with every detail: tree nodes, routing, the experts' top-k."""
    proposer = attach(random_drafter(tiny_target, "moe", seed=1), tiny_target, "jakiro")
    cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=6,
                       tree=TreeConfig(top_k=2, depth=3, total_tokens=6, schedule="hybrid", adaptive=False))
    return json.loads(json.dumps(SpecDecoder(tiny_target, proposer).generate("Hello", cfg)))


@pytest.fixture(scope="module")
def viewer() -> gr.Blocks:
    return build_demo(None)


def handler(demo: gr.Blocks, name: str) -> Any:
    return next(fn for fn in demo.fns.values() if fn.name == name)


def call(fn: Any, session: Session, files: list[str] | None = None, step: int = 0) -> tuple[Any, ...]:
    """``fn`` as gradio would call it: the session, the uploaded files, the step slider; other inputs at their
    initial values."""
    args = []
    for block in fn.inputs:
        if isinstance(block, gr.State):
            args.append(session)
        elif isinstance(block, gr.File):
            args.append(files)
        elif getattr(block, "elem_id", None) == "step":
            args.append(step)
        else:
            args.append(block.value)
    out = fn.fn(*args)
    return out if isinstance(out, tuple) else tuple(out)


def replay(demo: gr.Blocks, path: Path, steps: set[int] | None = None) -> str:
    """Upload ``path`` and, when it loads, render everything the app shows of it (of the steps numbered ``steps``
    only, when given: the first step and the statistics are rendered anyway); the upload's status line."""
    load = handler(demo, "load")
    out = call(load, Session(), files=[str(path)])
    status = out[[getattr(b, "elem_id", None) for b in load.outputs].index("load-status")]
    session = out[[isinstance(b, gr.State) for b in load.outputs].index(True)]
    if status.startswith("⚠️"):
        return status
    call(handler(demo, "finish"), session)  # renders step 1
    for records in session.traces.values():
        numbers = {r["step"] for r in records if r["type"] == "step"}
        for step in sorted((numbers if steps is None else numbers & steps) - {1}):
            call(handler(demo, "render_step"), session, step=step)
    return status


def spec_index(trace: list[Record]) -> int:
    return next(i for i, r in enumerate(trace) if r.get("kind") == "spec" and r["nodes"])


def mutations(trace: list[Record]):
    """(description, mutated trace): every field of the header, of a speculative step, of its first emitted token
    and of its root and first drafted node, in turn replaced by each bad value or deleted."""
    spec = spec_index(trace)
    places = {"header": lambda t: t[0], "step": lambda t: t[spec], "emitted": lambda t: t[spec]["emitted"][0],
              "root": lambda t: t[spec]["nodes"][0], "node": lambda t: t[spec]["nodes"][1]}
    for place, get in places.items():
        for field in list(get(trace)):
            if field == "type":
                continue
            for value in [*BAD_VALUES, "<deleted>"]:
                mutated = copy.deepcopy(trace)
                if value == "<deleted>":
                    del get(mutated)[field]
                else:
                    get(mutated)[field] = value
                yield f"{place}.{field} = {value!r}", mutated


def test_the_real_trace_replays(trace, viewer, tmp_path):
    write_jsonl(trace, tmp_path / "t.jsonl")
    assert replay(viewer, tmp_path / "t.jsonl").startswith("Loaded")


def test_no_trace_content_crashes_the_replay(trace, viewer, tmp_path):
    path = tmp_path / "t.jsonl"
    crashed, refused = [], 0
    mutated_step = {trace[spec_index(trace)]["step"]}  # where the mutations are; rendering the others is slow
    for what, mutated in mutations(trace):
        path.write_text("".join(json.dumps(r) + "\n" for r in mutated))
        try:
            refused += replay(viewer, path, mutated_step).startswith("⚠️")
        except Exception as err:  # noqa: BLE001 - collected, so one run lists every gap
            crashed.append(f"{what}: {type(err).__name__}: {err}")
    assert not crashed, "\n".join(crashed)
    assert refused > 100  # most bad values are refused with a message, not just survived


@pytest.mark.parametrize("content, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"type": "header", "schema": "jakiro-trace", "version": 1, "x": NaN}', "NaN is not a number"),
    ('{"type": "header", "schema": "jakiro-trace", "version": 1, "x": ' + "9" * 5000 + "}", "not valid trace JSON"),
])
def test_malformed_files_get_a_message_in_the_app(viewer, tmp_path, content, message):
    path = tmp_path / "t.jsonl"
    path.write_text(content + "\n")
    status = replay(viewer, path)
    assert status.startswith("⚠️") and message in status
