"""Drafters by name: the shipped checkpoints, any saved drafter folder, or none (plain decoding)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from core.card import DrafterCard, drafter_card, read_training
from core.drafter import Drafter, DrafterMismatchError, config_for_target, load_drafter
from core.drafting import FeatureProposer
from core.quant import int8_supported, quantize_drafter
from core.models import DEFAULT_TARGET_ALIASES
from core.target import TargetModel

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "drafters"
SHIPPED = {"jakiro": "moe", "eagle": "dense"}
log = logging.getLogger(__name__)


def drafter_folder(name: str) -> Path:
    return ASSETS / name


def build_proposer(spec: str, target: TargetModel, seed: int = 0, int8: bool | None = None) -> FeatureProposer | None:
    """``none`` -> None; ``jakiro``/``eagle`` -> the shipped drafter for the default target
    (randomly initialised when none is shipped for this target); anything else -> a drafter folder.
    ``int8``: draft with int8 weights (core.quant); None = wherever the target runs on a CPU."""
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
    if int8 is None:
        int8 = int8_supported(target.device)
    return attach(drafter, target, name, trained, int8)


def describe(spec: str, proposer: FeatureProposer) -> DrafterCard:
    """The card of a proposer ``build_proposer(spec, ...)`` made, with the training record saved in its folder."""
    folder = drafter_folder(spec) if spec in SHIPPED else Path(spec)
    meta = read_training(folder) if proposer.trained else None
    return drafter_card(proposer.drafter, proposer.name, proposer.trained, meta)


def random_drafter(target: TargetModel, ffn: str, seed: int = 0, num_layers: int = 1) -> Drafter:
    """An untrained drafter shaped for ``target`` (tests, and before a trained one exists)."""
    torch.manual_seed(seed)
    cfg = config_for_target(target.config, ffn, target.model_id, target.fingerprint(), num_layers=num_layers)
    return Drafter(cfg)


def attach(drafter: Drafter, target: TargetModel, name: str, trained: bool = True, int8: bool = False) -> FeatureProposer:
    """Put the drafter on the target's device and dtype, bind the frozen head (quantize it all with ``int8``),
    wrap it as a proposer."""
    drafter = drafter.to(device=target.device, dtype=target.dtype)
    drafter.bind_head(target.lm_head.weight)
    if int8:
        if not int8_supported(target.device):
            raise ValueError(f"int8 drafter weights run on a CPU only, the target is on {target.device.type}")
        drafter = quantize_drafter(drafter)
    return FeatureProposer(drafter, target.embed, name, trained)
