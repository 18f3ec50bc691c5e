"""The app's pure views and session helpers, on traces recorded from a tiny random target."""
from __future__ import annotations

import copy
import json

import networkx as nx
import pandas as pd
import pytest

from app.examples import MAX_LABEL_CHARS, load_examples
from app.views import stats, style, text, tree
from app.session import (
    Session, Settings, delete_session, engine_config, engines_for, export_files, load_session, run_all,
)
from core import registry
from core.config import ConfigError
from core.engine import SpecDecoder
from core.target import PromptError
from core.trace import TraceError, read_jsonl, summarize
from tests.helpers import OracleProposer, make_tiny_target, tiny_engines

SETTINGS = Settings(max_new_tokens=10, tree_top_k=3, depth=3, total_tokens=8, adaptive=False)  # random drafters: full trees to draw


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    return tiny_engines(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def session(engines):
    session = Session()
    assert list(run_all(engines, "Hello there", SETTINGS, session, min_interval_s=0.0))
    return session


@pytest.fixture(scope="module")
def oracle_trace(engines):
    """A trace whose trees are fully accepted (the oracle proposes the target's own tokens)."""
    decoder = SpecDecoder(engines.target, OracleProposer(engines.target), "oracle")
    return decoder.generate("Hello there", engine_config(SETTINGS, moe=False))


def spec_step(records):
    return next(s for s in records if s.get("kind") == "spec")


def test_run_all_records_every_method_in_order(session):
    assert list(session.traces) == ["jakiro", "eagle", "none"]
    for name, records in session.traces.items():
        assert records[0]["type"] == "header" and records[0]["method"] == name
        assert summarize(records).new_tokens == SETTINGS.max_new_tokens
    assert session.texts["jakiro"] == session.texts["eagle"] == session.texts["none"]  # greedy is lossless


def test_highlighted_tokens_follow_the_emitted_records(session):
    records = session.traces["jakiro"]
    pairs = text.highlighted_tokens(records)
    steps = text.token_steps(records)
    assert len(pairs) == len(steps) == SETTINGS.max_new_tokens
    assert {label for _, label in pairs} <= set(style.SOURCE_COLORS)
    assert pairs[0][1] == "target" and steps[0] == 0  # the prefill emits the target's own token
    assert steps == sorted(steps)
    assert all(shown for shown, _ in pairs)
    assert text.display_text("\n") == "↵\n" and text.display_text("") == "∅"


def test_counters_and_api_summary(session):
    summaries = session.summaries()
    md = text.counters_markdown(summaries)
    assert "Jakiro (MoE)" in md and "plain decoding" in md and "τ" in md and "UI time excluded" in md
    summary = text.api_summary(session.texts, summaries)
    assert set(summary) == {"jakiro", "eagle", "none"}
    for name, entry in summary.items():
        assert {"text", "tau", "tokens_per_s", "speedup"} <= set(entry)
        assert entry["tokens_per_s"] > 0
    assert summary["none"]["speedup"] == 1.0
    ratio = summaries["jakiro"].tokens_per_s / summaries["none"].tokens_per_s
    assert summary["jakiro"]["speedup"] == pytest.approx(ratio, rel=1e-3)
    running = text.counters_markdown({"jakiro": summaries["jakiro"], "none": None}, running=("jakiro",))
    assert "after plain run" in running and "⏳" in running


def test_tidy_layout_has_no_crossings_and_centres_parents(session):
    for name in ("jakiro", "eagle"):
        record = spec_step(session.traces[name])
        graph = tree.tree_graph(record["nodes"])
        pos = tree.tidy_layout(graph)
        assert set(pos) == set(graph.nodes)
        leaves = [n for n in graph if graph.out_degree(n) == 0]
        assert len({pos[n][1] for n in leaves}) == len(leaves)  # one row per leaf
        for node in graph:
            assert pos[node][0] == graph.nodes[node]["depth"]
            kids = sorted(graph.successors(node), key=lambda c: -pos[c][1])
            if kids:
                assert pos[node][1] == pytest.approx((pos[kids[0]][1] + pos[kids[-1]][1]) / 2)
        # siblings' subtrees occupy disjoint row ranges, so no two edges cross
        for node in graph:
            subtrees = [{k} | nx.descendants(graph, k) for k in graph.successors(node)]
            spans = sorted((min(pos[d][1] for d in sub), max(pos[d][1] for d in sub)) for sub in subtrees)
            assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))


