"""What each expert of a Jakiro drafter does, teacher-forced on held-out training sequences (pass 0).

For every held-out answer position it reads the routing (MoE weights w, contrastive weights v and the expert the
contrastive head ranks first) and scores the next-token agreement with the target of the MoE output and of each
expert alone (h + E_e, the features the decoupled tree scores its siblings by).

    python benchmarks/expert_roles.py DRAFTER FEATURES.safetensors [--sequences 24] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.drafter import load_drafter
from core.models import DEFAULT_TARGET
from core.registry import spec_folder
from core.target import TargetModel
from core.train.data import load_features
from core.train.loop import TrainConfig, collate, drafter_inputs, holdout_split


def expert_roles(drafter, embed, data, sequences: list[int]) -> dict:
    """Routing and agreement at the answer positions of ``sequences`` (indices into ``data``)."""
    ids, mask, hidden, taps = collate(data, sequences, drafter.cfg.feature_layers)
    L = ids.shape[1]
    with torch.no_grad():
        feats, next_embeds = drafter_inputs(drafter, embed, ids, hidden, taps)  # [B, L-1, H] each
        out = drafter(feats, next_embeds, torch.arange(L - 1), with_experts=True)
    at = mask[:, 2:]  # [B, L-2] position t predicts an answer token t+2
    truth = hidden[:, 1 : L - 1][at].float()  # [n, H] f_{t+1}
    experts = out.expert_features[:, : L - 2][at]  # [n, E, H] h + E_e
    w = out.routing.moe_weights[:, : L - 2][at]  # [n, E]
    v = out.routing.con_weights[:, : L - 2][at]  # [n, 2]
    top = out.routing.con_top[:, : L - 2][at]  # [n]

    def agreement(x: torch.Tensor) -> float:  # [n, H] -> share of argmax(lm_head) equal to the target's
        return (F.linear(x, drafter.head_weight).argmax(-1) == F.linear(truth, drafter.head_weight).argmax(-1)
                ).float().mean().item()

    return {
        "positions": int(at.sum()),
        "moe_weight_mean": w.mean(0).tolist(),
        "moe_weight_std": w.std(0).tolist(),
        "contrastive_top_share": torch.bincount(top, minlength=v.shape[-1]).div(top.numel()).tolist(),
        "contrastive_top_weight_mean": v.max(-1).values.mean().item(),
        "agreement_moe": agreement(out.features[:, : L - 2][at]),
        "agreement_expert_alone": [agreement(experts[:, e]) for e in range(experts.shape[1])],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("drafter", help="jakiro or a Jakiro drafter / run folder")
    parser.add_argument("features", type=Path, help="a feature file recorded by `train features` (with its taps)")
    parser.add_argument("--sequences", type=int, default=24, help="held-out sequences to read (every 50th answer)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    target = TargetModel.load(DEFAULT_TARGET, "float32")
    drafter = load_drafter(spec_folder(args.drafter), target.fingerprint(), target.vocab_size).float()
    if not drafter.cfg.is_moe:
        raise SystemExit(f"{args.drafter} is a dense drafter: it has no experts")
    drafter.bind_head(target.lm_head.weight.float())
    data = load_features([args.features])
    holdout, _ = holdout_split(data, TrainConfig(ffn="moe"))
    result = expert_roles(drafter, target.embed_tokens, data, list(holdout)[: args.sequences])
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
