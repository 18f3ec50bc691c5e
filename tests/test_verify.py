"""Acceptance on synthetic logits: +100 at the token the target 'wants' at each node."""
import pytest
import torch

from core.config import SamplingConfig
from core.verify import accept_among_children, target_probs, verify_tree

V = 16
GREEDY = SamplingConfig()
#   root(0) -> a(1)=5, b(2)=6;  a -> c(3)=7;  b -> d(4)=8;  c -> e(5)=9
TOKENS = torch.tensor([1, 5, 6, 7, 8, 9])
PARENTS = [-1, 0, 0, 1, 2, 3]


def logits_wanting(wants):
    logits = torch.zeros(len(wants), V)
    for i, w in enumerate(wants):
        logits[i, w] = 100.0
    return logits


@pytest.mark.parametrize(
    "name, wants, path, bonus",
    [
        ("perfect_match", [5, 7, 0, 9, 0, 10], [0, 1, 3, 5], 10),
        ("early_mismatch", [3, 7, 8, 0, 0, 0], [0], 3),
        ("sibling_wins", [6, 7, 8, 0, 4, 0], [0, 2, 4], 4),
        ("bonus_only_after_first", [5, 2, 8, 9, 0, 0], [0, 1], 2),
    ],
)
def test_greedy_scenarios(name, wants, path, bonus):
    result = verify_tree(TOKENS, PARENTS, logits_wanting(wants), GREEDY)
    assert result.accepted == path, name
    assert result.bonus_token == bonus, name


def test_greedy_node_target_prob_marks_agreement():
    result = verify_tree(TOKENS, PARENTS, logits_wanting([6, 7, 8, 0, 4, 0]), GREEDY)
    assert result.node_target_prob == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]


def test_sampling_with_peaked_target_accepts_like_greedy():
    gen = torch.Generator().manual_seed(0)
    result = verify_tree(TOKENS, PARENTS, logits_wanting([6, 7, 8, 0, 4, 0]), SamplingConfig(temperature=1.0), gen)
    assert result.accepted == [0, 2, 4]
    assert result.bonus_token == 4


def test_target_probs_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = target_probs(logits, SamplingConfig(temperature=1.0, top_k=2))
    assert torch.allclose(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    p = target_probs(logits, SamplingConfig(temperature=1.0, top_p=0.8))
    assert torch.allclose(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    p = target_probs(logits, SamplingConfig(temperature=1.0, top_p=0.81))
    assert (p[0, :3] > 0).all() and p[0, 3] == 0
    p = target_probs(logits, SamplingConfig(temperature=1.0, top_p=0.01))
    assert p.tolist() == [[1.0, 0.0, 0.0, 0.0]]


def test_elimination_never_accepts_zero_mass_child():
    gen = torch.Generator().manual_seed(1)
    p = torch.tensor([0.0, 1.0, 0.0])
    for _ in range(50):
        idx, token = accept_among_children(p, [0, 2], gen)
        assert idx is None and token == 1
