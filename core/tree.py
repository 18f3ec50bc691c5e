"""Draft trees as data, and the pure functions that grow, prune and lay them out.

A ``DraftTree`` holds every candidate the drafter scored in one cycle (node 0 is the root:
the last emitted token, which the target has not yet processed). ``rerank`` keeps the best
``total_tokens`` of them; ``VerifyTree`` is that kept subtree with the buffers the target's
verification forward needs (parent index per node, depth, ancestor mask).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

BRANCHES = ("root", "dense", "moe", "experts", "contrastive")
MOE_BRANCH = "moe"  # children of the MoE mix h + w0 E0 + w1 E1


@dataclass
class Layer:
    """Candidates added to the tree by one drafting step (all children of one frontier)."""

    parents: torch.Tensor  # [c] int64, tree index of each candidate's parent
    tokens: torch.Tensor  # [c] int64, target vocabulary ids
    logp: torch.Tensor  # [c] float32, draft log-prob of the token given its parent
    scores: torch.Tensor  # [c] float32, cumulative draft log-prob from the root
    experts: torch.Tensor  # [c] int64, proposing expert on the experts/contrastive branches, else -1 (the engine's
    # records attribute MoE-branch children to the expert whose own distribution favours them)
    routing: torch.Tensor  # [c, 4] float32, (w0, w1, v0, v1) of the parent's gate; zeros when dense
    branch: str  # one of BRANCHES


@dataclass
class DraftTree:
    """All scored candidates of one cycle; index 0 is the root."""

    parents: torch.Tensor  # [m] int64, -1 for the root
    tokens: torch.Tensor  # [m] int64
    depths: torch.Tensor  # [m] int64, root 0
    logp: torch.Tensor  # [m] float32
    scores: torch.Tensor  # [m] float32
    experts: torch.Tensor  # [m] int64
    routing: torch.Tensor  # [m, 4] float32
    branches: list[str]  # [m]
    kept: torch.Tensor  # [m] bool, survived the rerank (root always)

    @property
    def size(self) -> int:
        return int(self.tokens.numel())


@dataclass
class VerifyTree:
    """The kept subtree in topological order, ready for one target forward."""

    nodes: torch.Tensor  # [n] int64, DraftTree index of each kept node (0 = root)
    tokens: torch.Tensor  # [n] int64
    parents: list[int]  # [n] index into this tree, -1 for the root
    depths: torch.Tensor  # [n] int64
    mask: torch.Tensor  # [n, n] bool, True where node i may attend to node j (ancestors and itself)

    @property
    def size(self) -> int:
        return int(self.tokens.numel())


def top_children(
    parent_scores: torch.Tensor,  # [f]
    logp: torch.Tensor,  # [f, v]
    k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k best children of each parent: (row [f*k], column [f*k], logp [f*k]), parent-major order."""
    k = min(k, logp.shape[-1])
    top_logp, top_col = logp.topk(k, dim=-1)  # [f, k]
    rows = torch.arange(logp.shape[0], device=logp.device).repeat_interleave(k)
    return rows, top_col.reshape(-1), top_logp.reshape(-1)


def select_frontier(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k best scores (ties go to the earlier candidate), in index order."""
    order = rank(scores)
    return order[: min(k, scores.numel())].sort().values


def rank(scores: torch.Tensor) -> torch.Tensor:
    """All indices, best score first; equal scores keep index order (a parent precedes its children)."""
    return torch.sort(scores, descending=True, stable=True).indices


def assemble(root_token: int, layers: list[Layer], total_tokens: int) -> DraftTree:
    """Join the root and the drafted layers into one tree and mark the ``total_tokens`` best as kept."""
    parents = torch.cat([torch.tensor([-1])] + [layer.parents for layer in layers])
    depths = [torch.zeros(1, dtype=torch.int64)]
    for depth, layer in enumerate(layers, start=1):
        depths.append(torch.full((layer.tokens.numel(),), depth, dtype=torch.int64))
    scores = torch.cat([torch.zeros(1)] + [layer.scores for layer in layers])
    kept = torch.zeros(scores.numel(), dtype=torch.bool)
    kept[0] = True
    kept[rank(scores[1:])[:total_tokens] + 1] = True
    branches = ["root"]
    for layer in layers:
        branches += [layer.branch] * layer.tokens.numel()
    return DraftTree(
        parents=parents,
        tokens=torch.cat([torch.tensor([root_token])] + [layer.tokens for layer in layers]),
        depths=torch.cat(depths),
        logp=torch.cat([torch.zeros(1)] + [layer.logp for layer in layers]),
        scores=scores,
        experts=torch.cat([torch.tensor([-1])] + [layer.experts for layer in layers]),
        routing=torch.cat([torch.zeros(1, 4)] + [layer.routing for layer in layers]),
        branches=branches,
        kept=kept,
    )


def keep_best(tree: DraftTree, n: int) -> DraftTree:
    """The same tree with only its ``n`` best kept drafted nodes still kept (the root always is).

    Scores are cumulative log-probs, so a child never outscores its parent and the n best nodes
    include their ancestors (ties keep index order, parents first).
    """
    kept = tree.kept.nonzero().flatten()[1:]  # [m] kept drafted nodes
    best = kept[rank(tree.scores[kept])[:n]]
    mask = torch.zeros_like(tree.kept)
    mask[0] = True
    mask[best] = True
    return replace(tree, kept=mask)


def kept_subtree(tree: DraftTree) -> VerifyTree:
    """The kept nodes in index order (parents before children) with remapped parents and the mask."""
    nodes = tree.kept.nonzero().flatten()  # [n]
    remap = {int(node): i for i, node in enumerate(nodes.tolist())}
    parents = [-1] + [remap[int(tree.parents[node])] for node in nodes.tolist()[1:]]
    return VerifyTree(
        nodes=nodes,
        tokens=tree.tokens[nodes],
        parents=parents,
        depths=tree.depths[nodes],
        mask=ancestor_mask(parents),
    )


def ancestor_mask(parents: list[int]) -> torch.Tensor:
    """[n, n] bool: row i is True at i and at every ancestor of i. Parents must precede children."""
    n = len(parents)
    mask = torch.eye(n, dtype=torch.bool)
    for i, parent in enumerate(parents):
        if parent >= 0:
            if parent >= i:
                raise ValueError(f"node {i} has parent {parent}: parents must come before their children")
            mask[i] |= mask[parent]
    return mask


def depths_of(parents: list[int]) -> list[int]:
    """Depth of every node (root 0). Parents must precede children."""
    depths: list[int] = []
    for parent in parents:
        depths.append(0 if parent < 0 else depths[parent] + 1)
    return depths


def children_of(parents: list[int]) -> list[list[int]]:
    """Children of every node, in index order."""
    children: list[list[int]] = [[] for _ in parents]
    for i, parent in enumerate(parents):
        if parent >= 0:
            children[parent].append(i)
    return children


def leaf_paths(parents: list[int]) -> list[list[int]]:
    """Every root-to-leaf path, as node indices, leaves in index order."""
    children = children_of(parents)
    paths = []
    for leaf, kids in enumerate(children):
        if kids:
            continue
        path = [leaf]
        while parents[path[-1]] >= 0:
            path.append(parents[path[-1]])
        paths.append(path[::-1])
    return paths