def test_tree_figure_traces(session, oracle_trace):
    record = spec_step(session.traces["jakiro"])
    fig = tree.tree_figure(record)
    names = [t.name for t in fig.data]
    assert names[:2] == ["edges", "accepted path"]
    assert "root" in names and "expert 0" in names or "expert 1" in names
    nodes = sum(len(t.x) for t in fig.data[2:])
    assert nodes == len(record["nodes"])
    assert None in fig.data[0].x  # one edge trace, None-separated
    assert fig.layout.height >= 260
    faded = [c for t in fig.data[2:] for c in t.textfont.color if c == style.FADED]
    assert len(faded) == sum(not n["kept"] for n in record["nodes"])
    hover = " ".join(h for t in fig.data[2:] for h in t.hovertext)
    assert "draft prob" in hover and "routing w0" in hover and "target prob" in hover
    # the oracle's trees are accepted along the best chain: the path trace is drawn
    oracle = spec_step(oracle_trace)
    assert oracle["accepted_len"] == SETTINGS.depth
    path = tree.tree_figure(oracle).data[1]
    assert sum(x is None for x in path.x) == len(oracle["accepted_path"]) - 1


def test_expert_topk_in_hover_table_and_diversity_figure(session):
    jakiro, eagle = session.traces["jakiro"], session.traces["eagle"]
    record = spec_step(jakiro)
    root = record["nodes"][0]
    k = SETTINGS.tree_top_k
    assert [len(ids) for ids in root["expert_topk"]] == [k, k]
    hover = " ".join(h for t in tree.tree_figure(record).data[2:] for h in t.hovertext)
    assert f"expert 0 top-{k}:" in hover and f"expert 1 top-{k}:" in hover and f"experts' top-{k} overlap" in hover
    assert "top-" not in " ".join(h for t in tree.tree_figure(spec_step(eagle)).data[2:] for h in t.hovertext)
    # the figure's line is the summary's overlap by depth, with its definition written below the plot
    fig = stats.sibling_diversity_figure(session.traces)
    lines = [t for t in fig.data if t.type == "scatter"]
    assert [t.name for t in lines] == ["Jakiro (MoE) · experts' top-k overlap"]
    by_depth = session.summaries()["jakiro"].expert_topk_overlap_by_depth
    assert list(lines[0].x) == list(by_depth) and list(lines[0].y) == pytest.approx(list(by_depth.values()))
    assert "|top-k(E0) ∩ top-k(E1)| ÷ k" in fig.layout.annotations[0].text
    assert list(by_depth) == list(range(1, SETTINGS.depth))  # hybrid: the last layer is contrastive
    table = text.summary_table(session.summaries()).set_index("method")
    assert table.loc["jakiro", "expert_topk_overlap"] == pytest.approx(summarize(jakiro).expert_topk_overlap)
    assert pd.isna(table.loc["eagle", "expert_topk_overlap"])
    assert table.loc["eagle", "expert_topk_overlap_by_depth"] == ""
    # a trace recorded before the field existed draws bars only, and its hover has no top-k lines
    old = copy.deepcopy(jakiro)
    for step in text.spec_steps(old):
        for node in step["nodes"]:
            del node["expert_topk"], node["expert_topk_text"]
    assert not [t for t in stats.sibling_diversity_figure({"jakiro": old}).data if t.type == "scatter"]
    assert "top-" not in " ".join(h for t in tree.tree_figure(spec_step(old)).data[2:] for h in t.hovertext)


