"""Adaptive tree size: the cost line, the size rule, ancestor-closed trimming, and losslessness."""
import pytest
import torch

from core.config import EngineConfig, TreeConfig
from core.engine import SpecDecoder
from core.registry import attach, random_drafter
from core.sizing import (Calibration, CostModel, DraftStop, best_size, break_even, fit_cost, layer_gain,
                         measure_verify_cost, prune_floor)
from core.trace import summarize
from core.tree import keep_best
from tests.helpers import NO_FALLBACK, OracleProposer


def test_fit_cost_recovers_a_line_and_never_a_negative_slope():
    line = fit_cost([(1, 40.0), (9, 48.0), (33, 72.0)])
    assert line.fixed_ms == pytest.approx(40.0) and line.per_node_ms == pytest.approx(1.0)
    assert line.verify_ms(17) == pytest.approx(56.0)
    assert fit_cost([(1, 50.0), (32, 45.0)]).per_node_ms == 0.0
    assert fit_cost([(8, 30.0), (8, 34.0)]).linear() == CostModel(fixed_ms=32.0, per_node_ms=0.0)
    with pytest.raises(ValueError):
        fit_cost([])


def test_the_cost_curve_interpolates_the_measured_sizes():
    """A CPU's verification cost is concave (session 23: 1 token 37 ms, 4 tokens 69 ms, 16 tokens 107 ms): the curve
    prices small trees as measured, where the line is tens of ms off."""
    cost = fit_cost([(1, 37.0), (2, 44.0), (4, 69.0), (8, 82.0), (16, 107.0), (48, 150.0)])
    assert cost.curve == ((1, 37.0), (2, 44.0), (4, 69.0), (8, 82.0), (16, 107.0), (48, 150.0))
    assert cost.verify_ms(1) == pytest.approx(37.0) and cost.verify_ms(4) == pytest.approx(69.0)
    assert cost.verify_ms(6) == pytest.approx(75.5) and cost.verify_ms(12) == pytest.approx(94.5)  # between sizes
    assert cost.verify_ms(58) == pytest.approx(150.0 + 10 * cost.per_node_ms)  # beyond: the line's slope
    assert abs(cost.linear().verify_ms(1) - 37.0) > 10
    assert fit_cost([(1, 40.0), (2, 38.0), (2, 36.0)]).curve == ((1, 40.0), (2, 40.0))  # averaged, never cheaper
    many = cost.verify_ms_many(torch.arange(1, 60))
    assert many.tolist() == [cost.verify_ms(n) for n in range(1, 60)] and bool((many.diff() >= 0).all())
    assert fit_cost([(4, 50.0)]).verify_ms(6) == pytest.approx(50.0)  # one size: flat (no slope measured)
    samples = [(1, 40.0), (2, 60.0), (9, 48.0), (33, 72.0)]
    assert fit_cost(samples, line_sizes=(1, 9, 33)).linear() == fit_cost([(1, 40.0), (9, 48.0), (33, 72.0)]).linear()
    assert fit_cost(samples, line_sizes=(1, 9, 33)).curve[1] == (2, 60.0)  # the curve keeps every size


def test_the_curve_verifies_nothing_where_a_first_extra_token_is_dear():
    """Priced by the curve, the jump from 1 to 2 tokens (the first drafted node) makes an unsure tree not worth it;
    the line, which puts that jump at a few ms, verifies it."""
    cost = fit_cost([(1, 37.0), (2, 60.0), (4, 64.0), (8, 70.0), (16, 80.0), (48, 120.0)])
    probs = torch.tensor([0.3, 0.1, 0.05])
    assert best_size(probs, cost, 5.0, 1.0, 3) == 0
    assert best_size(probs, cost.linear(), 5.0, 1.0, 3) > 0
    sure = torch.tensor([0.95, 0.9, 0.85])
    assert best_size(sure, cost, 5.0, 1.0, 3) == 3


def test_best_size_weighs_confidence_against_cost():
    probs = torch.tensor([0.9, 0.5, 0.2, 0.05, 0.01])
    assert best_size(probs, CostModel(40.0, 0.0), 10.0, 1.0, 5) == 5  # free nodes: verify all
    assert best_size(probs, CostModel(40.0, 1000.0), 10.0, 1.0, 5) == 0  # dear nodes: none
    assert best_size(probs, CostModel(40.0, 0.0), 10.0, 1.0, 3) == 3  # the cap holds
    # 1 ms per node on a 50 ms cycle: a node pays while p * ratio > (tokens so far) / (ms so far):
    # the 4th (0.05 > 2.6 / 53 ms) does, the 5th (0.01 < 2.65 / 54 ms) does not
    mid = best_size(probs, CostModel(40.0, 1.0), 10.0, 1.0, 5)
    assert mid == 4
    assert best_size(probs, CostModel(40.0, 1.0), 10.0, 0.2, 5) < mid  # a drafter found overconfident gets less
    assert best_size(torch.zeros(0), CostModel(40.0, 1.0), 10.0, 1.0, 8) == 0


