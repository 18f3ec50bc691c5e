"""The drafter training loop: AdamW, warmup + cosine, clipping, feature noise, resumable checkpoints.

It runs through ``accelerate`` so the same code trains on one CPU core or on several GPUs
(``accelerate launch -m core train fit ...``). Checkpoints are safetensors + JSON only.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from core.config import ConfigError
from core.drafter import (Drafter, add_feature_layers, add_layers, config_for_target, load_drafter, save_drafter,
                           upcycle_experts, widen_experts)
from core.hardware import native_bf16
from core.kv import LayerCaches
from core.target import TargetModel
from core.train.data import FeatureSet
from core.train.losses import LossParts, drafter_loss
from core.train.unroll import StackedKV, shift_predictions, unroll_mask
from core.train.vocab import ranked_vocabulary


HOLDOUT_SCHEMES = ("per-folder", "global")
PRECISIONS = ("auto", "bf16", "fp32")


ADDED_PARTS = ("fuse.", "blocks.")  # parameters a warm start may add; they learn at lr * added_lr_scale


@dataclass(frozen=True)
class TrainConfig:
    ffn: str  # "dense" (EAGLE-2) or "moe" (Jakiro)
    draft_vocab: int = 8192  # 0 = full vocabulary
    expert_size: int = 0  # moe: units per expert; 0 = a new drafter's are the hidden size (the reference), an
    # --init keeps its own; an --init with narrower experts is widened to this
    feature_layers: tuple[int, ...] = ()  # inner target layers fused into the drafter's input (EAGLE-3); an --init
    # that reads none gains them function-preserving (needs features recorded with these --taps)
    added_lr_scale: float = 1.0  # learning rate of the optional parts (fusion matrix, further layers) as a multiple
    # of lr: parts a warm start adds begin at zero output and have everything to learn
    num_layers: int = 1  # drafter attention layers; an --init with fewer gains zero-output blocks (function-preserving)
    epochs: float = 4.0
    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 1e-3
    warmup_steps: int = 60
    batch_tokens: int = 4096
    grad_clip: float = 0.5
    noise: float = 0.2  # uniform feature noise amplitude, scaled by 512 / seq_len as in EAGLE
    unroll: int = 1  # training-time test: passes over the drafter's own predictions (1 = true features only)
    unroll_weight: float = 1.0  # loss weight of each unrolled pass
    w_reg: float = 1.0
    w_ce: float = 0.1
    w_con: float = 1.0  # moe: weight of the contrastive branch's terms (t+2) against the MoE branch's (t+1), on
    # top of the reference's 0.5; 0 trains the MoE branch alone (the contrastive layer is then only measured)
    contrastive_from_pass: int = 0  # moe: the contrastive branch's loss only in unrolled passes j >= this (the
    # hybrid schedule reads it at forward depth-2 alone; earlier passes then train the MoE branch undisturbed);
    # its agreement is still measured in every pass
    holdout_every: int = 50  # every n-th sequence is held out for evaluation
    # "per-folder": every n-th answer counted within each answer folder, so appending answers keeps the held-out
    # prompts; "global": counted over all sequences in order (releases 1-3 were trained so)
    holdout_scheme: str = "per-folder"
    checkpoint_every: int = 100
    seed: int = 0
    precision: str = "auto"  # matrix products: "bf16" (mixed precision), "fp32", or "auto": bf16 where the hardware
    # has it (core.hardware), fp32 where bfloat16 would be emulated and slower

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_layers", tuple(self.feature_layers))  # a list when read from JSON
        if self.ffn not in ("dense", "moe"):
            raise ConfigError(f"ffn must be 'dense' or 'moe', got {self.ffn!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not (self.epochs > 0 and self.lr > 0 and self.batch_tokens >= 64 and self.added_lr_scale > 0):
            raise ConfigError("epochs, lr and added_lr_scale must be positive and batch_tokens >= 64")
        if not 1 <= self.num_layers <= 4:
            raise ConfigError(f"num_layers must be between 1 and 4, got {self.num_layers}")
        if not 1 <= self.unroll <= 8:
            raise ConfigError(f"unroll must be between 1 and 8 passes, got {self.unroll}")
        if self.expert_size < 0 or (self.expert_size and self.ffn != "moe"):
            raise ConfigError(f"expert_size is for --ffn moe and must be >= 0, got {self.expert_size}")
        if not (self.w_con >= 0 and math.isfinite(self.w_con)):
            raise ConfigError(f"w_con must be a finite weight >= 0, got {self.w_con}")
        if not 0 <= self.contrastive_from_pass < self.unroll:
            raise ConfigError(f"contrastive_from_pass must name one of the {self.unroll} unrolled passes (0.."
                              f"{self.unroll - 1}), got {self.contrastive_from_pass}")
        if self.holdout_scheme not in HOLDOUT_SCHEMES:
            raise ConfigError(f"holdout_scheme must be one of {HOLDOUT_SCHEMES}, got {self.holdout_scheme!r}")

    @classmethod
    def from_saved(cls, saved: dict) -> "TrainConfig":
        """The config a checkpoint was trained with; checkpoints from before ``holdout_scheme`` held out globally."""
        return cls(**{"holdout_scheme": "global", **saved})


def draft_vocabulary(data: FeatureSet, size: int, always: frozenset[int]) -> torch.Tensor:
    """The ``size`` most frequent assistant tokens (stop tokens always included), by frequency."""
    return ranked_vocabulary(Counter(data.ids[data.loss_mask].tolist()), size, sorted(always))


def make_batches(lengths: list[int], indices: list[int], batch_tokens: int, seed: int) -> list[list[int]]:
    """Length-bucketed batches of sequence indices under a padded-token budget, in shuffled order."""
    order = sorted(indices, key=lambda i: lengths[i])
    batches, cur, width = [], [], 0
    for i in order:
        w = max(width, lengths[i])
        if cur and w * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, w = [], lengths[i]
        cur.append(i)
        width = w
    if cur:
        batches.append(cur)
    random.Random(seed).shuffle(batches)
    return batches


def collate(data: FeatureSet, batch: list[int], layers: tuple[int, ...] = ()
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Right-padded (ids [B, L], mask [B, L] bool, hidden [B, L, H], taps [B, L, K*H] of ``layers`` or None)."""
    seqs = [data.sequence(i) for i in batch]
    width = max(s[0].numel() for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.int64)
    mask = torch.zeros(len(seqs), width, dtype=torch.bool)
    hidden = torch.zeros(len(seqs), width, seqs[0][2].shape[-1], dtype=seqs[0][2].dtype)
    taps = torch.zeros(len(seqs), width, len(layers) * hidden.shape[-1], dtype=hidden.dtype) if layers else None
    for row, (b, (i, m, h)) in enumerate(zip(batch, seqs)):
        ids[row, : i.numel()], mask[row, : i.numel()], hidden[row, : i.numel()] = i, m, h
        if taps is not None:
            taps[row, : i.numel()] = data.sequence_taps(b, layers)
    return ids, mask, hidden, taps


