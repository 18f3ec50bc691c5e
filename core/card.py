"""What a drafter is, in numbers a user can compare side by side: its architecture, its size and how it was trained.

``drafter_card`` is pure: it reads the drafter's config and parameters and the training metadata saved next to
its weights (``drafter.json``, written by ``python -m core train fit``); ``read_training`` reads that metadata.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from core.drafter import CONFIG_FILE, Drafter
from core.quant import own_weights, weights_name


@dataclass(frozen=True)
class Training:
    """The drafter's last training run (a warm start continues an earlier drafter: see ``warm_start``)."""

    steps: int
    tokens_per_step: int
    data_tokens: int  # tokens recorded in that run's feature files (prompts and answers)
    answer_tokens: int  # of which answers: the loss is taken on these only
    warm_start: str  # the folder it continued from; "" = trained from random weights
    upcycled: bool  # its experts began as a dense drafter's MLP (``upcycle_experts``), in this run or an earlier one
    lr: float
    unroll: int  # training-time-test passes (1 = teacher forcing only)
    heldout_top1: float | None  # final held-out agreement with the target's next token (depth 1, teacher-forced)
    heldout_contrastive: float | None  # Jakiro's contrastive head, two tokens ahead
    heldout_positions: int


@dataclass(frozen=True)
class DrafterCard:
    name: str
    trained: bool  # False: randomly initialised (lossless, but its speed means nothing)
    ffn: str  # "moe" (Jakiro) or "dense" (EAGLE-2)
    experts: int  # 1 for a dense FFN
    ffn_units: int  # intermediate units per expert (MoE) or of the one MLP (dense)
    layers: int
    feature_layers: tuple[int, ...]  # inner target layers fused into the input; () = the last hidden state only
    draft_vocab: int  # tokens the drafter proposes from
    parameters: int  # its own weights, without the target's frozen embedding and lm_head
    weights: str  # drafting with "w8a8", "int8" or "int4" weights (core.quant) or "native" ones; stored in floats
    training: Training | None


def drafter_card(drafter: Drafter, name: str, trained: bool, meta: Mapping[str, Any] | None = None) -> DrafterCard:
    """The card of ``drafter``; ``meta`` is its ``drafter.json`` (``read_training``), None when there is none."""
    cfg = drafter.cfg
    return DrafterCard(
        name=name,
        trained=trained,
        ffn=cfg.ffn,
        experts=cfg.num_experts if cfg.is_moe else 1,
        ffn_units=cfg.expert_width if cfg.is_moe else cfg.intermediate_size,
        layers=cfg.num_layers,
        feature_layers=tuple(cfg.feature_layers),
        draft_vocab=cfg.draft_vocab_size or cfg.vocab_size,
        parameters=own_weights(drafter),
        weights=weights_name(drafter),
        training=_training(meta) if trained and meta else None,
    )


def read_training(folder: str | Path) -> dict[str, Any] | None:
    """The training metadata saved with a drafter, or None when the folder has none or it cannot be read."""
    try:
        meta = json.loads((Path(folder) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "state" in meta else None


def _training(meta: Mapping[str, Any]) -> Training | None:
    state, cfg, recipe = meta.get("state") or {}, meta.get("train_config") or {}, meta.get("recipe") or {}
    final = state.get("final") or (state.get("history") or [{}])[-1]
    try:
        return Training(
            steps=int(state["step"]),
            tokens_per_step=int(cfg.get("batch_tokens", 0)),
            data_tokens=int(recipe.get("tokens", 0)),
            answer_tokens=int(recipe.get("assistant_tokens", 0)),
            warm_start=str((state.get("init") or {}).get("folder", "")),
            upcycled=any("upcycled" in origin for origin in _lineage(state.get("init"))),
            lr=float(cfg.get("lr", 0.0)),
            unroll=int(cfg.get("unroll", 1)),
            heldout_top1=_number(final.get("top1")),
            heldout_contrastive=_number(final.get("con_top1")),
            heldout_positions=int(final.get("positions") or 0),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # metadata from another tool or version: the card shows the architecture only


def _lineage(origin: Any) -> list[dict]:
    """A warm start's record and those of the runs it descends from (``previous``), newest first."""
    chain = []
    while isinstance(origin, dict) and len(chain) < 64:
        chain.append(origin)
        origin = origin.get("previous")
    return chain


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
