"""Drafter cards (core.card) and the Drafters tab that shows them (app.views.drafters)."""
from __future__ import annotations

import json

import pytest

from app.views.drafters import drafters_markdown
from core import registry
from core.card import drafter_card, read_training
from core.drafter import load_drafter, save_drafter
from tests.helpers import make_tiny_target, tiny_engines


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return make_tiny_target(tmp_path_factory.mktemp("tiny") / "model")


def test_cards_describe_the_architecture(target):
    moe = registry.random_drafter(target, "moe")
    dense = registry.random_drafter(target, "dense", num_layers=2)
    a, b = drafter_card(moe, "jakiro", trained=False), drafter_card(dense, "eagle", trained=False)
    assert (a.ffn, a.experts, a.ffn_units, a.layers) == ("moe", 2, moe.cfg.expert_size or moe.cfg.hidden_size, 1)
    assert (b.ffn, b.experts, b.ffn_units, b.layers) == ("dense", 1, dense.cfg.intermediate_size, 2)
    assert a.parameters == sum(p.numel() for p in moe.parameters()) > 0
    assert b.parameters == sum(p.numel() for p in dense.parameters()) > a.parameters  # a second layer
    assert a.training is None and b.draft_vocab == target.vocab_size
    shown = drafters_markdown([a, b])
    assert "Mixture of Experts: 2 SwiGLU experts" in shown and "one dense SwiGLU MLP" in shown
    assert shown.count("**random**") == 2


def test_card_reads_the_training_record(target, tmp_path):
    drafter = registry.random_drafter(target, "dense")
    state = {"step": 40, "history": [{"top1": 0.5, "positions": 10}], "init": {"folder": "x", "steps": 9},
             "final": {"top1": 0.625, "con_top1": None, "positions": 800}}
    save_drafter(drafter, tmp_path, {"train_config": {"batch_tokens": 512, "lr": 1e-4, "unroll": 3},
                                     "state": state, "recipe": {"tokens": 9000, "assistant_tokens": 6000}})
    card = drafter_card(drafter, "mine", trained=True, meta=read_training(tmp_path))
    t = card.training
    assert (t.steps, t.tokens_per_step, t.data_tokens, t.answer_tokens, t.unroll) == (40, 512, 9000, 6000, 3)
    assert (t.heldout_top1, t.heldout_contrastive, t.heldout_positions, t.warm_start) == (0.625, None, 800, "x")
    shown = drafters_markdown([card])
    assert "40 steps × 512 tokens" in shown and "62.5% of 800 positions" in shown and "warm start" in shown
    run_folder = {k: v for k, v in read_training(tmp_path).items() if k != "recipe"}  # the data is added at export
    assert "recorded tokens" not in drafters_markdown([drafter_card(drafter, "mine", True, run_folder)])
    assert not t.upcycled and "split into the two experts" not in shown
    upcycled = {**run_folder, "state": {**state, "init": {"folder": "x", "upcycled": {"from": "dense"}}}}
    up_card = drafter_card(drafter, "mine", True, upcycled)
    assert up_card.training.upcycled and "split into the two experts" in drafters_markdown([up_card])
    later = {**run_folder, "state": {**state, "init": {"folder": "y", "previous": {"folder": "x", "previous": {
        "folder": "w", "upcycled": {"from": "dense"}}}}}}  # trained on from an upcycled run, twice
    assert drafter_card(drafter, "mine", True, later).training.upcycled
    # an untrained drafter never claims a record, and a damaged record leaves the architecture only
    assert drafter_card(drafter, "mine", trained=False, meta=read_training(tmp_path)).training is None
    (tmp_path / "drafter.json").write_text(json.dumps({"state": {"step": "many"}}))
    assert drafter_card(drafter, "mine", True, read_training(tmp_path)).training is None
    (tmp_path / "drafter.json").write_text("{not json")
    assert read_training(tmp_path) is None and read_training(tmp_path / "missing") is None


def test_shipped_drafters_are_described_alike():
    cards = []
    for name in ("jakiro", "eagle"):
        folder = registry.drafter_folder(name)
        cards.append(drafter_card(load_drafter(folder), name, True, read_training(folder)))
    jakiro, eagle = cards
    assert jakiro.ffn == "moe" and eagle.ffn == "dense"
    assert abs(jakiro.parameters - eagle.parameters) / eagle.parameters < 0.01  # equal capacity since release 10
    for card in cards:
        assert card.training is not None and card.training.steps > 0 and 0 < card.training.heldout_top1 < 1
    assert jakiro.training.heldout_contrastive is not None and eagle.training.heldout_contrastive is None
    assert jakiro.feature_layers == eagle.feature_layers and jakiro.draft_vocab == eagle.draft_vocab


def test_app_engines_carry_cards(tmp_path):
    engines = tiny_engines(tmp_path / "model")
    assert [c.name for c in engines.cards] == ["jakiro", "eagle"]
    assert "Jakiro" in drafters_markdown(engines.cards) and "No drafter loaded" in drafters_markdown([])