def drafter_inputs(drafter: Drafter, embed: torch.nn.Module, ids, hidden, taps) -> tuple[torch.Tensor, torch.Tensor]:
    """The drafter's pass-0 inputs at every position but the last: (f_t [B, L-1, H], e_{t+1} [B, L-1, H]),
    from recorded features (``taps`` [B, L, K*H] or None, as ``collate`` gives them)."""
    stacked = hidden if taps is None else torch.cat([taps, hidden], dim=-1)  # [B, L, (K+1)H]
    feats = drafter.target_features(stacked[:, :-1]).float()  # [B, L-1, H] f_t
    with torch.no_grad():
        next_embeds = embed(ids[:, 1:]).float()  # [B, L-1, H] e_{t+1}
    return feats, next_embeds


def step_loss(drafter: Drafter, embed: torch.nn.Module, ids, mask, hidden, taps, cfg: TrainConfig, train: bool,
              passes: int | None = None) -> list[LossParts]:
    """Forward the drafter over a batch, unrolled ``passes`` times (training-time test), and compute
    each pass's loss at the assistant positions (pass j only where a depth-(j+1) node can exist).
    ``taps`` [B, L, K*H]: the inner layers' hidden states a drafter with fused features reads (else None)."""
    passes = passes or cfg.unroll
    L = ids.shape[1]
    feats, next_embeds = drafter_inputs(drafter, embed, ids, hidden, taps)
    if train and cfg.noise > 0:
        feats = feats + (torch.rand_like(feats) - 0.5) * cfg.noise * 512 / L
    positions = torch.arange(L - 1, device=ids.device)
    kv = LayerCaches([StackedKV() for _ in range(drafter.cfg.num_layers)]) if passes > 1 else None
    parts = []
    for j in range(passes):
        attn_mask = unroll_mask(j, L - 1, ids.device) if kv is not None else None
        out = drafter(feats, next_embeds, positions, cache=kv, mask=attn_mask)
        parts.append(_pass_loss(drafter, out, mask, hidden, j, cfg))
        feats = shift_predictions(out.features, feats[:, :1])  # [B, L-1, H] the drafter's own f_t
    return parts


