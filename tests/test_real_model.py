"""The real default target (SmolLM2-135M-Instruct, float32): lossless with the shipped drafters."""
import pytest
import torch

from tests.helpers import NO_FALLBACK

from core.config import LOOKUP_MAX, EngineConfig, TreeConfig
from core.engine import SpecDecoder
from core.layout import KERNELS
from core.registry import build_proposer
from core.trace import summarize

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain what a Python list comprehension is.",
    "Give me three tips for better sleep.",
    "If I have 12 apples and eat 5, how many are left?",
]


@pytest.fixture(scope="module")
def plain(real_target):
    cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=64)
    return {p: summarize(SpecDecoder(real_target).generate(p, cfg, detail=False)).text_tokens for p in PROMPTS}


def test_sanity_answer(real_target, plain):
    assert "Paris" in real_target.decode(plain[PROMPTS[0]])


def test_plain_matches_hf_generate(real_target, plain):
    ids = real_target.encode_chat(PROMPTS[1])
    with torch.inference_mode():
        out = real_target.model.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False,
                                         eos_token_id=sorted(real_target.stop_token_ids), pad_token_id=2)
    assert plain[PROMPTS[1]] == out[0, len(ids):].tolist()


def test_the_other_kernels_decode_the_same_tokens(real_target, plain):
    kept = real_target.kernels  # timed at load: the fastest on this machine
    cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=64)
    try:
        for kernel in (k for k in KERNELS if k != kept[0]):
            real_target.set_layout(kernel, head=kernel)
            for prompt in PROMPTS[:2]:
                summary = summarize(SpecDecoder(real_target).generate(prompt, cfg, detail=False))
                assert summary.text_tokens == plain[prompt], (kernel, prompt)
    finally:
        real_target.set_layout(*kept)


@pytest.mark.parametrize("drafter, schedule", [("jakiro", "hybrid"), ("eagle", "standard")])
def test_shipped_drafters_are_lossless(real_target, plain, drafter, schedule):
    decoder = SpecDecoder(real_target, build_proposer(drafter, real_target))
    cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=64, tree=TreeConfig(schedule=schedule))
    summaries = [summarize(decoder.generate(prompt, cfg, detail=False)) for prompt in PROMPTS]
    for prompt, summary in zip(PROMPTS, summaries):
        assert summary.text_tokens == plain[prompt], prompt
    # and trained: an untrained drafter's tau here is ~1.0 (release 2 here: jakiro 1.85, eagle 1.91)
    tau = sum(s.new_tokens for s in summaries) / sum(s.target_forwards for s in summaries)
    assert tau > 1.6, f"{drafter}: tau {tau:.2f}"


def test_context_lookup_is_lossless_and_pays_on_copying(real_target):
    """Asked to repeat a passage, the target copies it: looked-up chains are accepted, tau rises, output unchanged."""
    prompt = ("Repeat this paragraph exactly, word for word: The quick brown fox jumps over the lazy dog while the "
              "old farmer watches from the porch of his red wooden house. Later that evening, the farmer's daughter "
              "walks down to the river with a basket of apples and a small lantern, singing an old song.")
    cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=64)
    plain_tokens = summarize(SpecDecoder(real_target).generate(prompt, cfg, detail=False)).text_tokens
    decoder = SpecDecoder(real_target, build_proposer("eagle", real_target))
    taus = {}
    for lookup in (0, 10):
        tree = TreeConfig(lookup=lookup, lookup_max=LOOKUP_MAX)  # the default: runs grow while copying
        records = decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=64, tree=tree),
                                   detail=False)
        summary = summarize(records)
        assert summary.text_tokens == plain_tokens
        taus[lookup] = summary.tau
        copied = sum(t["source"] == "lookup" for r in records if r["type"] == "step" for t in r["emitted"])
        assert (copied > 0) == (lookup > 0)
    # measured (release 11, float32, 52 copied tokens): 1.73 -> 8.67 with int8 drafter weights, 1.79 -> 8.67 with
    # float32 ones. A one-sentence passage (this test until session 14) copied in ~17 tokens, where one cycle more or
    # less moved tau by 0.4.
    assert taus[10] > 2 * taus[0], taus
