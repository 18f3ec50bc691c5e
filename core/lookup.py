"""Context lookup: the tokens that followed the current n-gram earlier in the context, grafted into the draft tree.

Prompt-lookup decoding guesses that text repeats: when the last n tokens (the root included) occurred
before in the prompt or the answer so far, the tokens that followed them then are a cheap draft now.
``find_continuation`` finds that chain; ``graft`` adds it to the drafter's tree below the root, sharing the
nodes the drafter already proposed for the same tokens, so the target verifies both in one forward.

The grafted nodes are deterministic candidates, like the drafter's top-k children: greedy verification
accepts a token only where it is the target's argmax, and sampled verification (elimination, core.verify)
accepts each candidate with exactly the target's residual probability, so the output stays the target's own.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from core.tree import DraftTree

LOOKUP_BRANCH = "lookup"


def find_continuation(context: torch.Tensor, length: int, max_ngram: int = 3, min_ngram: int = 1) -> tuple[int, list[int]]:
    """(n, up to ``length`` tokens that followed an earlier occurrence of the context's last n-gram); (0, []) if none.

    context: [L] int64 token ids, ending with the root. Longer n-grams are tried first (n = max_ngram down to
    min_ngram). Of the occurrences, the most recent one followed by ``length`` tokens wins (recent text is the
    likelier to repeat); where none is, the earliest, which is followed by the most.
    """
    n_tokens = context.numel()
    for n in range(min(max_ngram, n_tokens - 1), min_ngram - 1, -1):
        windows = context[: n_tokens - 1].unfold(0, n, 1)  # [L - n, n]: every n-gram that has a successor
        hits = (windows == context[n_tokens - n:]).all(dim=1).nonzero().flatten() + n  # [h] where each is followed
        if hits.numel():
            full = hits[hits + length <= n_tokens]
            start = int(full[-1]) if full.numel() else int(hits[0])
            return n, context[start: start + length].tolist()
    return 0, []


def graft(tree: DraftTree, chain: list[int]) -> DraftTree:
    """``tree`` with ``chain`` kept as a path below the root: a token a kept drafted node already proposes at
    that place reuses the node; the rest become new ``lookup`` nodes, appended (``tree`` itself if none is)."""
    children: dict[int, dict[int, int]] = {}  # kept node -> its kept children by token
    kept = tree.kept.nonzero().flatten().tolist()
    for node in kept[1:]:
        children.setdefault(int(tree.parents[node]), {})[int(tree.tokens[node])] = node
    node, new_parents, new_tokens, new_depths, new_scores = 0, [], [], [], []
    for token in chain:
        shared = children.get(node, {}).get(token)
        if shared is not None:
            node = shared
            continue
        index = tree.size + len(new_tokens)
        parent_depth = int(tree.depths[node]) if node < tree.size else new_depths[node - tree.size]
        parent_score = float(tree.scores[node]) if node < tree.size else new_scores[node - tree.size]
        new_parents.append(node)
        new_tokens.append(token)
        new_depths.append(parent_depth + 1)
        new_scores.append(parent_score)  # no draft probability of its own: a child never outscores its parent
        children.setdefault(node, {})[token] = index
        node = index
    added = len(new_tokens)
    if not added:
        return tree
    return replace(
        tree,
        parents=torch.cat([tree.parents, torch.tensor(new_parents, dtype=torch.int64)]),
        tokens=torch.cat([tree.tokens, torch.tensor(new_tokens, dtype=torch.int64)]),
        depths=torch.cat([tree.depths, torch.tensor(new_depths, dtype=torch.int64)]),
        logp=torch.cat([tree.logp, torch.zeros(added)]),
        scores=torch.cat([tree.scores, torch.tensor(new_scores, dtype=tree.scores.dtype)]),
        experts=torch.cat([tree.experts, torch.full((added,), -1, dtype=torch.int64)]),
        routing=torch.cat([tree.routing, torch.zeros(added, tree.routing.shape[1])]),
        branches=tree.branches + [LOOKUP_BRANCH] * added,
        kept=torch.cat([tree.kept, torch.ones(added, dtype=torch.bool)]),
    )
