"""The law: speculative greedy output equals the target's own greedy output, token for token."""
import copy

import pytest
import torch

from core.config import EngineConfig, TreeConfig
from core.engine import SpecDecoder
from core.kv import keep_accepted
from core.layout import KERNELS
from core.registry import attach, random_drafter
from core.trace import summarize
from tests.helpers import NO_FALLBACK, OracleProposer

PROMPTS = ["Tell me a story about a dragon.", "What is 2+2?", "List three colours."]


def tokens_of(records):
    return summarize(records).text_tokens


@pytest.fixture(scope="module")
def plain_outputs(tiny_target):
    cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=40)
    return {p: tokens_of(SpecDecoder(tiny_target).generate(p, cfg)) for p in PROMPTS}


def test_plain_decoder_matches_hf_generate(tiny_target, plain_outputs):
    ids = tiny_target.encode_chat(PROMPTS[0])
    out = tiny_target.model.generate(
        torch.tensor([ids], device=tiny_target.device), max_new_tokens=40, do_sample=False, eos_token_id=sorted(tiny_target.stop_token_ids),
        pad_token_id=2,
    )[0, len(ids):].tolist()
    assert plain_outputs[PROMPTS[0]] == out[: len(plain_outputs[PROMPTS[0]])]
    assert len(plain_outputs[PROMPTS[0]]) == len(out)


TREES = [
    ("chain", TreeConfig(top_k=1, depth=4, total_tokens=4)),
    ("small", TreeConfig(top_k=3, depth=4, total_tokens=10)),
    ("wide", TreeConfig(top_k=6, depth=5, total_tokens=40)),
    ("hybrid", TreeConfig(top_k=4, depth=4, total_tokens=16, schedule="hybrid")),
    ("hybrid_d2_decoupled", TreeConfig(top_k=4, depth=2, total_tokens=12, schedule="hybrid", decoupled=True)),
    ("decoupled", TreeConfig(top_k=3, depth=3, total_tokens=12, decoupled=True)),
]


@pytest.mark.parametrize("ffn", ["dense", "moe"])
@pytest.mark.parametrize("name, tree", TREES)
def test_random_drafters_are_lossless(tiny_target, plain_outputs, ffn, name, tree):
    if ffn == "dense" and (tree.schedule == "hybrid" or tree.decoupled):
        pytest.skip("hybrid/decoupled need the MoE drafter")
    proposer = attach(random_drafter(tiny_target, ffn, seed=3), tiny_target, ffn)
    decoder = SpecDecoder(tiny_target, proposer)
    for prompt in PROMPTS:
        assert tokens_of(decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=40, tree=tree))) == plain_outputs[prompt]


@pytest.mark.parametrize("sibling_depths", [frozenset(), frozenset({2}), frozenset({1, 3})])
def test_oracle_is_lossless_and_fully_accepted(tiny_target, plain_outputs, sibling_depths):
    tree = TreeConfig(top_k=3, depth=4, total_tokens=12)
    decoder = SpecDecoder(tiny_target, OracleProposer(tiny_target, sibling_depths=sibling_depths))
    for prompt in PROMPTS:
        records = decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=40, tree=tree))
        assert tokens_of(records) == plain_outputs[prompt]
        spec = [r for r in records if r["type"] == "step" and r["kind"] == "spec"]
        for r in spec[:-1]:  # every cycle but the truncated last one accepts the whole chain
            assert r["accepted_len"] == tree.depth
        assert summarize(records).tau > 3.0


def test_max_new_tokens_is_exact(tiny_target):
    decoder = SpecDecoder(tiny_target, OracleProposer(tiny_target))
    for n in (1, 2, 5, 7):
        records = decoder.generate(PROMPTS[0], EngineConfig(fallback=NO_FALLBACK, max_new_tokens=n, tree=TreeConfig(top_k=2, depth=4, total_tokens=8)))
        s = summarize(records)
        assert s.new_tokens <= n
        stop = records[-1]["stop_reason"]
        assert stop in ("max_new_tokens", "stop_token")
        if stop == "max_new_tokens":
            assert s.new_tokens == n


@pytest.mark.parametrize("stop_at", [0, 3, 11])
def test_stops_at_end_of_turn_like_plain_decoding(tiny_target, plain_outputs, stop_at):
    """Declare the token plain decoding emits at ``stop_at`` a stop token: both must end right there."""
    target = copy.copy(tiny_target)
    stop_token = plain_outputs[PROMPTS[0]][stop_at]
    target.stop_token_ids = frozenset({stop_token})
    expected = plain_outputs[PROMPTS[0]][: plain_outputs[PROMPTS[0]].index(stop_token) + 1]
    cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=40, tree=TreeConfig(top_k=2, depth=4, total_tokens=8))
    for decoder in (SpecDecoder(target), SpecDecoder(target, OracleProposer(target))):
        records = decoder.generate(PROMPTS[0], cfg)
        assert tokens_of(records) == expected
        assert records[-1]["stop_reason"] == "stop_token"


def test_kv_after_commit_equals_fresh_forward(tiny_target):
    ids = tiny_target.encode_chat("Hello there")
    n = len(ids)
    cache = tiny_target.new_cache()
    tiny_target.forward(torch.tensor(ids), torch.arange(n), cache)
    # tree: root 100 -> 200 (-> 400), 300 (-> 500 -> 600); accept root, 300, 500
    tokens = torch.tensor([100, 200, 300, 400, 500, 600])
    parents = [-1, 0, 0, 1, 2, 4]
    from core.tree import ancestor_mask, depths_of

    depths = torch.tensor(depths_of(parents))
    tiny_target.forward(tokens, n + depths, cache, ancestor_mask(parents))
    keep_accepted(cache, n, torch.tensor([0, 2, 4]))
    fresh = tiny_target.new_cache()
    tiny_target.forward(torch.tensor(ids + [100, 300, 500]), torch.arange(n + 3), fresh)
    assert cache.get_seq_length() == n + 3
    for got, want in zip(cache.layers, fresh.layers):
        assert torch.allclose(got.keys, want.keys, atol=1e-5)
        assert torch.allclose(got.values, want.values, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_head_logits_in_every_kernel_are_the_models_own(real_target, kernel):
    """In float32 on the CPU the target's logits come from the head in the kernel timed fastest at load (a
    transposed copy, or oneDNN's kernel, can be faster at a tree's few rows); in each they are the model's own
    lm_head logits to float rounding, and the model's weight (tied to the embeddings) is left as it was."""
    weight = real_target.lm_head.weight.detach().clone()
    kept = real_target.kernels
    real_target.set_layout(kept[0], head=kernel)
    try:
        assert real_target.kernels[1] == kernel
        for rows in (1, 7, 16):
            hidden = torch.randn(rows, real_target.hidden_size, generator=torch.Generator().manual_seed(rows))
            own = real_target.lm_head(hidden).float()  # [rows, vocab]
            got = real_target.logits(hidden)
            assert got.shape == own.shape and got.dtype == torch.float32
            torch.testing.assert_close(got, own, rtol=1e-5, atol=1e-4)
            assert torch.equal(got.argmax(-1), own.argmax(-1))
    finally:
        real_target.set_layout(*kept)
    assert torch.equal(real_target.lm_head.weight, weight)
    assert real_target.lm_head.weight is real_target.embed_tokens.weight  # still tied
