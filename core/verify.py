"""Acceptance of a verified draft tree: pure functions, no models, no I/O.

Names follow the papers: p is the target's distribution at a node. Drafts are deterministic
(top-k), so the proposal is one-hot and acceptance is exact sampling from p by elimination:
at a node, try its distinct children x1..xk in order; accept xi with probability
r(xi) / sum(r), where r starts as p and every rejected child's mass is set to zero; if all
are rejected, the bonus token is drawn from the renormalised residual r.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.config import SamplingConfig
from core.tree import children_of


@dataclass
class VerifyResult:
    accepted: list[int]  # node indices of the accepted path, root (0) first
    bonus_token: int  # the target's own token after the last accepted node (always emitted)
    node_target_prob: list[float]  # [n] p(node token) under its parent's target distribution (root 0.0)


def target_probs(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """[n, V] logits -> [n, V] float32 probabilities after temperature, top-k and top-p (HF order)."""
    if sampling.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    scores = logits.float() / sampling.temperature
    if sampling.top_k > 0 and sampling.top_k < scores.shape[-1]:
        kth = scores.topk(sampling.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=False)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        drop_sorted = cumulative <= (1.0 - sampling.top_p)
        drop_sorted[..., -1] = False  # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores.softmax(-1)


def verify_tree(
    tokens: torch.Tensor,  # [n] token of every node, root first
    parents: list[int],  # [n] parent index, -1 for the root
    logits: torch.Tensor,  # [n, V] target logits at every node
    sampling: SamplingConfig,
    generator: torch.Generator | None = None,
) -> VerifyResult:
    """Walk the tree from the root with the target's own choices; the accepted path and bonus token."""
    tokens_list = tokens.tolist()
    children = children_of(parents)
    if sampling.greedy:
        choice = logits.argmax(-1).tolist()  # [n]
        node_prob = [0.0] + [1.0 if choice[parents[i]] == tokens_list[i] else 0.0 for i in range(1, len(parents))]
        path = [0]
        while True:
            nxt = next((c for c in children[path[-1]] if tokens_list[c] == choice[path[-1]]), None)
            if nxt is None:
                return VerifyResult(accepted=path, bonus_token=choice[path[-1]], node_target_prob=node_prob)
            path.append(nxt)
    probs = target_probs(logits, sampling)  # [n, V]
    node_prob = [0.0] + [float(probs[parents[i], tokens_list[i]]) for i in range(1, len(parents))]
    path = [0]
    while True:
        accepted, bonus = accept_among_children(probs[path[-1]], [tokens_list[c] for c in children[path[-1]]], generator)
        if accepted is None:
            return VerifyResult(accepted=path, bonus_token=bonus, node_target_prob=node_prob)
        path.append(children[path[-1]][accepted])


def accept_among_children(
    p: torch.Tensor,  # [V] target distribution at the node
    child_tokens: list[int],  # candidate tokens in the order they are tried (distinct)
    generator: torch.Generator | None,
) -> tuple[int | None, int]:
    """Sequential elimination: (index of the accepted child or None, the emitted token)."""
    residual = p.clone()
    for i, token in enumerate(child_tokens):
        mass = residual.sum()
        if mass <= 0:
            break
        u = torch.rand((), generator=generator, device=residual.device)
        if u * mass < residual[token]:
            return i, token
        residual[token] = 0.0
    if residual.sum() <= 0:  # every token with mass was a rejected child: cannot happen in exact arithmetic
        residual = p.clone()
    return None, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))


def sample_token(logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None) -> int:
    """One token from a single [V] logits row (greedy when temperature is 0)."""
    if sampling.greedy:
        return int(logits.argmax())
    probs = target_probs(logits[None], sampling)[0]
    return int(torch.multinomial(probs, 1, generator=generator))