def test_tree_figure_escapes_tokens(session):
    record = copy.deepcopy(spec_step(session.traces["eagle"]))
    record["nodes"][1]["token"] = "<s>"
    fig = tree.tree_figure(record)
    texts = [x for t in fig.data[2:] for x in t.text]
    hover = " ".join(h for t in fig.data[2:] for h in t.hovertext)
    assert "&lt;s&gt;" in texts and "<s>" not in texts
    assert "&lt;s&gt;" in hover and "<s>" not in hover
    assert text.figure_token(" a very long token indeed") == "␣a␣very␣lon…"


def test_tree_and_mask_for_steps_without_a_tree(session):
    prefill = text.step_at(session.traces["jakiro"], 0)
    for fig in (tree.tree_figure(prefill), tree.mask_figure(prefill), tree.tree_figure(None)):
        assert fig.layout.annotations and not fig.data
    assert "no step 999" in text.step_markdown("jakiro", session.traces["jakiro"], 999)
    assert "prefill" in text.step_markdown("jakiro", session.traces["jakiro"], 0)
    assert "accepted" in text.step_markdown("jakiro", session.traces["jakiro"], 1)


def test_mask_is_the_ancestor_relation_of_kept_nodes(session):
    record = spec_step(session.traces["jakiro"])
    kept, mask = tree.ancestor_rows(record["nodes"])
    assert kept[0] == 0 and len(kept) == record["tree_nodes"] + 1
    parent = {n["id"]: n["parent"] for n in record["nodes"]}
    for i, node in enumerate(kept):
        assert mask[i][i] == 1 and mask[i][0] == 1
        assert sum(mask[i]) == next(n["depth"] for n in record["nodes"] if n["id"] == node) + 1
        if node:
            assert mask[i][kept.index(parent[node])] == 1
    fig = tree.mask_figure(record)
    assert len(fig.data[0].z) == len(kept)


def test_statistics_figures(session):
    summaries = session.summaries()
    traces = session.traces
    figures = [
        stats.acceptance_by_depth_figure(summaries), stats.accept_length_figure(summaries),
        stats.expert_usage_figure(summaries), stats.expert_acceptance_figure(summaries),
        stats.sibling_diversity_figure(traces), stats.expert_share_figure(traces),
        stats.routing_confidence_figure(traces),
    ]
    for fig in figures:
        assert fig.data and fig.layout.height
        json.loads(fig.to_json())
    assert {t.name for t in figures[0].data} == {"Jakiro (MoE)", "EAGLE-2 (single head)"}
    assert stats.acceptance_by_depth_figure({}).layout.annotations  # empty state, no crash
    # expert usage reads drafter by drafter, depth 1 first, whatever order the sources came in
    order = list(figures[2].layout.xaxis.categoryarray)
    assert {x for t in figures[2].data for x in t.x} == set(order)
    keys = [(x.split(" d")[0], int(x.split(" d")[1])) for x in order]
    assert keys == sorted(keys, key=lambda k: (list(summaries).index(k[0]), k[1]))
    assert len({k[0] for k in keys}) == 2


def test_sibling_stats_and_routing_confidence(session):
    by_depth = stats.sibling_stats(session.traces["jakiro"])
    assert sorted(by_depth) == list(range(1, SETTINGS.depth + 1))
    for row in by_depth.values():
        assert 0 < row["distinct_in_layer"] <= 1 and 0 < row["distinct_among_siblings"] <= 1
        assert sum(v for k, v in row.items() if k.startswith("share ")) == pytest.approx(1.0)
    assert "share contrastive" in by_depth[SETTINGS.depth]  # hybrid schedule: the last layer is contrastive
    rows = stats.routing_confidence(session.traces["jakiro"])
    kept = sum(1 for s in text.spec_steps(session.traces["jakiro"]) for n in s["nodes"]
               if n["kept"] and n["parent"] >= 0 and n["branch"] != "lookup")  # looked-up nodes have no gate
    assert sum(r["nodes"] for r in rows) == kept
    assert stats.routing_confidence(session.traces["eagle"]) == [
        {**r, "nodes": 0, "acceptance": None} for r in stats.routing_confidence(session.traces["eagle"])
    ]  # an empty bin has no acceptance rate (no bar), not 0%