def _pass_loss(drafter: Drafter, out, mask, hidden, j: int, cfg: TrainConfig) -> LossParts:
    L = hidden.shape[1]
    pos1 = mask[:, 2:].clone()  # [B, L-2] position t predicts token t+2 (an assistant token)
    pos1[:, :j] = False  # pass j at t reads predictions that start at position j
    pred = out.features[:, : L - 2][pos1]
    truth = hidden[:, 1 : L - 1][pos1].float()
    pred_con = truth_con = None
    if out.contrastive is not None and L > 3:
        pos2 = mask[:, 3:].clone()  # [B, L-3] contrastive at t predicts token t+3
        pos2[:, :j] = False
        pred_con = out.contrastive[:, : L - 3][pos2]
        truth_con = hidden[:, 2 : L - 1][pos2].float()
    w_con = cfg.w_con if j >= cfg.contrastive_from_pass else 0.0
    return drafter_loss(drafter.head_weight, pred, truth, pred_con, truth_con, cfg.w_reg, cfg.w_ce, w_con)


def combined_loss(parts: list[LossParts], unroll_weight: float) -> torch.Tensor:
    """Pass 0 at full weight, every unrolled pass at ``unroll_weight``."""
    return parts[0].total + unroll_weight * sum(p.total for p in parts[1:])


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def _save_checkpoint(run: Path, drafter: Drafter, optimizer, state: dict, cfg: TrainConfig) -> None:
    """Write the drafter, optimizer and state into ``run/.partial`` and then move them into place, the
    state last, so a job killed mid-write leaves the previous checkpoint readable."""
    partial = run / ".partial"
    save_drafter(drafter, partial, extra={"train_config": asdict(cfg), "state": state})
    names = {id(p): n for n, p in drafter.named_parameters()}
    tensors = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    tensors[f"{names[id(p)]}::{key}"] = value.detach().cpu().contiguous()
    save_file(tensors, str(partial / "optimizer.safetensors"))
    (partial / "state.json").write_text(json.dumps(state, indent=2))
    for name in ("drafter.safetensors", "drafter.json", "optimizer.safetensors", "state.json"):
        os.replace(partial / name, run / name)


