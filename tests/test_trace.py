import json
import re

import pytest

from tests.helpers import NO_FALLBACK

from core.config import EngineConfig, TreeConfig
from core.engine import SpecDecoder
from core.registry import attach, random_drafter
from core.trace import SCHEMA_VERSION, TraceError, header_record, read_jsonl, summarize, write_jsonl


def _step(step, kind, emitted_sources, accepted_len, nodes=(), draft=1.0, verify=2.0, depth=3):
    return {
        "type": "step", "step": step, "kind": kind,
        "emitted": [{"token_id": 10 + i, "text": "x", "source": s, "node": -1} for i, s in enumerate(emitted_sources)],
        "accepted_len": accepted_len, "draft_ms": draft, "verify_ms": verify, "commit_ms": 0.5,
        "drafter_forwards": 2 if kind == "spec" else 0, "tree_nodes": 6 if kind == "spec" else 0,
        "candidates": 9, "tree_depth": depth if kind == "spec" else 0, "new_tokens": 0, "target_forwards": 0,
        "tau": 0.0, "nodes": list(nodes), "accepted_path": [], "finished": False, "stop_reason": "",
    }


def _node(i, depth, expert, kept, accepted, branch="moe"):
    return {"id": i, "parent": 0 if depth else -1, "depth": depth, "token_id": i, "token": "t", "logp": -1.0,
            "score": -1.0, "kept": kept, "branch": branch, "expert": expert, "routing": [0.5, 0.5, 0.5, 0.5],
            "target_prob": 0.5, "accepted": accepted}


HAND = [
    header_record(method="jakiro"),
    _step(0, "prefill", ["target"], 0, verify=10.0, draft=0.0),
    _step(1, "spec", ["expert 0", "expert 1", "bonus"], 2,
          nodes=[_node(0, 0, -1, True, True, "root"), _node(1, 1, 0, True, True), _node(2, 1, 1, True, False),
                 _node(3, 2, 1, True, True), _node(4, 2, 0, False, False)]),
    _step(2, "spec", ["bonus"], 0, nodes=[_node(0, 0, -1, True, True, "root"), _node(1, 1, 1, True, False)]),
    _step(3, "spec", ["expert 0", "expert 0", "contrastive", "bonus"], 3),
]


def test_summary_on_hand_checked_trace():
    s = summarize(HAND)
    assert s.new_tokens == 1 + 3 + 1 + 4
    assert s.target_forwards == 4
    assert s.tau == pytest.approx(9 / 4)
    assert s.spec_steps == 3
    assert s.mean_accepted == pytest.approx(5 / 3)
    assert s.accept_length_hist == {0: 1, 2: 1, 3: 1}
    # depth 1: 2 of 3 cycles accepted; depth 2: 2 of 2; depth 3: 1 of 2
    assert s.acceptance_by_depth == pytest.approx([2 / 3, 1.0, 0.5])
    assert s.expert_usage == {"expert 0": {1: 1}, "expert 1": {1: 2, 2: 1}}
    assert s.expert_acceptance == {"expert 0": 1.0, "expert 1": pytest.approx(1 / 3)}
    assert s.decode_s == pytest.approx((10 + 3 * 3 + 4 * 0.5) / 1e3)
    assert s.draft_ms_per_step == pytest.approx(1.0)


def test_expert_topk_overlap_on_a_hand_checked_trace():
    assert summarize(HAND).expert_topk_overlap is None  # written before the field existed: missing -> None
    assert summarize(HAND).expert_topk_overlap_by_depth == {}
    root, child, other = _node(0, 0, -1, True, True, "root"), _node(1, 1, 0, True, True), _node(2, 1, 1, True, False)
    root["expert_topk"] = [[1, 2, 3], [3, 4, 5]]  # 1 of 3 shared, children at depth 1
    child["expert_topk"] = [[1, 2, 3], [3, 1, 2]]  # all shared (order does not matter)
    other["expert_topk"] = [[1, 2, 3], [4, 5, 6]]  # none shared
    trace = [header_record(method="jakiro"), _step(1, "spec", ["bonus"], 0, nodes=[root, child, other])]
    s = summarize(trace)
    assert s.expert_topk_overlap == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert s.expert_topk_overlap_by_depth == pytest.approx({1: 1 / 3, 2: 0.5})


