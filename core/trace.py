"""Trace records: what happened in every decoding step, as plain JSON-ready data.

A trace is a header record followed by one record per target forward ("prefill", then
"spec" cycles or "plain" steps). Records hold only int/float/str/bool/None/list/dict, so they
cross process, API and file boundaries unchanged; ``summarize`` computes every metric the UI
and the benchmarks show from them, and nothing else does.

Vocabulary: tau = tokens emitted per target forward, counting the bonus token (plain = 1.00).
Experts' top-k overlap = |top-k(E0) ∩ top-k(E1)| / k at an expanded node of an MoE drafter, where
top-k(Ei) are the k = tree top_k tokens expert i alone ranks highest there (1.0: both experts would
propose the same children; 0.0: disjoint proposals).

Compatibility: fields added after version 1 are optional. A reader treats a missing one as None
(``NodeRecord.expert_topk`` and ``expert_topk_text`` are absent from older traces).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from core.checks import (
    AMOUNT, COUNT, FLAG, INTS, NUMBERS, OBJECT_OR_NULL, OBJECTS, TEXT, TEXT_OR_NULL, Check, Fields, check_fields,
    is_int, is_number, list_of, or_null, refuse_constant,
)
from core.policy import SWITCH_NOTE

SCHEMA = "jakiro-trace"
SCHEMA_VERSION = 1
MAX_TRACE_BYTES = 64 * 1024 * 1024
MAX_TREE_DEPTH = 1024  # a loaded trace's depths and accept lengths are bounded: figures have one bar per depth


class TraceError(ValueError):
    """A trace file is malformed, too large, of another schema version, or holds values of the wrong type."""


@dataclass
class NodeRecord:
    id: int  # index in the cycle's candidate tree (0 = root)
    parent: int  # -1 for the root
    depth: int
    token_id: int
    token: str
    logp: float  # draft log-prob of the token given the parent
    score: float  # cumulative draft log-prob from the root
    kept: bool  # survived the rerank and was verified
    branch: str  # root | dense | moe | experts | contrastive
    expert: int  # MoE branch: the expert whose own distribution gives the token the higher probability (traces
    # before session 17: the gate's larger weight); experts/contrastive branch: the expert used; -1 when dense
    routing: list[float]  # (w0, w1, v0, v1) of the gate that produced the node's distribution
    target_prob: float | None  # target's probability of the token at its parent (kept nodes only)
    accepted: bool
    # [2][k] target token ids each expert alone ranks highest for this node's children, best first; only for
    # nodes an MoE drafter expanded from their own output (None otherwise, and in older traces)
    expert_topk: list[list[int]] | None = None
    expert_topk_text: list[list[str]] | None = None  # [2][k] the same tokens as text


@dataclass
class EmittedToken:
    token_id: int
    text: str
    source: str  # "expert 0" | "expert 1" | "draft" | "contrastive" | "bonus" | "target"
    node: int  # tree node id for accepted drafts, -1 for the target's own token


@dataclass
class StepRecord:
    step: int
    kind: str  # "prefill" | "spec" | "plain"
    emitted: list[EmittedToken]
    accepted_len: int  # draft tokens accepted this step (emitted = accepted_len + 1 unless truncated)
    draft_ms: float
    verify_ms: float
    commit_ms: float
    drafter_forwards: int
    tree_nodes: int  # drafted nodes verified (root excluded)
    candidates: int  # drafted nodes scored (root excluded)
    tree_depth: int  # deepest verified node
    new_tokens: int  # running total
    target_forwards: int  # running total
    tau: float  # running tokens per target forward
    nodes: list[NodeRecord] = field(default_factory=list)
    accepted_path: list[int] = field(default_factory=list)  # node ids, root first
    finished: bool = False
    stop_reason: str = ""  # "" while running; "stop_token" | "max_new_tokens" | "context"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": "step", **asdict(self)}


def header_record(**fields: Any) -> dict[str, Any]:
    """The first line of a trace: schema, models, configs, device and versions."""
    return {"type": "header", "schema": SCHEMA, "version": SCHEMA_VERSION, **fields}


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a trace file written by ``write_jsonl``."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_TRACE_BYTES:
        raise TraceError(f"trace file is {size / 1e6:.1f} MB; the limit is {MAX_TRACE_BYTES / 1e6:.0f} MB")
    with open(path, encoding="utf-8", errors="strict") as fh:
        try:
            return parse_records(fh)
        except UnicodeDecodeError as err:
            raise TraceError(f"trace file is not UTF-8 text: {err}") from err


def parse_records(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Parse and validate JSONL trace lines: every field that ``summarize`` and the app read has its recorded
    type, and every draft tree is a tree (so nothing computed from a loaded trace can fail); raises
    ``TraceError`` naming the line and field otherwise."""
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _parse_line(line, number)
        if not isinstance(record, dict) or record.get("type") not in ("header", "step"):
            raise TraceError(f"line {number} is not a trace record (needs a 'type' of 'header' or 'step')")
        records.append((number, record))
    if not records or records[0][1]["type"] != "header":
        raise TraceError("a trace starts with a header record")
    head = records[0][1]
    if head.get("schema") != SCHEMA or head.get("version") != SCHEMA_VERSION:
        raise TraceError(
            f"trace schema {head.get('schema')!r} version {head.get('version')!r} is not supported "
            f"(this build reads {SCHEMA!r} version {SCHEMA_VERSION})"
        )
    _check_fields(head, HEADER_FIELDS, f"line {records[0][0]}: the header")
    for number, record in records[1:]:
        if record["type"] != "step":
            raise TraceError(f"line {number} is a second header; a trace has one, first")
        _check_step(record, f"line {number}")
    return [record for _, record in records]