def warm_start(init: Path, cfg: TrainConfig, target: TargetModel) -> tuple[Drafter, dict]:
    """The trained drafter in ``init``, checked against the target and against the run's config (its FFN and
    draft vocabulary must fit what ``cfg`` asks for), and the record of where it came from."""
    drafter = load_drafter(init, target.fingerprint(), target.vocab_size)
    upcycled = not drafter.cfg.is_moe and cfg.ffn == "moe"
    if drafter.cfg.is_moe and cfg.ffn != "moe":
        raise ConfigError(f"--init {init} holds a moe drafter, this run trains --ffn {cfg.ffn}")
    size = drafter.cfg.draft_vocab_size  # at most cfg.draft_vocab: the answers may hold fewer distinct tokens
    if (size == 0) != (cfg.draft_vocab == 0) or size > cfg.draft_vocab:
        raise ConfigError(f"--init {init} drafts over {size} tokens, this run asks for "
                          f"--draft-vocab {cfg.draft_vocab}")
    saved = json.loads((init / "drafter.json").read_text()).get("state", {})
    origin = {"folder": str(init), "steps": saved.get("step")}
    if saved.get("init"):  # where the init itself came from: the lineage back to the first run
        origin["previous"] = saved["init"]
    if upcycled:  # a dense drafter's MLP split into the two experts, function-preserving
        origin["upcycled"] = {"from": "dense", "intermediate": drafter.cfg.intermediate_size}
        drafter = upcycle_experts(drafter)
    if cfg.expert_size and cfg.expert_size != drafter.cfg.expert_width:
        origin["widened"] = {"from": drafter.cfg.expert_width, "to": cfg.expert_size}
        drafter = widen_experts(drafter, cfg.expert_size, cfg.seed)
    if cfg.feature_layers != drafter.cfg.feature_layers:
        if drafter.cfg.feature_layers:
            raise ConfigError(f"--init {init} reads layers {list(drafter.cfg.feature_layers)}, this run asks for "
                              f"--feature-layers {','.join(map(str, cfg.feature_layers)) or '(none)'}")
        origin["feature_layers_added"] = list(cfg.feature_layers)
        drafter = add_feature_layers(drafter, cfg.feature_layers)
    if cfg.num_layers != drafter.cfg.num_layers:
        origin["layers_added"] = {"from": drafter.cfg.num_layers, "to": cfg.num_layers}
        drafter = add_layers(drafter, cfg.num_layers, cfg.seed)
    return drafter, origin


def _check_same_holdout(run: Path, cfg: TrainConfig) -> None:
    """A resumed run must hold out what it held out before, or it would train on its own evaluation set."""
    saved = TrainConfig.from_saved(json.loads((run / "drafter.json").read_text())["train_config"])
    if (saved.holdout_scheme, saved.holdout_every) != (cfg.holdout_scheme, cfg.holdout_every):
        raise ConfigError(f"{run} was trained with --holdout-scheme {saved.holdout_scheme} --holdout-every "
                          f"{saved.holdout_every}; resume it with the same, or train a new run")


def _load_optimizer(run: Path, drafter: Drafter, optimizer) -> None:
    tensors = load_file(str(run / "optimizer.safetensors"))
    for name, p in drafter.named_parameters():
        state = {k.split("::")[1]: v for k, v in tensors.items() if k.split("::")[0] == name}
        if state:
            optimizer.state[p] = state


