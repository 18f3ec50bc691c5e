"""Context lookup grafted into the draft tree: the chain it finds, the tree it builds, and losslessness."""
from dataclasses import replace

import pytest
import torch

from core.config import EngineConfig, SamplingConfig, TreeConfig
from core.engine import SpecDecoder
from core.lookup import (LOOKUP_BRANCH, continuations, graft, longest_match, look_up, next_run_length,
                         run_length)
from core.registry import attach, random_drafter
from core.trace import summarize
from core.tree import Layer, assemble, kept_subtree
from tests.helpers import NO_FALLBACK

PROMPTS = ["Repeat after me: the cat sat on the mat, the cat sat on the mat.", "What is 2+2?"]


@pytest.mark.parametrize("context, length, ngram, expected", [
    ([5, 6, 7, 8, 5, 6], 3, 3, [7, 8, 5]),  # "5 6" seen before: what followed it
    ([1, 2, 9, 1, 2, 7, 1, 2], 2, 3, [7, 1]),  # the most recent occurrence with a full continuation wins
    ([1, 2, 9, 1, 2, 7, 1, 2], 4, 3, [9, 1, 2, 7]),  # none has 4 tokens after it: the earliest, followed by most
    ([3, 1, 2, 4, 9, 1, 2], 2, 3, [4, 9]),  # "9 1 2" unseen, "1 2" seen
    ([3, 1, 2, 4, 9, 1, 2], 2, 1, [4, 9]),  # 1-grams only: the earlier "2"
    ([2, 8, 3, 2, 5], 2, 3, []),  # the last token "5" never occurred before
    ([1, 2, 3, 4], 4, 3, []),  # nothing repeats
    ([7], 4, 3, []),
    ([4, 4, 4], 5, 2, [4]),  # a run: the overlapping match still has one successor
    ([5, 6, 5, 6, 5, 6], 4, 2, [5, 6, 5, 6]),  # a period of 2: the earliest match gives the longest chain
])
def test_continuation(context, length, ngram, expected):
    context = torch.tensor(context)
    n, hits = longest_match(context, ngram)
    runs = continuations(context, hits, length)
    assert runs == ([expected] if expected else []) and (n == 0) == (not expected)


@pytest.mark.parametrize("context, runs, expected", [
    ([1, 2, 9, 1, 2, 7, 1, 2, 5, 1, 2], 3, [[5], [7], [9]]),  # most recent first
    ([1, 2, 9, 1, 2, 9, 1, 2, 5, 1, 2], 3, [[5], [9]]),  # a repeated run is taken once
    ([1, 2, 9, 1, 2, 7, 1, 2, 5, 1, 2], 1, [[5]]),
])
def test_several_runs(context, runs, expected):
    context = torch.tensor(context)
    n, hits = longest_match(context, 2)
    assert n == 2 and continuations(context, hits, 1, runs) == expected


def test_shorter_matches_look_up_fewer_tokens_and_one_run():
    assert [run_length(24, n, 3) for n in (1, 2, 3)] == [3, 11, 24]
    assert run_length(2, 1, 3) == 1  # at least one
    tree = TreeConfig(lookup=9, lookup_runs=2)
    context = torch.tensor([4, 5, 6, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 5, 6, 10, 11, 4, 5, 6])  # "4 5 6" seen twice
    # full 9-token runs first, most recent first; the latest occurrence is followed by 5 tokens only
    assert look_up(context, tree, room=32) == (3, [[7, 8, 9, 4, 5, 6, 10, 11, 4], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
    assert look_up(context, tree, room=3) == (3, [[10, 11, 4], [7, 8, 9]])  # cut to the room left: all are full
    assert look_up(context, tree, room=0) == (0, [])
    assert look_up(context, replace(tree, lookup=0), room=32) == (0, [])
    short = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 8, 6])  # "6" seen once, "8 6" never: a 1-gram match
    assert look_up(short, tree, room=32) == (1, [[7]])  # 9 x (1/3)^2 = 1 token, one run
    assert look_up(short, replace(tree, lookup_curve=1), room=32) == (1, [[7, 8, 9]])  # 9 x 1/3
    assert look_up(short, replace(tree, lookup_curve=0), room=32) == (1, [[7, 8, 9, 3, 8, 6]])  # all 9, cut by the end
    assert [run_length(24, n, 3, 0) for n in (1, 2, 3)] == [24, 24, 24]
    assert [run_length(24, n, 3, 1) for n in (1, 2, 3)] == [8, 16, 24]


def _layer(parents, tokens, logp):
    n = len(tokens)
    lp = torch.tensor(logp)
    return Layer(parents=torch.tensor(parents), tokens=torch.tensor(tokens), logp=lp, scores=lp.clone(),
                 experts=torch.zeros(n, dtype=torch.int64), routing=torch.zeros(n, 4), branch="moe")