def _parse_line(line: str, number: int) -> Any:
    try:
        return json.loads(line, parse_constant=refuse_constant)
    except json.JSONDecodeError as err:
        raise TraceError(f"line {number} is not valid JSON: {err.msg}") from err
    except RecursionError:
        raise TraceError(f"line {number} is nested too deeply to be a trace record") from None
    except ValueError as err:  # NaN/Infinity, integers of thousands of digits
        raise TraceError(f"line {number} is not valid trace JSON: {err}") from None


# --- record content ----------------------------------------------------------------------------


TOKEN_ID: Check = ("a token id (an integer >= 0)", COUNT[1])
INDEX: Check = ("an integer >= -1", lambda v: is_int(v) and v >= -1)
DEPTH: Check = (f"an integer in 0..{MAX_TREE_DEPTH}", lambda v: is_int(v) and 0 <= v <= MAX_TREE_DEPTH)
PROB_OR_NULL: Check = ("a probability or null", or_null(lambda v: is_number(v) and 0 <= v <= 1 + 1e-3))
LOGP: Check = ("a log-probability (a number <= 0)", lambda v: is_number(v) and v <= 1e-3)  # rounding allowed
STEP_KIND: Check = ("one of prefill, spec, plain", lambda v: v in ("prefill", "spec", "plain"))
EXPERT_TOPK: Check = ("null or two non-empty lists of integers", or_null(
    lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(x, list) and x and INTS[1](x) for x in v)))
EXPERT_TOPK_TEXT: Check = ("null or lists of strings", or_null(list_of(list_of(lambda v: isinstance(v, str)))))

HEADER_FIELDS: Fields = {"method": (TEXT_OR_NULL, False), "prompt": (TEXT_OR_NULL, False),
                         "drafter": (OBJECT_OR_NULL, False), "stop_token_ids": (INTS, False)}
STEP_FIELDS: Fields = {
    "step": (COUNT, True), "kind": (STEP_KIND, True), "emitted": (OBJECTS, True), "accepted_len": (DEPTH, True),
    "draft_ms": (AMOUNT, True), "verify_ms": (AMOUNT, True), "commit_ms": (AMOUNT, False),
    "drafter_forwards": (COUNT, False), "tree_nodes": (COUNT, False), "candidates": (COUNT, False),
    "tree_depth": (DEPTH, False), "new_tokens": (COUNT, False), "target_forwards": (COUNT, False),
    "tau": (AMOUNT, False), "nodes": (OBJECTS, False), "accepted_path": (INTS, False), "finished": (FLAG, False),
    "stop_reason": (TEXT, False), "note": (TEXT, False),
}
SPEC_FIELDS = ("drafter_forwards", "tree_nodes", "candidates", "tau")  # what the view of a speculative step reads
EMITTED_FIELDS: Fields = {"token_id": (TOKEN_ID, True), "text": (TEXT, True), "source": (TEXT, True),
                          "node": (INDEX, True)}
