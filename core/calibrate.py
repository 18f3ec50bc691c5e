"""What each of a drafter's matrices reads while drafting: the per-channel input ranges w8a8 weights need.

Rounding a matrix's inputs to 8 bits with one scale per call is coarse where a few input channels are far larger
than the rest (measured while drafting with the shipped drafters: the largest channel of ``fc``'s input is ~90x
its median channel, of the head's ~26x). ``core.quant.W8A8Linear`` evens the channels out given their ranges.
The ranges come from drafting on a fixed text: the target reads it once, and the drafter drafts trees from
several points of it, exactly as in decoding (catch-up over the target's features, then forwards over drafted
ones, the head, and for Jakiro the contrastive branch), so every matrix sees the inputs it will see.
"""
from __future__ import annotations

import torch
from torch import nn

from core.config import TreeConfig
from core.drafter import Drafter
from core.drafting import Embed, FeatureProposer
from core.quant import W8A8Linear, quantize_drafter
from core.target import TargetModel

# A request and an answer in the assistant's usual register (lists, numbers, a name): what drafting sees.
CALIBRATION_PROMPT = "Write a short note to my neighbour Anna about our trip to the mountains, with three tips."
CALIBRATION_ANSWER = (
    "Dear Anna,\n\nI hope you are well! We just came back from four days in the mountains and it was wonderful. "
    "Here are three tips if you go there this summer:\n\n1. **Start early.** The trails get busy after 10 am, "
    "and the light is best before that.\n2. **Pack layers.** It was 12°C at the top and 25°C in the valley.\n"
    "3. **Bring enough water.** There are only two springs on the 15 km loop.\n\nLet me know if you would like "
    "the map. Best wishes,\nTom"
)
ROOTS = 6  # trees drafted, from evenly spaced points of the answer


def drafting_ranges(drafter: Drafter, target: TargetModel, embed: Embed) -> dict[str, torch.Tensor]:
    """Each matrix's largest input magnitude per channel while drafting on the fixed text, by its name in a w8a8
    copy of ``drafter`` ("fc", "attn.qkv_proj", "ffn.down.experts.0", "head", ...) -> [in_features] float32.

    ``drafter`` must be bound to ``target``'s head; it is not modified (a plain w8a8 copy does the drafting)."""
    rough = quantize_drafter(drafter, "w8a8")
    ranges: dict[str, torch.Tensor] = {}

    def track(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            seen = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).abs().amax(0).float()  # [K]
            ranges[name] = torch.maximum(ranges[name], seen) if name in ranges else seen
        return hook

    hooks = [m.register_forward_hook(track(name)) for name, m in rough.named_modules() if isinstance(m, W8A8Linear)]
    try:
        proposer = FeatureProposer(rough, embed, "calibration")
        prompt = target.encode_chat(CALIBRATION_PROMPT)
        ids = (prompt + target.encode_text(CALIBRATION_ANSWER, split_special=False))[: target.max_context - 8]
        out = target.forward(torch.tensor(ids), torch.arange(len(ids)), target.new_cache(),
                             taps=drafter.cfg.feature_layers)
        features = out.drafter_features()  # [n, (K+1)H]
        tree = TreeConfig(top_k=4, depth=5, total_tokens=24, schedule="hybrid" if drafter.cfg.is_moe else "standard")
        for i in range(1, ROOTS + 1):
            root = len(prompt) + (len(ids) - len(prompt) - 1) * i // ROOTS  # draft after ids[root - 1]
            proposer.reset(ids[:root])
            proposer.propose(features[:root], torch.tensor(ids[1 : root + 1]), root, tree)
    finally:
        for h in hooks:
            h.remove()
    return ranges
