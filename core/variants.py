"""Benchmark method specs: a method name (``jakiro``, ``eagle``, a drafter folder, ``none``, ``hf-*``) and, for a
drafter, ``@variants`` joined by ``+`` that override the engine's settings for that method alone, so that settings
compare side by side in one run (``jakiro@fixed+standard``)."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from core.config import LOOKUP_TOKENS, ConfigError, EngineConfig, FallbackConfig, TreeConfig

ENGINE_METHODS = ("jakiro", "eagle", "none")
TREE_VARIANTS = ("fixed", "adaptive")  # tree size
STOP_VARIANTS = ("layerstop", "nolayerstop")  # adaptive drafting also skips a layer that cannot pay for its forward
SCHEDULE_VARIANTS = ("standard", "hybrid")  # Jakiro's last tree layer: a drafter forward, or the contrastive head
DECOUPLE_VARIANTS = ("decoupled", "coupled")  # Jakiro's siblings: from either expert's own distribution, or the mix
LOOKUP_VARIANTS = ("lookup", "nolookup", "lookupalone")  # context lookup in the tree, none, or alone when it copies
WEIGHT_VARIANTS = ("int8", "int4", "w8a8", "native")  # the drafter's weights (core.quant), or the target's dtype
COST_VARIANTS = ("costcurve", "costline")  # adaptive sizing prices trees by the measured curve or its line
FALLBACK_VARIANTS = ("fallback", "nofallback")  # decode plainly while speculation does not pay (core.policy), or not
BACKOFF_VARIANTS = ("backoff", "nobackoff")  # failed probes double the plain-decoding wait, or every wait is the first
PLAIN_VARIANTS = ("plainmeasured", "plainverify")  # the fallback prices a plain step by timed forwards or each cycle's verification
VARIANTS = (TREE_VARIANTS + STOP_VARIANTS + SCHEDULE_VARIANTS + DECOUPLE_VARIANTS + LOOKUP_VARIANTS + WEIGHT_VARIANTS + COST_VARIANTS
            + FALLBACK_VARIANTS + BACKOFF_VARIANTS + PLAIN_VARIANTS)
# lookup<N>: N tokens looked up after a full match; lookupmax<N>: up to N while copying; runs<N>: N runs;
# curve<N>: shorter matches look up lookup x (n / ngram)^N tokens; topk<N>, depth<N>, total<N>: the tree's shape
SIZED_VARIANT = re.compile(r"(lookupmax|lookup|runs|curve|topk|depth|total|window|z|ahead|margin)(\d{1,3})")
LOOKUP_FIELDS = {"lookupmax": "lookup_max", "runs": "lookup_runs", "curve": "lookup_curve"}  # these turn lookup on
SHAPE_FIELDS = {"topk": "top_k", "depth": "depth", "total": "total_tokens"}
SIZED_FIELDS = {"lookup": "lookup", **LOOKUP_FIELDS, **SHAPE_FIELDS}
# window<N>: the fallback judges the last N cycles; z<N>: it falls back only when N/10 standard errors more tokens
# per cycle would still not pay (FallbackConfig.confidence); ahead<N>: not while the generation so far runs at
# N/10 times plain decoding's speed or more (FallbackConfig.ahead); margin<N>: break-even at N/100 times plain
# decoding's speed (FallbackConfig.margin: margin90 = 0.9)
FALLBACK_FIELDS = {"window": ("window", int), "z": ("confidence", lambda n: int(n) / 10),
                   "ahead": ("ahead", lambda n: int(n) / 10), "margin": ("margin", lambda n: int(n) / 100)}
VARIANT_HELP = ", ".join(VARIANTS) + ", " + ", ".join(f"{name}<N>" for name in {**SIZED_FIELDS, **FALLBACK_FIELDS})
HF_METHODS = {"hf-generate": {}, "hf-prompt-lookup": {"prompt_lookup_num_tokens": 10}}
DEFAULT_METHODS = "jakiro,eagle,none,hf-generate,hf-prompt-lookup"


def check_methods(specs: Sequence[str]) -> list[str]:
    """Validate method names: the built-ins or an existing drafter folder, each once."""
    specs = list(specs)
    if not specs:
        raise ValueError(f"no methods to benchmark: pass --drafters, e.g. {DEFAULT_METHODS}")
    for spec in specs:
        base, variants = split_variant(spec)
        if base not in ENGINE_METHODS and base not in HF_METHODS and not Path(base).is_dir():
            raise ValueError(f"unknown method {spec!r}: use {', '.join(ENGINE_METHODS + tuple(HF_METHODS))}, "
                             "or the path of a saved drafter folder")
        if variants and (base in HF_METHODS or base == "none"):
            raise ValueError(f"{spec!r}: only drafters take a variant (@{VARIANT_HELP})")
    names = [method_name(s) for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"method {', '.join(map(repr, repeated))} is listed more than once")
    return specs


def split_variant(spec: str) -> tuple[str, tuple[str, ...]]:
    """``"jakiro@fixed+standard"`` -> ``("jakiro", ("fixed", "standard"))``: a drafter with its tree size
    (fixed or adaptive) and, for Jakiro, its schedule (standard or hybrid) set whatever the command-line flags
    say for the others, so that variants compare side by side in one run."""
    base, _, text = spec.partition("@")
    variants = tuple(text.split("+")) if text else ()
    for variant in variants:
        sized = SIZED_VARIANT.fullmatch(variant)
        if variant not in VARIANTS and not sized:
            raise ValueError(f"{spec!r}: each variant after @ (joined by +) must be one of {VARIANT_HELP}")
        if sized:  # the tree's own range check, with the method named
            try:
                if sized[1] in FALLBACK_FIELDS:
                    FallbackConfig(**fallback_field(sized))
                else:
                    TreeConfig(**{SIZED_FIELDS[sized[1]]: int(sized[2])})
            except ConfigError as error:
                raise ValueError(f"{spec!r}: {error}") from None
    groups = [TREE_VARIANTS, STOP_VARIANTS, SCHEDULE_VARIANTS, DECOUPLE_VARIANTS, WEIGHT_VARIANTS, COST_VARIANTS, FALLBACK_VARIANTS,
              BACKOFF_VARIANTS, PLAIN_VARIANTS,
              LOOKUP_VARIANTS + ("lookup<N>",),
              ("lookupmax<N>",),
              ("runs<N>",), ("curve<N>",), ("topk<N>",), ("depth<N>",), ("total<N>",), ("window<N>",), ("z<N>",),
              ("ahead<N>",), ("margin<N>",)]
    kinds = [f"{m[1]}<N>" if (m := SIZED_VARIANT.fullmatch(v)) else v for v in variants]  # lookup24 -> lookup<N>
    for group in groups:
        chosen = [v for v, kind in zip(variants, kinds) if kind in group]
        if len(chosen) > 1:
            raise ValueError(f"{spec!r}: at most one of {', '.join(group)}")
    return base, variants


def fallback_field(sized: re.Match) -> dict[str, int | float]:
    """A matched ``window<N>``, ``z<N>``, ``ahead<N>`` or ``margin<N>`` -> the FallbackConfig field it sets:
    ``{"confidence": 1.0}`` for z10, ``{"margin": 0.9}`` for margin90."""
    field, value = FALLBACK_FIELDS[sized[1]]
    return {field: value(sized[2])}


def method_name(spec: str) -> str:
    """The result key of a method: its name, or a drafter folder's name (with its variants)."""
    base, variants = split_variant(spec)
    name = base if base in ENGINE_METHODS or base in HF_METHODS else Path(base).name
    return f"{name}@{'+'.join(variants)}" if variants else name


