"""Context lookup: the tokens that followed the current n-gram earlier in the context, grafted into the draft tree.

Prompt-lookup decoding guesses that text repeats: when the last n tokens (the root included) occurred
before in the prompt or the answer so far, the tokens that followed them then are a cheap draft now.
``look_up`` finds that run (or several, after a long match); ``graft`` adds each to the drafter's tree below
the root, sharing the nodes the drafter already proposed for the same tokens, so the target verifies both in
one forward. While whole runs are accepted (text being copied), ``next_run_length`` makes the next ones longer.

The grafted nodes are deterministic candidates, like the drafter's top-k children: greedy verification
accepts a token only where it is the target's argmax, and sampled verification (elimination, core.verify)
accepts each candidate with exactly the target's residual probability, so the output stays the target's own.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from core.config import TreeConfig
from core.tree import DraftTree

LOOKUP_BRANCH = "lookup"


def run_length(tokens: int, n: int, max_ngram: int, power: int = 2) -> int:
    """Tokens to look up after an n-gram match when a full ``max_ngram`` match gets ``tokens``: a shorter match
    is weaker evidence, so it gets tokens x (n / max_ngram)^power, at least one. Replaying the lookup over the
    target's own answers to training prompts (benchmarks/lookup_sim.py) found a run's k-th token accepted often
    enough to pay for its verification up to k ~ 4 after 1-token matches, ~12 after 2-token ones and past 24 after
    3-token ones, about the curve of power 2 (the default); power 0 gives every match ``tokens``."""
    return max(1, round(tokens * (n / max_ngram) ** power))


def longest_match(context: torch.Tensor, max_ngram: int, min_ngram: int = 1) -> tuple[int, torch.Tensor]:
    """(n, [h] positions that followed each earlier occurrence of the context's last n-gram) for the longest n in
    max_ngram..min_ngram that occurs; (0, empty) if none does. context: [L] int64 token ids, ending with the root."""
    n_tokens = context.numel()
    for n in range(min(max_ngram, n_tokens - 1), min_ngram - 1, -1):
        windows = context[: n_tokens - 1].unfold(0, n, 1)  # [L - n, n]: every n-gram that has a successor
        hits = (windows == context[n_tokens - n:]).all(dim=1).nonzero().flatten() + n  # [h]
        if hits.numel():
            return n, hits
    return 0, torch.zeros(0, dtype=torch.int64)


def continuations(context: torch.Tensor, hits: torch.Tensor, length: int, runs: int = 1) -> list[list[int]]:
    """Up to ``runs`` distinct runs of up to ``length`` tokens starting at ``hits``, the likeliest first: most
    recent first among those followed by ``length`` tokens (recent text is the likelier to repeat), then earliest
    first among the rest (the longer ones); a repeat of a run already taken is skipped."""
    full = hits + length <= context.numel()
    ranked = torch.cat([hits[full].flip(0), hits[~full]])  # [h]
    found: list[list[int]] = []
    for start in ranked[: 8 * runs].tolist():  # a bounded look at the best-ranked occurrences
        run = context[start: start + length].tolist()
        if run not in found:
            found.append(run)
            if len(found) == runs:
                break
    return found


def look_up(context: torch.Tensor, tree: TreeConfig, room: int, tokens: int | None = None) -> tuple[int, list[list[int]]]:
    """The lookup ``tree`` asks for at the end of ``context``: (the matched n, its runs), each run at most ``room``
    tokens long (how deep a node may go before the context ends); (0, []) when nothing matches or it is off.
    A full ``lookup_ngram`` match gets ``lookup_runs`` runs of ``tokens`` (default ``tree.lookup``; more while the
    text is being copied, see ``next_run_length``); a shorter one a single, shorter run (``run_length``, with the
    power ``tree.lookup_curve``)."""
    if not tree.lookup or room < 1:
        return 0, []
    n, hits = longest_match(context, tree.lookup_ngram)
    if not n:
        return 0, []
    full = n == tree.lookup_ngram
    short = run_length(tree.lookup, n, tree.lookup_ngram, tree.lookup_curve)
    length = min((tokens or tree.lookup) if full else short, room)
    return n, continuations(context, hits, length, tree.lookup_runs if full else 1)


def next_run_length(tree: TreeConfig, current: int, runs: list[list[int]], accepted: list[int]) -> int:
    """The run length after a full match for the next cycle: doubled, up to ``tree.lookup_max``, after a cycle
    whose ``accepted`` draft tokens took a whole ``current``-token run (the text is being copied, and a longer
    run lets one cycle copy more of it); back to ``tree.lookup`` after any other cycle."""
    copied = any(len(run) == current and accepted[: len(run)] == run for run in runs)
    return min(2 * current, max(tree.lookup_max, tree.lookup)) if copied else tree.lookup


def graft(tree: DraftTree, runs: list[list[int]]) -> DraftTree:
    """``tree`` with each run kept as a path below the root: a token a kept node already proposes at that place
    reuses the node; the rest become new ``lookup`` nodes, appended (``tree`` itself if none is)."""
    children: dict[int, dict[int, int]] = {}  # kept node -> its kept children by token
    kept = tree.kept.nonzero().flatten().tolist()
    for node in kept[1:]:
        children.setdefault(int(tree.parents[node]), {})[int(tree.tokens[node])] = node
    new_parents, new_tokens, new_depths, new_scores = [], [], [], []
    for run in runs:
        node = 0
        for token in run:
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
