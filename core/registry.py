"""Drafters by name: the shipped checkpoints, any saved drafter folder, or none (plain decoding)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from core.calibrate import drafting_ranges
from core.card import DrafterCard, drafter_card, read_training
from core.drafter import Drafter, DrafterMismatchError, config_for_target, load_drafter
from core.drafting import FeatureProposer
from core.quant import quantize_drafter, resolve_weights
from core.models import DEFAULT_TARGET_ALIASES
from core.target import TargetModel

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "drafters"
SHIPPED = {"jakiro": "moe", "eagle": "dense"}
log = logging.getLogger(__name__)


def drafter_folder(name: str) -> Path:
    return ASSETS / name


def spec_folder(spec: str) -> Path:
    """The folder a drafter spec names: a shipped drafter's (``jakiro``, ``eagle``) or the path itself."""
    return drafter_folder(spec) if spec in SHIPPED else Path(spec)


def build_proposer(spec: str, target: TargetModel, seed: int = 0, weights: str = "auto") -> FeatureProposer | None:
    """``none`` -> None; ``jakiro``/``eagle`` -> the shipped drafter for the default target
    (randomly initialised when none is shipped for this target); anything else -> a drafter folder.
    ``weights``: "int8"/"int4" drafts with quantized weights (core.quant), "native" in the target's dtype, "auto"
    as ``core.quant.resolve_weights`` decides for the target's device."""
    if spec == "none":
        return None
    trained = True
    if spec in SHIPPED:
        folder = drafter_folder(spec)
        if (folder / "drafter.json").is_file() and target.model_id in DEFAULT_TARGET_ALIASES:
            drafter = load_drafter(folder, target.fingerprint(), target.vocab_size)
        else:
            log.warning("no trained %s drafter for %s: using a randomly initialised one (lossless, but slow)",
                        spec, target.model_id)
            drafter = random_drafter(target, SHIPPED[spec], seed)
            trained = False
        name = spec
    else:
        folder = Path(spec)
        if not folder.is_dir():
            raise DrafterMismatchError(
                f"unknown drafter {spec!r}: use none, jakiro, eagle, or the path of a saved drafter folder"
            )
        drafter = load_drafter(folder, target.fingerprint(), target.vocab_size)
        name = folder.name
    return attach(drafter, target, name, trained, weights)


def describe(spec: str, proposer: FeatureProposer) -> DrafterCard:
    """The card of a proposer ``build_proposer(spec, ...)`` made, with the training record saved in its folder."""
    folder = spec_folder(spec)
    meta = read_training(folder) if proposer.trained else None
    return drafter_card(proposer.drafter, proposer.name, proposer.trained, meta)


def random_drafter(target: TargetModel, ffn: str, seed: int = 0, num_layers: int = 1) -> Drafter:
    """An untrained drafter shaped for ``target`` (tests, and before a trained one exists)."""
    torch.manual_seed(seed)
    cfg = config_for_target(target.config, ffn, target.model_id, target.fingerprint(), num_layers=num_layers)
    return Drafter(cfg)


def attach(drafter: Drafter, target: TargetModel, name: str, trained: bool = True, weights: str = "native"
           ) -> FeatureProposer:
    """Put the drafter on the target's device and dtype, bind the frozen head, quantize it all unless ``weights``
    resolves to "native" (see ``build_proposer``), wrap it as a proposer. With w8a8 weights the drafter computes
    in float32 between its integer matmuls (the kernel takes float32: bfloat16 would only add conversions), and
    each matrix's input channels are evened out by their ranges while drafting a fixed text (core.calibrate)."""
    weights = resolve_weights(weights, target.device)
    drafter = drafter.to(device=target.device, dtype=torch.float32 if weights == "w8a8" else target.dtype)
    drafter.bind_head(target.lm_head.weight)
    if weights != "native":
        ranges = drafting_ranges(drafter, target, target.embed) if weights == "w8a8" else None
        drafter = quantize_drafter(drafter, weights, ranges)
    return FeatureProposer(drafter, target.embed, name, trained)
