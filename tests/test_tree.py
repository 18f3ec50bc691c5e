import pytest
import torch

from core.tree import (
    Layer, ancestor_mask, assemble, children_of, depths_of, kept_subtree, leaf_paths, rank, select_frontier,
    top_children,
)

#        0
#      /   \
#     1     2
#    / \     \
#   3   4     5
#   |
#   6
PARENTS = [-1, 0, 0, 1, 1, 2, 3]


def test_ancestor_mask_hand_made():
    mask = ancestor_mask(PARENTS)
    expected = {0: {0}, 1: {0, 1}, 2: {0, 2}, 3: {0, 1, 3}, 4: {0, 1, 4}, 5: {0, 2, 5}, 6: {0, 1, 3, 6}}
    for i, row in enumerate(mask.tolist()):
        assert {j for j, v in enumerate(row) if v} == expected[i]


def test_depths_children_paths():
    assert depths_of(PARENTS) == [0, 1, 1, 2, 2, 2, 3]
    assert children_of(PARENTS) == [[1, 2], [3, 4], [5], [6], [], [], []]
    assert leaf_paths(PARENTS) == [[0, 1, 4], [0, 2, 5], [0, 1, 3, 6]]


def test_chain_tree():
    parents = [-1, 0, 1, 2]
    assert ancestor_mask(parents).equal(torch.ones(4, 4, dtype=torch.bool).tril())
    assert leaf_paths(parents) == [[0, 1, 2, 3]]


def test_parent_after_child_is_refused():
    with pytest.raises(ValueError, match="parents must come before"):
        ancestor_mask([-1, 2, 0])


def test_top_children_parent_major():
    logp = torch.log_softmax(torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 0.0, 5.0, 1.0]]), -1)
    rows, cols, lp = top_children(torch.tensor([0.0, -1.0]), logp, 2)
    assert rows.tolist() == [0, 0, 1, 1]
    assert cols.tolist() == [0, 2, 2, 3]
    assert torch.allclose(lp, logp[rows, cols])


def test_frontier_and_rank_ties_keep_index_order():
    scores = torch.tensor([-1.0, -0.5, -0.5, -3.0])
    assert rank(scores).tolist() == [1, 2, 0, 3]
    assert select_frontier(scores, 2).tolist() == [1, 2]
    assert select_frontier(scores, 10).tolist() == [0, 1, 2, 3]


def _layer(parents, tokens, scores, branch="dense"):
    n = len(tokens)
    return Layer(
        parents=torch.tensor(parents), tokens=torch.tensor(tokens), logp=torch.tensor(scores),
        scores=torch.tensor(scores), experts=torch.full((n,), -1), routing=torch.zeros(n, 4), branch=branch,
    )


def test_assemble_rerank_keeps_best_and_their_ancestors():
    layers = [
        _layer([0, 0, 0], [10, 11, 12], [-0.1, -0.5, -2.0]),
        _layer([1, 1, 2], [20, 21, 22], [-0.2, -3.0, -0.6]),
        _layer([4, 4], [30, 31], [-0.3, -0.35]),
    ]
    tree = assemble(99, layers, total_tokens=5)
    assert tree.size == 9
    assert tree.depths.tolist() == [0, 1, 1, 1, 2, 2, 2, 3, 3]
    # best five scores: -0.1 (1), -0.2 (4), -0.3 (7), -0.35 (8), -0.5 (2)
    assert tree.kept.nonzero().flatten().tolist() == [0, 1, 2, 4, 7, 8]
    vt = kept_subtree(tree)
    assert vt.tokens.tolist() == [99, 10, 11, 20, 30, 31]
    assert vt.parents == [-1, 0, 0, 1, 3, 3]
    assert vt.depths.tolist() == [0, 1, 1, 2, 3, 3]
    assert vt.mask[4].tolist() == [True, True, False, True, True, False]
    for node in tree.kept.nonzero().flatten().tolist()[1:]:  # every kept node's parent is kept
        assert tree.kept[tree.parents[node]]