@torch.no_grad()
def evaluate(drafter: Drafter, embed, data: FeatureSet, holdout: list[int], cfg: TrainConfig, passes: int = 2) -> dict:
    """Teacher-forced top-1 agreement with the target at t+1 (and t+2 for the contrastive branch), the
    distribution overlap at t+1 (``overlap``: acceptance of one sampled token at temperature 1), and top-1 at
    t+1 when reading the drafter's own previous prediction (``top1_unrolled``, a depth-2 node).

    ``passes`` > 2 also scores deeper nodes: ``top1_by_depth[j]`` is top-1 at t+1 for a depth-(j+1) node (input
    predicted j times), ``con_top1_by_depth[j]`` the contrastive branch of that node's forward at t+2 (the
    hybrid schedule's last layer at depth j+2)."""
    device = next(drafter.parameters()).device
    if embed.weight.device != device:
        raise ValueError(f"the drafter is on {device} and the target's embedding on {embed.weight.device}: "
                         "move the drafter to the target's device first")
    drafter.eval()
    lengths = [int(data.offsets[i + 1] - data.offsets[i]) for i in range(len(data))]
    layers = drafter.cfg.feature_layers
    runs = [step_loss(drafter, embed, *(None if t is None else t.to(device) for t in collate(data, b, layers)), cfg,
                      train=False, passes=max(2, passes))
            for b in make_batches(lengths, holdout, cfg.batch_tokens, 0)]
    drafter.train()
    by_pass = list(zip(*runs))  # by_pass[j]: pass j's LossParts over all batches
    first, second = by_pass[0], by_pass[1]
    with_con = [[p for p in parts if not math.isnan(p.con_top1)] for parts in by_pass]
    result = {
        "loss": _mean(first, lambda p: p.total.item()),
        "top1": _mean(first, lambda p: p.top1),
        "overlap": _mean(first, lambda p: p.overlap),
        "con_top1": _mean(with_con[0], lambda p: p.con_top1),
        "top1_unrolled": _mean(second, lambda p: p.top1),
        "positions": sum(p.positions for p in first),
    }
    if passes > 2:
        result["top1_by_depth"] = [_mean(parts, lambda p: p.top1) for parts in by_pass]
        result["con_top1_by_depth"] = [_mean(parts, lambda p: p.con_top1) for parts in with_con]
    return result


def _mean(parts: list[LossParts], value) -> float | None:
    n = sum(p.positions for p in parts)
    return sum(value(p) * p.positions for p in parts) / n if n else None


def split_holdout(groups: list[int], every: int) -> tuple[list[int], list[int]]:
    """(held-out, training) sequence indices: the sequences come in consecutive groups of the given sizes, and
    every ``every``-th sequence of each group is held out, counting from each group's first."""
    holdout, train_idx, start = [], [], 0
    for size in groups:
        for k in range(size):
            (holdout if k % every == 0 else train_idx).append(start + k)
        start += size
    return holdout, train_idx