NODE_FIELDS: Fields = {
    "id": (COUNT, True), "parent": (INDEX, True), "depth": (DEPTH, True), "token_id": (TOKEN_ID, True),
    "token": (TEXT, True), "logp": (LOGP, True), "score": (LOGP, True), "kept": (FLAG, True),
    "branch": (TEXT, True), "expert": (INDEX, True), "routing": (NUMBERS, True),
    "target_prob": (PROB_OR_NULL, True), "accepted": (FLAG, True),
    "expert_topk": (EXPERT_TOPK, False), "expert_topk_text": (EXPERT_TOPK_TEXT, False),
}


def _check_fields(record: dict[str, Any], fields: Fields, where: str) -> None:
    check_fields(record, fields, where, TraceError)


def _check_step(record: dict[str, Any], where: str) -> None:
    _check_fields(record, STEP_FIELDS, where)
    for i, token in enumerate(record["emitted"]):
        _check_fields(token, EMITTED_FIELDS, f"{where}, emitted token {i}")
    if record["kind"] == "spec":
        missing = [k for k in SPEC_FIELDS if k not in record]
        if missing:
            raise TraceError(f"{where}: a speculative step lacks {', '.join(missing)}")
    nodes = record.get("nodes", [])
    for i, node in enumerate(nodes):
        _check_fields(node, NODE_FIELDS, f"{where}, node {i}")
    _check_tree(nodes, where)
    if nodes and "accepted_path" not in record:
        raise TraceError(f"{where}: a step with tree nodes lacks accepted_path")


def _check_tree(nodes: list[dict[str, Any]], where: str) -> None:
    """Node i has id i; node 0 is the root (parent -1); every other node's parent comes before it; a verified
    (kept) node's parent was verified too. So the nodes form one tree whose verified part is ancestor-closed."""
    for i, node in enumerate(nodes):
        if node["id"] != i:
            raise TraceError(f"{where}, node {i}: id must be {i} (nodes are listed in id order), got {node['id']}")
        if (node["parent"] == -1) != (i == 0) or node["parent"] >= i:
            raise TraceError(f"{where}, node {i}: parent must be -1 for node 0 and an earlier node otherwise, "
                             f"got {node['parent']}")
        if i and node["kept"] and not nodes[node["parent"]]["kept"]:
            raise TraceError(f"{where}, node {i} was verified but its parent {node['parent']} was not")


