"""KV caches: rolling back the target's cache to an accepted path, and the drafter's own cache.

The target uses a stock ``transformers`` DynamicCache; after verification only the accepted
tree nodes are kept (gathered to the front of the tree block, the rest cropped). The drafter
uses ``DraftCache``, a preallocated buffer that grows by doubling, so appending is a copy of
the new entries only.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache


@torch.inference_mode()
def keep_accepted(cache: DynamicCache, prefix_len: int, slots: torch.Tensor) -> None:
    """Mutates ``cache``: keep the first ``prefix_len`` entries, then the tree entries ``slots``.

    slots: [k] int64, indices into the tree block (0 = the first entry after the prefix), in order.
    Only the tree block is copied; the prefix is left in place.
    """
    k = int(slots.numel())
    for layer in cache.layers:
        if not layer.is_initialized:
            continue
        idx = slots.to(layer.keys.device) + prefix_len
        layer.keys[:, :, prefix_len : prefix_len + k] = layer.keys[:, :, idx]
        layer.values[:, :, prefix_len : prefix_len + k] = layer.values[:, :, idx]
        layer.keys = layer.keys[:, :, : prefix_len + k]
        layer.values = layer.values[:, :, : prefix_len + k]


class LayerCaches:
    """One cache per attention layer of a deeper drafter (each a DraftCache, or a StackedKV in training), all
    holding the same positions and cropped together."""

    def __init__(self, caches: list) -> None:
        self.caches = caches

    def __getitem__(self, layer: int):
        return self.caches[layer]

    @property
    def length(self) -> int:
        return self.caches[0].length

    def crop(self, length: int) -> None:
        """Mutates every layer's cache: forget every entry at index >= ``length``."""
        for cache in self.caches:
            cache.crop(length)


class DraftCache:
    """Keys and values of the drafter's single attention layer.

    keys/values: [kv_heads, capacity, head_dim]; ``length`` entries are valid.
    """

    def __init__(self, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device, capacity: int = 256):
        self.keys = torch.empty(kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.values = torch.empty_like(self.keys)
        self.length = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mutates self: add [kv_heads, n, head_dim] entries; returns all valid keys and values."""
        n = keys.shape[1]
        if self.length + n > self.keys.shape[1]:
            self._grow(self.length + n)
        self.keys[:, self.length : self.length + n] = keys
        self.values[:, self.length : self.length + n] = values
        self.length += n
        return self.keys[:, : self.length], self.values[:, : self.length]

    def crop(self, length: int) -> None:
        """Mutates self: forget every entry at index >= ``length``."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot crop a draft cache of length {self.length} to {length}")
        self.length = length

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self.keys.shape[1])
        keys = torch.empty(self.keys.shape[0], capacity, self.keys.shape[2], dtype=self.keys.dtype, device=self.keys.device)
        values = torch.empty_like(keys)
        keys[:, : self.length] = self.keys[:, : self.length]
        values[:, : self.length] = self.values[:, : self.length]
        self.keys, self.values = keys, values
