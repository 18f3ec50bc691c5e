"""Training-time test: run the drafter on its own predicted features, as it runs when drafting.

At inference only the tree's root reads a true target feature; a node at depth d reads the
drafter's own prediction from depth d-1 and attends to the true context plus its ancestors'
drafted entries. Trained on true features alone, the drafter never sees that (exposure bias),
and acceptance falls with depth. Unrolling reproduces it (HASS / EAGLE-3 "training-time test"):

    pass 0:  input f_t            (true),        sees pass-0 keys at s <= t
    pass j:  input g^{j-1}_{t-1}  (pass j-1's prediction of f_t), sees pass-0 keys at s <= t-j
             and the pass-i key at s = t-j+i for i = 1..j (its own drafted ancestors)

Every pass predicts the same target, f_{t+1}; pass j's position t stands for a depth-(j+1) node.
"""
from __future__ import annotations

import torch


class StackedKV:
    """A batched stand-in for DraftCache: each pass's keys and values appended along the sequence axis."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None  # [B, kv_heads, passes * n, d]
        self.values: torch.Tensor | None = None
        self.length = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mutates self: add [B, kv_heads, n, d] entries; returns all of them."""
        self.keys = keys if self.keys is None else torch.cat([self.keys, keys], dim=-2)
        self.values = values if self.values is None else torch.cat([self.values, values], dim=-2)
        self.length = self.keys.shape[-2]
        return self.keys, self.values


def unroll_mask(j: int, n: int, device: torch.device | None = None) -> torch.Tensor:
    """[n, (j+1) n] bool: what pass j's position t sees among the keys of passes 0..j."""
    t = torch.arange(n, device=device)[:, None]  # [n, 1]
    s = torch.arange(n, device=device)[None, :]  # [1, n]
    blocks = [s <= t - j] + [s == t - j + i for i in range(1, j + 1)]
    return torch.cat(blocks, dim=1)


def shift_predictions(pred: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Next pass's inputs: position t reads the prediction made at t-1; position 0 keeps ``first``.

    pred: [B, n, H] predictions of f_{t+1}; first: [B, 1, H]; returns [B, n, H] inputs standing for f_t.
    """
    return torch.cat([first.to(pred.dtype), pred[:, :-1]], dim=1)