def test_graft_shares_the_drafted_prefix_and_appends_the_rest():
    tree = assemble(10, [_layer([0, 0], [11, 12], [-0.1, -2.0]), _layer([1, 1], [13, 14], [-0.5, -0.7])], 3)
    assert tree.kept.tolist() == [True, True, False, True, True]  # 12 is cut by the rerank
    grafted = graft(tree, [[11, 14, 15, 16]])
    assert grafted.size - tree.size == 2
    assert grafted.parents.tolist()[5:] == [4, 5] and grafted.tokens.tolist()[5:] == [15, 16]
    assert grafted.depths.tolist()[5:] == [3, 4]
    assert grafted.branches[5:] == [LOOKUP_BRANCH] * 2 and grafted.kept[5:].all()
    assert grafted.scores[5] == grafted.scores[4]  # no probability of its own
    vtree = kept_subtree(grafted)
    assert vtree.tokens.tolist() == [10, 11, 13, 14, 15, 16]
    # a chain through a cut node is not shared with it: the cut node stays unverified
    via_cut = graft(tree, [[12]])
    assert via_cut.size - tree.size == 1 and via_cut.parents[-1] == 0 and not via_cut.kept[2]
    assert graft(tree, [[11, 13]]) is tree and graft(tree, []) is tree


def test_runs_grow_while_the_text_is_copied():
    tree = TreeConfig(lookup=8, lookup_max=20)
    run = list(range(1, 9))
    assert next_run_length(tree, 8, [[5], run], run + [9]) == 16  # a whole run accepted: copying, look further
    assert next_run_length(tree, 16, [list(range(16))], list(range(16))) == 20  # capped
    assert next_run_length(tree, 16, [list(range(16))], list(range(15))) == 8  # one short: back to the start
    assert next_run_length(tree, 8, [run[:5]], run[:5]) == 8  # a run cut short (the context's end, a short match)
    assert next_run_length(tree, 8, [], []) == 8
    assert next_run_length(replace(tree, lookup_max=0), 8, [run], run) == 8  # no growth
    context = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3])
    assert look_up(context, tree, room=32, tokens=5) == (3, [[4, 5, 6, 7, 8]])


def test_growing_runs_stay_lossless_and_grow(tiny_target):
    """The random target's answers repeat, so whole runs get accepted and the next ones are longer."""
    tree = TreeConfig(top_k=2, depth=2, total_tokens=4, lookup=4, lookup_max=16)
    decoder = SpecDecoder(tiny_target, attach(random_drafter(tiny_target, "dense", seed=3), tiny_target, "dense"))
    longest = 0
    for prompt in PROMPTS:
        plain = summarize(SpecDecoder(tiny_target).generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=64)))
        records = decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=64, tree=tree))
        assert summarize(records).text_tokens == plain.text_tokens
        for r in records:
            if r["type"] == "step":
                depths = [n["depth"] for n in r["nodes"] if n["branch"] == LOOKUP_BRANCH]
                longest = max([longest, *depths])
    assert 4 < longest <= 16


def test_graft_several_runs_share_their_common_prefix():
    tree = assemble(10, [_layer([0, 0], [11, 12], [-0.1, -2.0]), _layer([1, 1], [13, 14], [-0.5, -0.7])], 3)
    grafted = graft(tree, [[20, 21, 22], [20, 21, 23], [11, 13, 24]])
    # 20 21 22 new; 23 branches off the run's 21; 24 hangs below the drafted 11 -> 13
    assert grafted.tokens.tolist()[tree.size:] == [20, 21, 22, 23, 24]
    assert grafted.parents.tolist()[tree.size:] == [0, 5, 6, 6, 3]
    assert grafted.depths.tolist()[tree.size:] == [1, 2, 3, 3, 3]


@pytest.mark.parametrize("ffn, tree", [
    ("moe", TreeConfig(top_k=3, depth=3, total_tokens=10, schedule="hybrid", lookup=8)),
    ("dense", TreeConfig(top_k=2, depth=2, total_tokens=4, lookup=10, lookup_ngram=2)),
    ("moe", TreeConfig(top_k=4, depth=4, total_tokens=16, adaptive=True, lookup=6)),
    ("dense", TreeConfig(top_k=2, depth=3, total_tokens=6, adaptive=True, lookup=12, lookup_runs=3)),
])
def test_lookup_is_lossless_and_accepted(tiny_target, ffn, tree):
    """Random targets repeat themselves, so looked-up chains get accepted; the output stays the plain one."""
    pytest.importorskip("plotly")  # the app's views are checked too (the GPU machine has no plotly)
    from app.views.style import SOURCE_COLORS
    from app.views.text import legend_for
    from app.views.stats import expert_acceptance_figure, expert_usage_figure
    from app.views.tree import tree_figure

    decoder = SpecDecoder(tiny_target, attach(random_drafter(tiny_target, ffn, seed=5), tiny_target, ffn))
    lookup_accepted, steps = 0, []
    for prompt in PROMPTS:
        plain = summarize(SpecDecoder(tiny_target).generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=48)))
        records = decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=48, tree=tree))
        assert summarize(records).text_tokens == plain.text_tokens
        copied = sum(t["source"] == "lookup" for r in records if r["type"] == "step" for t in r["emitted"])
        assert ("lookup" in legend_for(records, ffn)) == (copied > 0)  # the app's legend lists the colour when used
        lookup_accepted += copied
        steps += [r for r in records if r["type"] == "step"]
    assert lookup_accepted > 0
    # the tree view draws looked-up nodes in their own colour, and says where they came from
    step = next(r for r in steps if any(n["branch"] == LOOKUP_BRANCH for n in r["nodes"]))
    drawn = {t.name: t for t in tree_figure(step).data}
    assert drawn["lookup"].marker.color == SOURCE_COLORS["lookup"]
    assert all("copied from earlier in the context" in h for h in drawn["lookup"].hovertext)
    # statistics: looked-up nodes count in acceptance per source, but not in the experts' usage per depth
    summary = summarize([records[0], *steps])
    assert "lookup" in summary.expert_usage and "lookup" in summary.expert_acceptance
    assert not any("lookup" in t.name for t in expert_usage_figure({"jakiro": summary}).data)
    assert "lookup" in list(expert_acceptance_figure({"jakiro": summary}).data[0].x)