def test_summary_table_and_export_round_trip(session, tmp_path):
    table = text.summary_table(session.summaries())
    assert list(table["method"]) == ["jakiro", "eagle", "none"]
    assert {"tau", "tokens_per_s", "speedup_vs_plain", "acceptance_by_depth"} <= set(table.columns)
    exported = Session(traces=session.traces, texts=session.texts)
    paths = export_files(exported)
    try:
        assert len(paths) == 4 and paths[-1].endswith(".csv")
        csv = pd.read_csv(paths[-1], keep_default_na=False).set_index("method")
        assert csv.loc["jakiro", "routing_confidence_acceptance"].startswith("0.5-0.6:")
        assert csv.loc["eagle", "routing_confidence_acceptance"] == ""  # no gate
        assert csv.loc["none", "distinct_in_layer_by_depth"] == ""  # no tree
        depths = [cell.split(":")[0] for cell in csv.loc["eagle", "distinct_among_siblings_by_depth"].split()]
        assert depths == [str(d) for d in range(1, SETTINGS.depth + 1)]
        assert all(len(p.rsplit("-", 1)[-1].split(".")[0]) == 12 for p in paths)  # random tag in every name
        loaded = load_session(paths[:3])
        assert list(loaded.traces) == ["jakiro", "eagle", "none"]
        assert loaded.traces["jakiro"] == read_jsonl(paths[0])
        assert text.trace_text(loaded.traces["none"]) == session.texts["none"]
    finally:
        delete_session(exported)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "step"}\n')
    with pytest.raises(TraceError):
        load_session([str(bad)])
    with pytest.raises(TraceError):
        load_session([])


@pytest.mark.parametrize("settings, error", [
    (Settings(depth=1, schedule="hybrid"), ConfigError),
    (Settings(top_p=0.0), ConfigError),
    (Settings(max_new_tokens=0), ConfigError),
    (Settings(tree_top_k=0), ConfigError),
])
def test_invalid_settings_raise_before_any_record(engines, settings, error):
    session = Session()
    with pytest.raises(error):
        list(run_all(engines, "Hi", settings, session))
    assert session.traces == {}


def test_empty_prompt_is_a_prompt_error(engines):
    with pytest.raises(PromptError):
        list(run_all(engines, "   ", SETTINGS, Session()))


def test_run_all_runs_the_methods_side_by_side(engines):
    """The methods take turns a step at a time: every method has records from the first refresh on, and each
    refresh names the methods still running."""
    session, seen = Session(), []
    for running in run_all(engines, "Hello there", SETTINGS, session, min_interval_s=0.0):
        seen.append((running, {name: len(records) for name, records in session.traces.items()}))
    assert [counts for _, counts in seen[:3]] == [  # one record of each in turn
        {"jakiro": 1, "eagle": 0, "none": 0},
        {"jakiro": 1, "eagle": 1, "none": 0},
        {"jakiro": 1, "eagle": 1, "none": 1},
    ]
    assert set(seen[0][0]) == {"jakiro", "eagle", "none"}
    assert seen[-1][0] == ()
    assert all(set(later) <= set(earlier) for (earlier, _), (later, _) in zip(seen, seen[1:]))
    assert session.texts["jakiro"] == session.texts["eagle"] == session.texts["none"]