def test_calibration_is_accepted_over_predicted():
    c = Calibration()
    assert c.ratio == 1.0
    for _ in range(50):
        c.update(2.0, 1)
    assert c.ratio == pytest.approx(52 / 102)


def test_keep_best_is_ancestor_closed(tiny_target):
    proposer = attach(random_drafter(tiny_target, "moe", seed=5), tiny_target, "moe")
    prompt = tiny_target.encode_chat("Name a fruit.")
    proposer.reset(prompt)
    out = tiny_target.forward(torch.tensor(prompt), torch.arange(len(prompt)), tiny_target.new_cache())
    tree = proposer.propose(out.hidden, torch.tensor(prompt[1:] + [7]), len(prompt), TreeConfig(total_tokens=30)).tree
    for n in (0, 1, 5, 12, 30):
        small = keep_best(tree, n)
        kept = set(small.kept.nonzero().flatten().tolist())
        assert len(kept) == 1 + min(n, int(tree.kept.sum()) - 1)
        assert kept <= set(tree.kept.nonzero().flatten().tolist())
        assert all(int(tree.parents[i]) in kept for i in kept if i)
        worst_kept = min(float(tree.scores[i]) for i in kept if i) if n else None
        dropped = set(tree.kept.nonzero().flatten().tolist()) - kept
        assert all(float(tree.scores[i]) <= worst_kept for i in dropped) if n else True


def test_a_verification_implies_a_plain_steps_time():
    cost = CostModel(fixed_ms=40.0, per_node_ms=2.0)  # 1 token 40 ms, 6 tokens 50 ms
    assert cost.plain_step_ms(60.0, 6) == pytest.approx(48.0)  # a slow moment: this verification took 60, not 50
    assert cost.plain_step_ms(45.0, 1) == pytest.approx(45.0)


def test_measured_cost_is_positive_for_each_size(tiny_target):
    samples = measure_verify_cost(tiny_target, sizes=(1, 4, 16), context=16, repeats=1)
    assert [n for n, _ in samples] == [1, 4, 16] and all(ms > 0 for _, ms in samples)


def test_the_sizes_are_timed_in_turn_round_after_round(tiny_target, monkeypatch):
    calls, forward = [], tiny_target.forward

    def counted(tokens, *args, **kwargs):
        calls.append(len(tokens))
        return forward(tokens, *args, **kwargs)

    monkeypatch.setattr(tiny_target, "forward", counted)
    measure_verify_cost(tiny_target, sizes=(1, 4, 16), context=16, repeats=2)
    assert calls == [16] + [1, 4, 16] * 3  # the context, a warm-up round, then two timed rounds


def test_decoders_of_one_target_share_one_measured_cost(tiny_target):
    first, second = SpecDecoder(tiny_target, OracleProposer(tiny_target)), SpecDecoder(tiny_target)
    assert first.verify_cost() is second.verify_cost()
    assert SpecDecoder(tiny_target, cost=CostModel(1.0, 0.0)).verify_cost() == CostModel(1.0, 0.0)


@pytest.mark.parametrize("per_node_ms, nodes", [(0.0, 12), (1e6, 0)])
def test_adaptive_trees_are_lossless_and_follow_the_cost(tiny_target, per_node_ms, nodes):
    prompt = "Tell me a story about a dragon."
    plain = summarize(SpecDecoder(tiny_target).generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=30)))
    cost = CostModel(fixed_ms=10.0, per_node_ms=per_node_ms)  # a machine where nodes are free / dear
    decoder = SpecDecoder(tiny_target, OracleProposer(tiny_target), cost=cost)
    tree = TreeConfig(top_k=3, depth=4, total_tokens=12, adaptive=True)
    records = decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=30, tree=tree))
    spec = summarize(records)
    assert spec.text_tokens == plain.text_tokens
    steps = [r for r in records if r.get("kind") == "spec"]
    assert all(r["tree_nodes"] == nodes for r in steps[:-1])
    assert spec.tau > 4.0 if nodes else spec.tau == pytest.approx(1.0)


def test_adaptive_random_drafter_is_lossless(tiny_target):
    prompt = "List three colours."
    cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=30)
    plain = summarize(SpecDecoder(tiny_target).generate(prompt, cfg)).text_tokens
    proposer = attach(random_drafter(tiny_target, "moe", seed=3), tiny_target, "moe")
    decoder = SpecDecoder(tiny_target, proposer, cost=CostModel(fixed_ms=10.0, per_node_ms=0.0))
    tree = TreeConfig(top_k=4, depth=4, total_tokens=16, schedule="hybrid", adaptive=True)
    assert summarize(decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=30, tree=tree))).text_tokens == plain


