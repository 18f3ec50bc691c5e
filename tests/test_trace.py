import json

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
    ],
)
def test_bad_trace_files(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TraceError, match=message):
        read_jsonl(path)


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