def test_fallback_setting_reaches_the_engine_and_plain_steps_say_why():
    assert engine_config(Settings(), moe=True).fallback.enabled
    assert not engine_config(Settings(fallback=False), moe=True).fallback.enabled
    note = "fallback: the last 4 cycles ran at 0.70x plain decoding (break-even 1.00x); decoding plainly for 12 steps"
    records = [{"type": "step", "step": 3, "kind": "plain", "emitted": [{"token_id": 5, "text": "a", "source": "target",
                                                                       "node": -1}], "verify_ms": 30.0, "note": note}]
    assert "Why no draft: the last 4 cycles ran at 0.70x" in text.step_markdown("jakiro", records, 3)
    annotation = tree.tree_figure(records[0]).layout.annotations[0].text
    assert "no draft tree at this step" in annotation and "0.70x plain" in annotation and "<br>" in annotation
    assert "Why" not in text.step_markdown("none", [{**records[0], "note": ""}], 3)


def test_advisories_explain_settings_that_do_not_do_what_they_seem():
    from core.config import SamplingConfig, TreeConfig, advisories, candidate_count

    assert candidate_count(TreeConfig(top_k=4, depth=5)) == 4 + 4 * 16
    assert advisories(TreeConfig(top_k=4, depth=5, total_tokens=24), SamplingConfig()) == []
    [few] = advisories(TreeConfig(top_k=1, depth=2, total_tokens=128), SamplingConfig())
    assert "at most 2 are verified" in few
    [shallow] = advisories(TreeConfig(top_k=4, depth=12, total_tokens=3), SamplingConfig())
    assert "less than depth 12" in shallow
    [top_p] = advisories(TreeConfig(), SamplingConfig(temperature=0.0, top_p=0.5))
    assert "no effect at temperature 0" in top_p
    assert advisories(TreeConfig(), SamplingConfig(temperature=0.7, top_p=0.5)) == []


def test_the_two_trees_align_by_place_in_the_answer(session):
    jakiro, eagle = session.traces["jakiro"], session.traces["eagle"]
    ids = {name: [t["token_id"] for s in text.steps_of(r) for t in s["emitted"]] for name, r in session.traces.items()}
    for step in sorted(set(text.token_steps(jakiro))):
        position = text.first_position(jakiro, step)  # where jakiro's step starts in the answer ...
        assert text.token_steps(jakiro)[position] == step and text.token_steps(jakiro)[position - 1:position] != [step]
        other = text.step_at_position(eagle, position)  # ... and EAGLE's step that emitted the same token there
        assert position in [i for i, s in enumerate(text.token_steps(eagle)) if s == other]
        assert ids["eagle"][position] == ids["jakiro"][position]  # greedy: the same token
    assert text.first_position(jakiro, 10_000) == len(text.token_steps(jakiro))
    assert text.step_at_position(jakiro, 10_000) == text.last_step(jakiro)
    assert text.step_at_position([], 3) == 0


def test_other_dtypes_load_once_on_demand(engines, tmp_path):
    assert engines.dtype_choices() == ["float32"]
    with pytest.raises(ConfigError, match="dtype must be one of float32"):
        engines.for_dtype("bfloat16")
    assert engines.for_dtype("float32") is engines
    loads = []

    def load_dtype(dtype):
        loads.append(dtype)
        target = engines.target.__class__.load(str(tmp_path / "model"), dtype=dtype, device="cpu")
        drafter = registry.attach(registry.random_drafter(target, "moe"), target, "jakiro")
        return engines_for(target, {"jakiro": drafter})

    make_tiny_target(tmp_path / "model")
    variant = engines_for(engines.target, {}, [])
    variant.load_dtype = load_dtype
    assert variant.dtype_choices() == ["float32", "bfloat16"] and not variant.is_loaded("bfloat16")
    bf16 = variant.for_dtype("bfloat16")
    assert bf16.dtype == "bfloat16" and bf16.device == "cpu, bfloat16" and variant.is_loaded("bfloat16")
    assert variant.for_dtype("bfloat16") is bf16 and loads == ["bfloat16"]
    session = Session()
    list(run_all(bf16, "Hi", Settings(max_new_tokens=3, adaptive=False), session, min_interval_s=0.0))
    assert summarize(session.traces["jakiro"]).new_tokens == summarize(session.traces["none"]).new_tokens == 3