def holdout_split(data: FeatureSet, cfg: TrainConfig) -> tuple[list[int], list[int]]:
    """The (held-out, training) split of ``data`` under ``cfg``'s holdout scheme (a feature set that does not
    say where its sequences came from is one group)."""
    groups = list(data.groups or [len(data)]) if cfg.holdout_scheme == "per-folder" else [len(data)]
    if sum(groups) != len(data):
        raise ValueError(f"the feature set's groups hold {sum(groups)} sequences but it has {len(data)}")
    return split_holdout(groups, cfg.holdout_every)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision`` itself, or for ``auto`` bf16 where ``device`` computes bfloat16 natively and fp32 elsewhere."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def train(target: TargetModel, data: FeatureSet, cfg: TrainConfig, run: Path, max_minutes: float | None = None,
          init: Path | None = None) -> dict:
    """Train (or resume) a drafter in ``run``; returns the final state with its evaluation.

    ``init``: a new run starts from this trained drafter (its weights and draft vocabulary) instead of a random
    one, with a fresh optimizer and schedule (a warm start; ignored when ``run`` resumes)."""
    precision = resolve_precision(cfg.precision, target.device)
    accelerator = Accelerator(cpu=target.device.type == "cpu", mixed_precision="bf16" if precision == "bf16" else "no")
    torch.manual_seed(cfg.seed)
    lengths = [int(data.offsets[i + 1] - data.offsets[i]) for i in range(len(data))]
    holdout, train_idx = holdout_split(data, cfg)
    resume = (run / "state.json").is_file()
    if resume:
        _check_same_holdout(run, cfg)
        drafter = load_drafter(run, target.fingerprint(), target.vocab_size)
        state = json.loads((run / "state.json").read_text())
    elif init is not None:
        drafter, origin = warm_start(init, cfg, target)
        state = {"step": 0, "epoch": 0, "batch": 0, "history": [], "init": origin}
    else:
        vocab = draft_vocabulary(data, cfg.draft_vocab, target.stop_token_ids) if cfg.draft_vocab else None
        dcfg = config_for_target(target.config, cfg.ffn, target.model_id, target.fingerprint(),
                                 draft_vocab_size=vocab.numel() if vocab is not None else 0,
                                 expert_size=cfg.expert_size, feature_layers=cfg.feature_layers,
                                 num_layers=cfg.num_layers)
        drafter = Drafter(dcfg)
        if vocab is not None:
            drafter.vocab_ids.copy_(vocab)
        state = {"step": 0, "epoch": 0, "batch": 0, "history": []}
    drafter.bind_head(target.lm_head.weight.float())
    layers = drafter.cfg.feature_layers
    if layers and (data.taps is None or not set(layers) <= set(data.tap_layers)):
        raise ConfigError(f"the drafter reads the target's layers {list(layers)}, the features hold taps of "
                          f"{list(data.tap_layers) or 'none'}: record them with `train features --taps`")
    batches_per_epoch = len(make_batches(lengths, train_idx, cfg.batch_tokens, 0)) // accelerator.num_processes
    total_steps = int(cfg.epochs * batches_per_epoch)
    added = [p for n, p in drafter.named_parameters() if n.startswith(ADDED_PARTS)]
    rest = [p for n, p in drafter.named_parameters() if not n.startswith(ADDED_PARTS)]
    groups = [{"params": rest}] + ([{"params": added, "lr": cfg.lr * cfg.added_lr_scale}] if added else [])
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    if resume:
        _load_optimizer(run, drafter, optimizer)
    schedule, start = _lr_lambda(total_steps, cfg.warmup_steps), state["step"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s + start))
    drafter, optimizer = accelerator.prepare(drafter, optimizer)
    model = accelerator.unwrap_model(drafter)
    embed = target.embed_tokens
    t0 = time.time()
    bar = tqdm(total=total_steps, initial=state["step"], desc=f"train {cfg.ffn}", mininterval=5)
    stop = False
    while state["step"] < total_steps and not stop:
        batches = make_batches(lengths, train_idx, cfg.batch_tokens, cfg.seed + state["epoch"])
        # each process takes every n-th batch (one process on a CPU); DDP averages the gradients
        batches = batches[accelerator.process_index :: accelerator.num_processes]
        for b in batches[state["batch"]:]:
            ids, mask, hidden, taps = collate(data, b, layers)
            with accelerator.autocast():
                parts = step_loss(model, embed, ids.to(accelerator.device), mask.to(accelerator.device),
                                  hidden.to(accelerator.device), None if taps is None else taps.to(accelerator.device),
                                  cfg, train=True)
                loss = combined_loss(parts, cfg.unroll_weight)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(drafter.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", top1=f"{parts[0].top1:.2f}", con=f"{parts[0].con_top1:.2f}",
                            deep=f"{parts[-1].top1:.2f}")
            if state["step"] % cfg.checkpoint_every == 0 or state["step"] >= total_steps:
                if accelerator.is_main_process:
                    state["history"].append({"step": state["step"], "precision": precision,
                                             **evaluate(model, embed, data, holdout[:60], cfg)})
                    _save_checkpoint(run, model, optimizer, state, cfg)
                    bar.write(json.dumps(state["history"][-1]))
            if state["step"] >= total_steps or (max_minutes and time.time() - t0 > max_minutes * 60):
                stop = True
                break
        else:
            state["epoch"] += 1
            state["batch"] = 0
    bar.close()
    state["done"] = state["step"] >= total_steps
    state.pop("final", None)  # an earlier stop's evaluation no longer describes these weights
    if accelerator.is_main_process:  # saved before the final evaluation (minutes on one core): a job stopped
        _save_checkpoint(run, model, optimizer, state, cfg)  # during it keeps every step it trained
    state["final"] = evaluate(model, embed, data, holdout, cfg)
    if accelerator.is_main_process:
        _save_checkpoint(run, model, optimizer, state, cfg)
    return state