def test_prune_floor_and_early_stop(tiny_target):
    assert prune_floor(CostModel(40.0, 2.0), 0.05, 1.0) == pytest.approx(0.1)
    assert prune_floor(CostModel(40.0, 2.0), 0.05, 0.5) == pytest.approx(0.2)  # an overconfident drafter prunes more
    prompt = "Tell me a story about a dragon."
    plain = summarize(SpecDecoder(tiny_target).generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=30)))
    proposer = attach(random_drafter(tiny_target, "moe", seed=3), tiny_target, "moe")
    decoder = SpecDecoder(tiny_target, proposer, cost=CostModel(fixed_ms=10.0, per_node_ms=1e6))  # no node pays
    tree = TreeConfig(top_k=3, depth=4, total_tokens=12, schedule="hybrid", adaptive=True)
    records = decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=30, tree=tree))
    assert summarize(records).text_tokens == plain.text_tokens
    steps = [r for r in records if r.get("kind") == "spec"]
    assert steps[0]["drafter_forwards"] == 3  # no speed measured yet: the full hybrid tree
    assert all(r["drafter_forwards"] == 1 and r["tree_nodes"] == 0 for r in steps[1:])


def test_layer_gain_and_floor():
    assert layer_gain(0.5, 1.0) == pytest.approx(0.25)  # the frontier kept half the mass: half of it again
    assert layer_gain(0.2, 0.8) == pytest.approx(0.05)
    assert break_even(2.0, 0.05, 1.0) == pytest.approx(0.1)  # a 2 ms forward at 0.05 tokens/ms must bring 0.1
    assert break_even(2.0, 0.05, 2.0) == pytest.approx(0.05)  # an underconfident drafter's estimate counts double


@pytest.mark.parametrize("schedule, depth, forwards, layers", [("hybrid", 4, 1, 2), ("hybrid", 2, 1, 2),
                                                              ("standard", 3, 1, 1)])
def test_a_layer_that_cannot_pay_for_its_forward_is_not_drafted(tiny_target, schedule, depth, forwards, layers):
    """With a gain floor no layer reaches, only the catch-up forward runs; the hybrid schedule's contrastive
    last layer needs no forward, so it is still drafted right after it, wherever the tree stops."""
    proposer = attach(random_drafter(tiny_target, "moe", seed=3), tiny_target, "moe")
    ids = tiny_target.encode_chat("Tell me a story.")
    proposer.reset(ids)
    out = tiny_target.forward(torch.tensor(ids), torch.arange(len(ids)), tiny_target.new_cache())
    tree = TreeConfig(top_k=3, depth=depth, total_tokens=12, schedule=schedule)
    args = (out.hidden, torch.tensor(ids[1:] + [5]), len(ids), tree)
    full = proposer.propose(*args)
    proposer.reset(ids)
    cut = proposer.propose(*args, DraftStop(min_layer_gain=2.0))  # a layer's gain never exceeds its mass <= 1
    assert full.forwards == depth - (schedule == "hybrid") and cut.forwards == forwards
    assert int(cut.tree.depths.max()) == layers
    last = [b for b, d in zip(cut.tree.branches, cut.tree.depths.tolist()) if d == layers]
    assert set(last) == {"contrastive" if schedule == "hybrid" else "moe"}
    assert "contrastive" not in [b for b, d in zip(cut.tree.branches, cut.tree.depths.tolist()) if d < layers]
    proposer.reset(ids)
    assert proposer.propose(*args, DraftStop(min_layer_gain=1e-12)).forwards == full.forwards


@pytest.mark.parametrize("curve, nodes", [(((1, 10.0), (2, 1e6)), 0), (((1, 10.0), (13, 10.0)), 12)])
def test_the_engine_prices_trees_by_the_curve_when_asked(tiny_target, curve, nodes):
    """With cost_curve the engine sizes the oracle's (fully accepted) trees by the measured curve, not its line
    (here free nodes): a dear first extra token verifies none, a flat curve all; lossless either way."""
    prompt = "Tell me a story about a dragon."
    plain = summarize(SpecDecoder(tiny_target).generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=30)))
    decoder = SpecDecoder(tiny_target, OracleProposer(tiny_target),
                          cost=CostModel(fixed_ms=10.0, per_node_ms=0.0, curve=curve))
    tree = TreeConfig(top_k=3, depth=4, total_tokens=12, adaptive=True, cost_curve=True)
    records = decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=30, tree=tree))
    assert summarize(records).text_tokens == plain.text_tokens
    steps = [r for r in records if r.get("kind") == "spec"]
    assert all(r["tree_nodes"] == nodes for r in steps[:-1])