def test_empty_statistics_say_why():
    empty = stats.routing_confidence_figure({})
    assert "no MoE drafter" in empty.layout.annotations[0].text
    bars = stats.bar_figure({"Jakiro": (["0.5–0.6"], [None])}, {}, "x", "y", empty="nothing verified")
    assert bars.layout.annotations[0].text == "nothing verified"
    assert "no speculative steps yet" in stats.acceptance_by_depth_figure({}).layout.annotations[0].text
    assert stats._empty({"jakiro": None}) == stats.NONE_VERIFIED


def test_clicked_tokens_show_the_steps_that_produced_them(session, oracle_trace):
    """By place in the answer, both trees show the step that produced the clicked token, even where the two runs'
    steps cover the answer differently (the oracle accepts whole trees; the random drafters one token a step)."""
    left, right = oracle_trace, session.traces["jakiro"]
    assert max(map(text.token_steps(left).count, set(text.token_steps(left)))) > 1  # steps of several tokens
    for position in range(len(text.token_steps(right))):
        a, b = text.inspected_steps(left, right, 0, position=position)
        assert text.token_steps(left)[position] == a and text.token_steps(right)[position] == b
    for step in sorted(set(text.token_steps(left))):  # the slider: the left step, the right one where it starts
        a, b = text.inspected_steps(left, right, step)
        assert a == step and b == text.token_steps(right)[text.first_position(left, step)]
    assert text.inspected_steps(left, right, 3, by_position=False, position=7) == (3, 3)


def test_sibling_diversity_hover_gives_distinct_tokens_among_siblings(session):
    fig = stats.sibling_diversity_figure(session.traces)
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 2 and all("among siblings" in h for bar in bars for h in bar.hovertext)


def test_a_dtype_that_fails_to_load_is_explained(engines):
    from core.models import ModelSourceError

    def broken(dtype):
        raise ModelSourceError("the model package is missing")

    variant = engines_for(engines.target, {}, [])
    variant.load_dtype = broken
    with pytest.raises(ConfigError, match="cannot load the models in bfloat16: the model package is missing"):
        variant.for_dtype("bfloat16")
    assert not variant.is_loaded("bfloat16")


def test_shipped_examples_load_with_labels_and_unique_prompts():
    examples = load_examples()
    assert len(examples) >= 4
    assert len({e.prompt for e in examples}) == len(examples) and len({e.label for e in examples}) == len(examples)
    assert all(e.prompt.strip() and 0 < len(e.label) <= MAX_LABEL_CHARS for e in examples)


@pytest.mark.parametrize("examples, message", [
    ([], "'examples' must be a non-empty list"),
    ([{"label": "A list"}], "example 0 needs a non-blank 'prompt'"),
    ([{"label": "A list", "prompt": "Hi"}, {"label": "", "prompt": "Hi"}], "example 1 needs a 'label'"),
    ([{"label": "x" * (MAX_LABEL_CHARS + 1), "prompt": "Hi"}], "example 0 needs a 'label'"),
    (["List three uses of a paperclip."], "example 0 needs a 'label'"),
])
def test_a_malformed_examples_file_is_refused_naming_the_entry(tmp_path, examples, message):
    path = tmp_path / "examples.json"
    path.write_text(json.dumps({"examples": examples}))
    with pytest.raises(ValueError, match=message):
        load_examples(path)
    path.write_text(json.dumps(examples))  # the list alone, not under "examples"
    with pytest.raises(ValueError, match="'examples' must be a non-empty list"):
        load_examples(path)
