"""Speculative sampling reproduces the target's distribution (chi-square, fixed seeds)."""
import pytest
import torch
from scipy.stats import chisquare

from core.config import SamplingConfig
from core.verify import target_probs, verify_tree

V = 8
DRAWS = 12_000
# root(0) children: tokens 3, 1, 6 (tried in that order); node 1 (token 3) children: 2, 5
TOKENS = torch.tensor([0, 3, 1, 6, 2, 5])
PARENTS = [-1, 0, 0, 0, 1, 1]


def _logits(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(PARENTS), V, generator=g) * 1.5


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingConfig(temperature=1.0),
        SamplingConfig(temperature=0.7, top_k=5),
        SamplingConfig(temperature=1.3, top_p=0.8),
        SamplingConfig(temperature=1.0, top_k=6, top_p=0.9),
    ],
    ids=["t1", "t0.7-topk5", "t1.3-topp0.8", "t1-topk6-topp0.9"],
)
def test_two_token_distribution_matches_target(sampling):
    logits = _logits(7)
    p = target_probs(logits, sampling)  # [n, V]
    gen = torch.Generator().manual_seed(1234)
    counts = torch.zeros(V, V + 1)  # first token x second token (column V = no second token)
    for _ in range(DRAWS):
        r = verify_tree(TOKENS, PARENTS, logits, sampling, gen)
        emitted = [int(TOKENS[i]) for i in r.accepted[1:]] + [r.bonus_token]
        second = emitted[1] if len(emitted) > 1 else V
        counts[emitted[0], second] += 1
    # Expected joint: first ~ p_root; after an accepted child the next token ~ that node's target
    # distribution (its own child or its bonus); after a bonus token the cycle ends.
    node_of = {3: 1, 1: 2, 6: 3}
    expected = torch.zeros(V, V + 1)
    for x in range(V):
        if x in node_of:
            expected[x, :V] = p[0, x] * p[node_of[x]]
        else:
            expected[x, V] = p[0, x]
    expected *= DRAWS
    keep = expected.flatten() > 0
    assert counts.flatten()[~keep].sum() == 0, "emitted a token the target gives zero probability"
    obs, exp = counts.flatten()[keep].numpy(), expected.flatten()[keep].numpy()
    exp = exp * obs.sum() / exp.sum()
    assert chisquare(obs, exp).pvalue > 1e-3


def test_engine_two_token_distribution(tiny_target):
    """End to end on a tiny target: (prefill token, first speculative token) ~ the target's own joint."""
    from core.config import EngineConfig, TreeConfig
    from core.engine import SpecDecoder
    from tests.helpers import NO_FALLBACK, OracleProposer

    sampling = SamplingConfig(temperature=1.0, top_k=3)
    tree = TreeConfig(top_k=2, depth=2, total_tokens=4)
    prompt = tiny_target.encode_chat("Hi")
    decoder = SpecDecoder(tiny_target, OracleProposer(tiny_target, decoys=1, sibling_depths=frozenset({1})))
    with torch.inference_mode():
        dev = tiny_target.device
        p1 = target_probs(tiny_target.model(torch.tensor([prompt], device=dev)).logits[0, -1:].cpu(), sampling)[0]
        firsts = p1.nonzero().flatten().tolist()
        p2 = {x: target_probs(tiny_target.model(torch.tensor([prompt + [x]], device=dev)).logits[0, -1:].cpu(), sampling)[0]
              for x in firsts}
    draws = 600
    counts: dict[tuple[int, int], int] = {}
    for seed in range(draws):
        records = decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=2, tree=tree, sampling=sampling, seed=seed))
        pair = tuple(summarize_tokens(records))
        counts[pair] = counts.get(pair, 0) + 1
    cells = [(x, y) for x in firsts for y in p2[x].nonzero().flatten().tolist()]
    assert set(counts) <= set(cells)
    obs = [counts.get(c, 0) for c in cells]
    exp = [float(p1[x] * p2[x][y]) * draws for x, y in cells]
    assert chisquare(obs, exp).pvalue > 1e-3


def summarize_tokens(records):
    return [t["token_id"] for r in records if r["type"] == "step" for t in r["emitted"]]


def test_engine_with_context_lookup_keeps_the_target_distribution(tiny_target):
    """Looked-up chains are deterministic candidates like the drafter's top-k children, so elimination keeps the
    sampled output exact: the third token's marginal matches the target's own, enumerated over its top-3 paths."""
    from collections import defaultdict

    from core.config import EngineConfig, TreeConfig
    from core.engine import SpecDecoder
    from core.registry import attach, random_drafter
    from tests.helpers import NO_FALLBACK

    sampling = SamplingConfig(temperature=1.0, top_k=3)
    prompt = tiny_target.encode_chat("Hi")

    @torch.inference_mode()
    def probs(context):
        logits = tiny_target.model(torch.tensor([context], device=tiny_target.device)).logits[0, -1:].cpu()
        return target_probs(logits, sampling)[0]

    expected: dict[int, float] = defaultdict(float)
    p1 = probs(prompt)
    for a in p1.nonzero().flatten().tolist():
        p2 = probs(prompt + [a])
        for b in p2.nonzero().flatten().tolist():
            p3 = probs(prompt + [a, b])
            for c in p3.nonzero().flatten().tolist():
                expected[c] += float(p1[a] * p2[b] * p3[c])
    decoder = SpecDecoder(tiny_target, attach(random_drafter(tiny_target, "dense", seed=2), tiny_target, "dense"))
    tree = TreeConfig(top_k=2, depth=2, total_tokens=3, lookup=4)
    draws, counts, with_lookup = 500, defaultdict(int), 0
    for seed in range(draws):
        records = decoder.generate(prompt, EngineConfig(fallback=NO_FALLBACK, max_new_tokens=3, tree=tree,
                                                        sampling=sampling, seed=seed))
        counts[summarize_tokens(records)[2]] += 1
        with_lookup += any(n["branch"] == "lookup" for r in records if r["type"] == "step" for n in r["nodes"])
    assert with_lookup > draws // 5  # the lookup really took part
    assert set(counts) <= set(expected)
    cells = sorted(expected)
    total = sum(expected.values())  # 1 up to rounding; chisquare wants the sums equal exactly
    assert chisquare([counts[c] for c in cells], [expected[c] / total * draws for c in cells]).pvalue > 1e-3
