"""The draft vocabulary: which of the target's tokens a drafter scores.

A drafter predicts the target's next feature; its logits are the target's own frozen lm_head rows applied to
that feature, restricted to the draft vocabulary (the most frequent answer tokens). The rows are not trained, so
the vocabulary of a trained drafter can be picked again, without training, from more answers than it was first
built from: answers added since then bring tokens (subjects, names, numbers) the first list did not hold.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch

from core.drafter import Drafter


def ranked_vocabulary(counts: Counter, size: int, always: Iterable[int]) -> torch.Tensor:
    """[size] token ids: ``always`` (the stop tokens) first, then the most frequent tokens of ``counts``."""
    first = list(dict.fromkeys(always))
    seen = set(first)
    ids = first + [t for t, _ in counts.most_common() if t not in seen]
    return torch.tensor(ids[:size], dtype=torch.int64)


def training_token_counts(answer_dirs: Iterable[Path], holdout_every: int = 50) -> Counter:
    """Answer-token counts over the answer shards, leaving out the held-out answers (every ``holdout_every``-th
    of each folder, as the training loop's per-folder holdout does), so held-out tests stay unseen."""
    counts: Counter = Counter()
    for directory in answer_dirs:
        index = 0
        for shard in sorted(Path(directory).glob("shard-*.jsonl")):
            for line in shard.open():
                if index % holdout_every:
                    counts.update(json.loads(line)["answer_ids"])
                index += 1
    return counts


def coverage(counts: Counter, ids: torch.Tensor) -> float:
    """Share of the counted tokens that the vocabulary ``ids`` holds."""
    total = sum(counts.values())
    return sum(counts[t] for t in set(ids.tolist())) / total if total else 0.0


def with_vocabulary(drafter: Drafter, ids: torch.Tensor) -> Drafter:
    """A copy of ``drafter`` (same weights) that scores the tokens ``ids`` [V'] instead of its own."""
    if drafter.cfg.draft_vocab_size == 0:
        raise ValueError("this drafter scores the full vocabulary; there is no draft vocabulary to pick")
    if ids.numel() == 0 or int(ids.max()) >= drafter.cfg.vocab_size or int(ids.min()) < 0:
        raise ValueError(f"draft vocabulary ids must lie in [0, {drafter.cfg.vocab_size})")
    fresh = Drafter(replace(drafter.cfg, draft_vocab_size=ids.numel()))
    state = {k: v for k, v in drafter.state_dict().items() if k != "vocab_ids"}
    fresh.load_state_dict({**state, "vocab_ids": ids.to(torch.int64)}, strict=True)
    return fresh