def apply_variants(cfg: EngineConfig, variants: Sequence[str], moe: bool) -> EngineConfig:
    """``cfg`` with the tree size, layer stop, schedule, decoupling, lookup and fallback the variants name (a dense
    drafter has no schedule or experts to set)."""
    tree, fallback = cfg.tree, cfg.fallback
    for variant in variants:
        sized = SIZED_VARIANT.fullmatch(variant)
        if sized and sized[1] in FALLBACK_FIELDS:
            fallback = replace(fallback, **fallback_field(sized))
        elif sized and sized[1] == "lookup":
            tree = replace(tree, lookup=int(sized[2]), lookup_alone=False)
        elif sized and sized[1] in SHAPE_FIELDS:
            tree = replace(tree, **{SHAPE_FIELDS[sized[1]]: int(sized[2])})
        elif sized:
            tree = replace(tree, lookup=tree.lookup or LOOKUP_TOKENS, **{LOOKUP_FIELDS[sized[1]]: int(sized[2])})
        elif variant in TREE_VARIANTS:
            tree = replace(tree, adaptive=variant == "adaptive")
        elif variant in STOP_VARIANTS:
            tree = replace(tree, layer_stop=variant == "layerstop")
        elif variant in COST_VARIANTS:
            tree = replace(tree, cost_curve=variant == "costcurve")
        elif variant in FALLBACK_VARIANTS:
            fallback = replace(fallback, enabled=variant == "fallback")
        elif variant in PLAIN_VARIANTS:
            fallback = replace(fallback, plain_from_verify=variant == "plainverify")
        elif variant in BACKOFF_VARIANTS:
            default = FallbackConfig().max_cooldown
            fallback = replace(fallback, max_cooldown=max(default, fallback.cooldown) if variant == "backoff"
                               else fallback.cooldown)
        elif variant in LOOKUP_VARIANTS:
            tree = replace(tree, lookup=(tree.lookup or LOOKUP_TOKENS) if variant != "nolookup" else 0,
                           lookup_alone=variant == "lookupalone")
        elif variant in WEIGHT_VARIANTS:
            continue  # the proposer's weights, not the engine's settings (see EngineMethod)
        elif not moe:
            raise ValueError(f"@{variant}: only a MoE (Jakiro) drafter has experts to decouple and a contrastive "
                             "head to schedule")
        elif variant in DECOUPLE_VARIANTS:
            tree = replace(tree, decoupled=variant == "decoupled")
        else:
            tree = replace(tree, schedule=variant)
    return replace(cfg, tree=tree, fallback=fallback)