def steps_of(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (r for r in records if r.get("type") == "step")


@dataclass
class Summary:
    new_tokens: int
    target_forwards: int
    tau: float  # new_tokens / target_forwards (bonus included; plain decoding = 1.00)
    spec_steps: int
    mean_accepted: float  # mean draft tokens accepted per speculative cycle
    decode_s: float  # draft + verify + commit time of every step, prefill included
    tokens_per_s: float
    draft_ms_per_step: float
    verify_ms_per_step: float
    commit_ms_per_step: float
    drafter_forwards_per_step: float
    tree_nodes_per_step: float
    acceptance_by_depth: list[float]  # alpha_d = P(depth d accepted | depth d-1 accepted)
    accept_length_hist: dict[int, int]  # accepted draft tokens per spec cycle -> count
    expert_usage: dict[str, dict[int, int]]  # source -> depth -> verified nodes
    expert_acceptance: dict[str, float]  # source -> accepted / verified
    expert_topk_overlap: float | None  # mean experts' top-k overlap over expanded nodes; None without records
    expert_topk_overlap_by_depth: dict[int, float]  # depth of the proposed children -> mean overlap
    text_tokens: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def node_source(branch: str, expert: int) -> str:
    """Provenance label of a drafted node (the UI colours tokens by it)."""
    if branch in ("contrastive", "lookup"):
        return branch
    if expert >= 0:
        return f"expert {expert}"
    return "draft"


def summarize(records: Iterable[dict[str, Any]]) -> Summary:
    """Every aggregate metric of a trace."""
    steps = list(steps_of(records))
    spec = [s for s in steps if s["kind"] == "spec"]
    new_tokens = sum(len(s["emitted"]) for s in steps)
    forwards = len(steps)
    decode_s = sum(s["draft_ms"] + s["verify_ms"] + s.get("commit_ms", 0.0) for s in steps) / 1e3
    hist = Counter(int(s["accepted_len"]) for s in spec)
    max_depth = max((_tree_depth(s) for s in spec), default=0)
    alphas = []
    for d in range(1, max_depth + 1):
        reached = sum(1 for s in spec if s["accepted_len"] >= d - 1 and _tree_depth(s) >= d)
        accepted = sum(1 for s in spec if s["accepted_len"] >= d)
        alphas.append(accepted / reached if reached else 0.0)
    usage: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    verified: Counter[str] = Counter()
    accepted_by: Counter[str] = Counter()
    for s in spec:
        for node in s.get("nodes", []):
            if node["parent"] < 0 or not node["kept"]:
                continue
            source = node_source(node["branch"], node["expert"])
            usage[source][node["depth"]] += 1
            verified[source] += 1
            accepted_by[source] += int(node["accepted"])
    n_spec = max(1, len(spec))
    overlap, overlap_by_depth = expert_topk_overlap(spec)
    return Summary(
        new_tokens=new_tokens,
        target_forwards=forwards,
        tau=new_tokens / forwards if forwards else 0.0,
        spec_steps=len(spec),
        mean_accepted=sum(s["accepted_len"] for s in spec) / n_spec,
        decode_s=decode_s,
        tokens_per_s=new_tokens / decode_s if decode_s > 0 else 0.0,
        draft_ms_per_step=_mean(s["draft_ms"] for s in steps if s["kind"] != "prefill"),
        verify_ms_per_step=_mean(s["verify_ms"] for s in steps if s["kind"] != "prefill"),
        commit_ms_per_step=_mean(s.get("commit_ms", 0.0) for s in steps if s["kind"] != "prefill"),
        drafter_forwards_per_step=sum(s["drafter_forwards"] for s in spec) / n_spec,
        tree_nodes_per_step=sum(s["tree_nodes"] for s in spec) / n_spec,
        acceptance_by_depth=alphas,
        accept_length_hist=dict(sorted(hist.items())),
        expert_usage={k: dict(sorted(v.items())) for k, v in sorted(usage.items())},
        expert_acceptance={k: accepted_by[k] / verified[k] for k in sorted(verified)},
        expert_topk_overlap=overlap,
        expert_topk_overlap_by_depth=overlap_by_depth,
        text_tokens=[t["token_id"] for s in steps for t in s["emitted"]],
    )


def topk_overlap(expert_topk: list[list[int]]) -> float:
    """|top-k(E0) ∩ top-k(E1)| / k for one node's [2][k] expert top-k token ids."""
    first, second = expert_topk
    return len(set(first) & set(second)) / len(first)


def expert_topk_overlap(records: Iterable[dict[str, Any]]) -> tuple[float | None, dict[int, float]]:
    """Mean experts' top-k overlap over every expanded node of the speculative steps, and the same mean by
    the depth of the proposed children (the expanded node's depth + 1). None and {} when nothing was recorded
    (dense drafters, traces without tree details, older traces)."""
    by_depth: dict[int, list[float]] = defaultdict(list)
    for step in steps_of(records):
        if step["kind"] != "spec":
            continue
        for node in step.get("nodes", []):
            if node.get("expert_topk"):
                by_depth[node["depth"] + 1].append(topk_overlap(node["expert_topk"]))
    values = [v for vs in by_depth.values() for v in vs]
    return (_mean(values) if values else None), {d: _mean(by_depth[d]) for d in sorted(by_depth)}


def _tree_depth(step: dict[str, Any]) -> int:
    return int(step.get("tree_depth", 0))


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def fallback_switches(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Run fields from one drafter generation's records: its plain steps, and each switch to plain decoding (the
    new tokens before it and the policy's reason), so that a run shows where its fallback fired."""
    steps = [r for r in records if r.get("type") == "step" and r.get("kind") in ("spec", "plain")]
    switches, before = [], 0
    for record in steps:
        if record["kind"] == "plain" and record.get("note", "").startswith(SWITCH_NOTE):
            switches.append({"after_tokens": before, "why": record["note"]})
        before = record["new_tokens"]
    return {"plain_steps": sum(r["kind"] == "plain" for r in steps), "fallbacks": tuple(switches)}
