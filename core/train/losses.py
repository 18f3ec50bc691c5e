"""The drafter training loss (JAKIRO.md section 5), as a pure function of tensors.

Position t reads (f_t, e_{t+1}).  F_moe_t is trained toward f_{t+1} and toward the target's
distribution p*_{t+1} = softmax(lm_head(f_{t+1})) over the next token; the contrastive
output F_con_t (Jakiro only) toward f_{t+2} and p*_{t+2}, with half the weight:

    L = w_reg * (SmoothL1(F_moe, f+1) + 0.5 w_con SmoothL1(F_con, f+2))
      + w_ce  * (CE(q_moe, p*+1) + 0.5 w_con CE(q_con, p*+2))

(w_con = 1 is the reference; 0 leaves the contrastive branch out of this pass's loss and only measures it.)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossParts:
    total: torch.Tensor  # scalar
    reg: float
    ce: float
    top1: float  # draft argmax == target argmax at t+1, over the draft vocabulary
    con_top1: float  # same for the contrastive branch at t+2 (nan when absent)
    positions: int
    overlap: float = float("nan")  # mean sum_v min(p*, q) over the draft vocabulary at t+1: the chance that one
    # token sampled from the drafter is accepted at temperature 1 (the target's mass outside V' ignored)


def soft_ce(draft_logits: torch.Tensor, target_logits: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Mean cross-entropy of [n, V'] draft logits against the softmax of [n, V'] target logits, and the mean
    overlap sum_v min(p, q) of the two distributions (from the same softmaxes; no gradient)."""
    p = target_logits.float().softmax(-1)
    log_q = draft_logits.float().log_softmax(-1)
    with torch.no_grad():
        overlap = torch.minimum(p, log_q.exp()).sum(-1).mean().item()
    return -(p * log_q).sum(-1).mean(), overlap


def drafter_loss(
    head: torch.Tensor,  # [V', H] frozen lm_head rows of the draft vocabulary
    pred: torch.Tensor,  # [n, H] F_moe at the loss positions
    truth: torch.Tensor,  # [n, H] f_{t+1}
    pred_con: torch.Tensor | None = None,  # [m, H] F_con at its loss positions
    truth_con: torch.Tensor | None = None,  # [m, H] f_{t+2}
    w_reg: float = 1.0,
    w_ce: float = 0.1,
    w_con: float = 1.0,
) -> LossParts:
    q = F.linear(pred.to(head.dtype), head)  # [n, V']
    with torch.no_grad():
        t = F.linear(truth.to(head.dtype), head)
    reg = F.smooth_l1_loss(pred.float(), truth.float())
    ce, overlap = soft_ce(q, t)
    top1 = (q.argmax(-1) == t.argmax(-1)).float().mean().item()
    con_top1 = float("nan")
    if pred_con is not None and truth_con is not None and pred_con.shape[0] > 0:
        qc = F.linear(pred_con.to(head.dtype), head)
        with torch.no_grad():
            tc = F.linear(truth_con.to(head.dtype), head)
        reg = reg + 0.5 * w_con * F.smooth_l1_loss(pred_con.float(), truth_con.float())
        ce = ce + 0.5 * w_con * soft_ce(qc, tc)[0]
        con_top1 = (qc.argmax(-1) == tc.argmax(-1)).float().mean().item()
    total = w_reg * reg + w_ce * ce
    return LossParts(total=total, reg=reg.item(), ce=ce.item(), top1=top1, con_top1=con_top1,
                     positions=pred.shape[0], overlap=overlap)