@pytest.mark.parametrize("ffn, adaptive", [("moe", False), ("dense", True)])
def test_lookup_alone_skips_the_drafter_and_stays_lossless(tiny_target, ffn, adaptive):
    """A full-length chain after a longest n-gram match is verified alone (no drafter forward); the drafter then
    catches up on the tokens it did not see, so the output is still the plain one."""
    tree = TreeConfig(top_k=3, depth=3, total_tokens=8, adaptive=adaptive, lookup=6, lookup_alone=True)
    decoder = SpecDecoder(tiny_target, attach(random_drafter(tiny_target, ffn, seed=4), tiny_target, ffn))
    alone = drafted = 0
    for prompt in PROMPTS:
        plain = summarize(SpecDecoder(tiny_target).generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=48)))
        records = decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=48, tree=tree))
        assert summarize(records).text_tokens == plain.text_tokens
        for r in records:
            if r["type"] == "step" and r["kind"] == "spec":
                branches = {n["branch"] for n in r["nodes"] if n["parent"] >= 0}
                if r["drafter_forwards"] == 0:
                    alone += 1
                    assert branches == {LOOKUP_BRANCH} and r["tree_nodes"] == 6
                else:
                    drafted += 1
    assert alone > 0 and drafted > 0


def test_lookup_also_runs_when_sampling(tiny_target):
    """Sampled verification eliminates deterministic candidates, so looked-up nodes join sampled trees too
    (that the output distribution stays the target's is tested in test_sampling)."""
    decoder = SpecDecoder(tiny_target, attach(random_drafter(tiny_target, "moe"), tiny_target, "moe"))
    cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=24, sampling=SamplingConfig(temperature=1.0, top_k=3),
                       tree=TreeConfig(top_k=2, depth=2, total_tokens=4, lookup=8))
    records = decoder.generate(PROMPTS[0], cfg)
    nodes = [n for r in records if r["type"] == "step" for n in r.get("nodes", [])]
    assert any(n["branch"] == LOOKUP_BRANCH for n in nodes)


@pytest.mark.parametrize("bad", [-1, 65, 1.5])
def test_bad_lookup_settings_are_refused(bad):
    with pytest.raises(ValueError, match="lookup must be an integer in 0..64"):
        TreeConfig(lookup=bad)
    with pytest.raises(ValueError, match="lookup_max must be an integer in 0..64"):
        TreeConfig(lookup_max=bad)
    with pytest.raises(ValueError, match="lookup_runs must be an integer in 1..8"):
        TreeConfig(lookup_runs=bad if bad != 65 else 9)


def test_lookup_stops_at_the_context_like_plain_decoding(tiny_target):
    """Near the end of the context a looked-up chain is cut to the room left: same tokens, same stop, and no
    node past the last position (the random target's answer repeats itself, so long chains are accepted)."""
    words = "the cat sat on the mat and "
    cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=80, tree=TreeConfig(top_k=2, depth=3, total_tokens=6))
    decoder = SpecDecoder(tiny_target, attach(random_drafter(tiny_target, "dense"), tiny_target, "dense"))
    looked_up_cfg = replace(cfg, tree=replace(cfg.tree, lookup=16))
    reached = 0
    for room in range(52, 62):  # where the answer starts: cycles then end at different distances from the end
        prompt = words * 10
        while len(tiny_target.encode_chat(prompt + words)) < tiny_target.max_context - room:
            prompt += words
        prompt = tiny_target.encode_chat(prompt)[: tiny_target.max_context - room]
        plain = SpecDecoder(tiny_target).generate(prompt, cfg, detail=False)
        spec = decoder.generate(prompt, looked_up_cfg, detail=False)
        assert spec[-1]["stop_reason"] == plain[-1]["stop_reason"] == "context"
        assert summarize(spec).text_tokens == summarize(plain).text_tokens
        steps = [r for r in spec if r["type"] == "step"]
        deepest = [len(prompt) + before["new_tokens"] - 1 + step["tree_depth"] for before, step in zip(steps, steps[1:])]
        assert max(deepest) <= tiny_target.max_context - 2  # no node past the last position a node may take
        reached = max(reached, max(deepest))
    assert reached == tiny_target.max_context - 2  # some chain was cut to exactly the room left