def test_round_trip_real_trace(tiny_target, tmp_path):
    proposer = attach(random_drafter(tiny_target, "moe", seed=1), tiny_target, "jakiro")
    cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=12, tree=TreeConfig(top_k=3, depth=3, total_tokens=8, schedule="hybrid"))
    records = SpecDecoder(tiny_target, proposer).generate("Hello", cfg)
    path = tmp_path / "t.jsonl"
    write_jsonl(records, path)
    back = read_jsonl(path)
    assert back == json.loads(json.dumps(records))
    assert summarize(back) == summarize(records)
    head = back[0]
    assert head["engine"]["tree"]["schedule"] == "hybrid" and head["drafter"]["ffn"] == "moe"
    assert {"torch", "transformers", "python"} <= set(head["versions"])
    spec = [r for r in back if r["type"] == "step" and r["kind"] == "spec"]
    assert spec and all(r["nodes"][0]["branch"] == "root" for r in spec)
    assert any(n["branch"] == "contrastive" for r in spec for n in r["nodes"])
    assert all(r["nodes"][0]["expert_topk"] for r in spec)  # an MoE drafter records its experts' top-k
    assert all(len(r["emitted"]) == r["accepted_len"] + 1 for r in spec[:-1])


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "starts with a header"),
        ("{not json\n", "not valid JSON"),
        ('{"type": "step"}\n', "starts with a header"),
        ('{"type": "header", "schema": "jakiro-trace", "version": 999}\n', "not supported"),
        ('{"type": "header", "schema": "other", "version": 1}\n', "not supported"),
        (json.dumps(header_record()) + '\n{"type": "step", "step": 1}\n', "lacks"),
        ("[1, 2]\n", "not a trace record"),
        ("[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
        ('{"type": "header", "schema": "jakiro-trace", "version": 1, "x": NaN}\n', "NaN is not a number"),
        ('{"type": "header", "x": ' + "9" * 5000 + "}\n", "not valid trace JSON"),
    ],
)
def test_bad_trace_files(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TraceError, match=message):
        read_jsonl(path)


def _hand_trace_with(change) -> list[dict]:
    """HAND as JSON-ready records, with ``change`` applied to a copy (it mutates the records it is given)."""
    records = json.loads(json.dumps(HAND))
    change(records)
    return records


@pytest.mark.parametrize("change, message", [
    (lambda t: t[2].update(emitted=5), "line 3: emitted must be a list of objects, got 5"),
    (lambda t: t[2]["emitted"][0].update(text=None), "line 3, emitted token 0: text must be a string, got null"),
    (lambda t: t[2].update(accepted_len="2"), 'accepted_len must be an integer in 0..1024, got "2"'),
    (lambda t: t[2].update(accepted_len=10**9), "accepted_len must be an integer in 0..1024"),
    (lambda t: t[2].update(draft_ms=-1.0), "draft_ms must be a number >= 0"),
    (lambda t: t[2].update(kind="magic"), "kind must be one of prefill, spec, plain"),
    (lambda t: t[2].pop("tree_nodes"), "a speculative step lacks tree_nodes"),
    (lambda t: t[2].pop("accepted_path"), "lacks accepted_path"),
    (lambda t: t[2]["nodes"][1].update(routing=["a"]), "line 3, node 1: routing must be a list of numbers"),
    (lambda t: t[2]["nodes"][1].update(score=1e9), "score must be a log-probability"),
    (lambda t: t[2]["nodes"][1].update(expert_topk=[[1], []]), "expert_topk must be null or two non-empty lists"),
    (lambda t: t[2]["nodes"][1].update(kept=1), "kept must be true or false, got 1"),
    (lambda t: t[2]["nodes"][1].update(token_id=2**60), "token_id must be a token id"),
    (lambda t: t[2]["nodes"][2].update(id=7), "node 2: id must be 2"),
    (lambda t: t[2]["nodes"][3].update(parent=3), "node 3: parent must be -1 for node 0 and an earlier node"),
    (lambda t: t[2]["nodes"][1].update(parent=-1), "node 1: parent must be -1 for node 0 and an earlier node"),
    (lambda t: t[2]["nodes"][0].update(kept=False), "node 1 was verified but its parent 0 was not"),
    (lambda t: t[0].update(stop_token_ids="2"), "the header: stop_token_ids must be a list of integers"),
    (lambda t: t[0].update(drafter=[]), "the header: drafter must be an object or null"),
    (lambda t: t.append(header_record()), "line 6 is a second header"),
])
def test_record_content_is_validated(tmp_path, change, message):
    path = tmp_path / "t.jsonl"
    write_jsonl(_hand_trace_with(change), path)
    with pytest.raises(TraceError, match=re.escape(message)):
        read_jsonl(path)


def test_hand_trace_is_valid(tmp_path):
    write_jsonl(HAND, tmp_path / "t.jsonl")
    assert read_jsonl(tmp_path / "t.jsonl") == HAND


def test_huge_and_binary_trace_files(tmp_path, monkeypatch):
    import core.trace as trace

    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(header_record()) + "\n" + " " * 2048)
    monkeypatch.setattr(trace, "MAX_TRACE_BYTES", 1024)
    with pytest.raises(TraceError, match="limit"):
        read_jsonl(path)
    monkeypatch.undo()
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TraceError, match="UTF-8"):
        read_jsonl(path)


def test_schema_version_in_header():
    assert header_record()["version"] == SCHEMA_VERSION
