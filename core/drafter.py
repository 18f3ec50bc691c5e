"""The EAGLE feature-level drafter with a dense (EAGLE-2) or Jakiro MoE feed-forward layer.

At position t the drafter reads the target's feature f_t and the embedding of the next token
e_{t+1}, and predicts the target's next feature:

    h = fc([e_{t+1}; f_t])                     # [n, 2H] -> [n, H]
    h = h + attn(h)                            # RoPE, GQA, no input norm (as EAGLE)
    g = h + ffn(norm(h))                       # ~ f_{t+1}; tokens come from the target's lm_head(g)

With ``num_layers`` = L > 1, L-1 blocks (h = h + mlp(norm(h)); h = h + attn(norm(h))) sit between the first
attention and the last FFN, which stays the only MoE layer, so both branches and the routing keep their meaning.

With ``feature_layers`` (EAGLE-3's fused features), a feature that comes from the target is first fused from
the hidden states after those inner layers and the last one:  f_t = fuse([rms(l_1); ..; rms(l_K); f_t]),
[n, (K+1)H] -> [n, H]; the drafter's own predictions are already H-wide and are read as they are.

The Jakiro FFN has two SwiGLU experts, both active, and a gate with two routing heads:
    head 1 (MoE):          w = softmax(gate[0:2]);  F_moe = w0 E0(x) + w1 E1(x)
    head 2 (contrastive):  v = softmax(gate[2:4]);  F_con = v_top E_top(x) - v_bot E_bot(x)
F_con is trained to predict the feature two positions ahead. Every forward returns the routing.
The target's embedding and lm_head are frozen inputs, never parameters of the drafter.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from core.config import ConfigError, DrafterConfig, to_dict
from core.kv import DraftCache, LayerCaches

WEIGHTS_FILE = "drafter.safetensors"
CONFIG_FILE = "drafter.json"


class DrafterMismatchError(ValueError):
    """A drafter checkpoint was trained for another target (or is damaged)."""


@dataclass
class Routing:
    """Gate decisions of the MoE layer for n positions."""

    logits: torch.Tensor  # [n, 4] raw gate logits (head 1 = [:, :2], head 2 = [:, 2:])
    weights: torch.Tensor  # [n, 2, 2]: the softmax of head 1 (MoE), then of head 2 (contrastive)
    con_top: torch.Tensor  # [n] int64, expert with the larger head-2 logit

    @property
    def moe_weights(self) -> torch.Tensor:
        return self.weights[..., 0, :]  # [n, 2]

    @property
    def con_weights(self) -> torch.Tensor:
        return self.weights[..., 1, :]  # [n, 2]


@dataclass
class DrafterOutput:
    features: torch.Tensor  # [n, H] the main prediction of f_{t+1} (F_moe, or the dense FFN)
    contrastive: torch.Tensor | None  # [n, H] prediction of f_{t+2} (MoE only, when asked)
    expert_features: torch.Tensor | None  # [n, 2, H] each expert alone (MoE only, when asked)
    routing: Routing | None  # None for the dense drafter


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.weight


class SwiGLU(nn.Module):
    """down(silu(gate x) * up x), with gate and up stacked in one matrix: one weight read, one matmul."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(hidden, 2 * intermediate, bias=False)  # rows: gate, then up
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # [.., n, I] each
        return self.down_proj(F.silu(gate) * up)


def rope_tables(positions: torch.Tensor, d: int, theta: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding's cos and sin for ``positions`` [n]: ([n, d], [n, d]) in ``like``'s dtype and device."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, device=like.device, dtype=torch.float32) / d))  # [d/2]
    angles = positions.to(like.device, torch.float32)[:, None] * inv_freq[None]  # [n, d/2]
    angles = torch.cat([angles, angles], -1)  # [n, d]
    return angles.cos().to(like.dtype), angles.sin().to(like.dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (rotate-half convention). x: [.., heads, n, d]; cos, sin: [n, d] from ``rope_tables``."""
    d = x.shape[-1]
    half = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * cos + half * sin


def causal_mask(past: int, n: int, device: torch.device) -> torch.Tensor:
    """[n, past + n] bool: every new position sees the whole past and the new positions up to itself."""
    mask = torch.ones(n, past + n, dtype=torch.bool, device=device)
    mask[:, past:] = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    return mask


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of one sequence, the query heads that share a key/value head multiplied as one block.

    q [heads, n, d], k/v [kv_heads, L, d], mask [n, L] bool (True = visible) -> [heads, n, d]. Two batched matmuls
    and a float32 softmax: at drafting sizes (n = 1-16 new positions) on a CPU, 1.5-3x faster than
    ``scaled_dot_product_attention``, which falls back to its unfused path with grouped heads and a mask."""
    kv_heads, length, d = k.shape
    heads, n = q.shape[0], q.shape[1]
    group = heads // kv_heads  # query heads per key/value head (head h reads kv head h // group)
    scores = torch.bmm(q.reshape(kv_heads, group * n, d), k.transpose(1, 2)).float() * d ** -0.5  # [kv, g*n, L]
    scores = scores.view(kv_heads, group, n, length).masked_fill(~mask, float("-inf"))
    probs = scores.softmax(-1).to(v.dtype).view(kv_heads, group * n, length)
    return torch.bmm(probs, v).view(heads, n, d)  # [heads, n, d]


class Attention(nn.Module):
    def __init__(self, cfg: DrafterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.hidden_size, q + 2 * kv, bias=False)  # rows: q, k, v (one matmul)
        self.split = (q, kv, kv)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,  # [n, H] (or [b, n, H] in training, with cache None)
        positions: torch.Tensor,  # [n]
        cache: DraftCache | None,  # mutated: gains n entries
        mask: torch.Tensor | None,  # [n, past + n] bool, True = visible; None = causal
    ) -> torch.Tensor:
        cfg = self.cfg
        lead = x.shape[:-2]
        n = x.shape[-2]
        q, k, v = self.qkv_proj(x).split(self.split, dim=-1)
        q = q.reshape(*lead, n, cfg.num_heads, cfg.head_dim).transpose(-2, -3)  # [.., heads, n, d]
        k = k.reshape(*lead, n, cfg.num_kv_heads, cfg.head_dim).transpose(-2, -3)  # [.., kv_heads, n, d]
        v = v.reshape(*lead, n, cfg.num_kv_heads, cfg.head_dim).transpose(-2, -3)
        cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, q)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        past = cache.length if cache is not None else 0
        if cache is not None:
            k, v = cache.append(k, v)  # [kv_heads, past + n, d]
        if x.dim() == 2:  # drafting: one sequence
            out = grouped_attention(q, k, v, causal_mask(past, n, x.device) if mask is None else mask)
        else:  # training: batches, causal or under a mask
            if mask is None and past > 0:
                mask = causal_mask(past, n, x.device)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None and n > 1, enable_gqa=True
            )  # [.., heads, n, d]
        return self.o_proj(out.transpose(-2, -3).reshape(*lead, n, cfg.num_heads * cfg.head_dim))


class MoEFFN(nn.Module):
    """Two SwiGLU experts (both active) and a gate with an MoE head and a contrastive head.

    Both experts and the router run in two matmuls, not seven: ``gate_up`` stacks every expert's gate and up
    rows and the router's four rows (one weight read for all of them), and ``down`` holds the experts' down
    projections side by side for one batched matmul. The arithmetic is that of separate experts."""

    def __init__(self, cfg: DrafterConfig) -> None:
        super().__init__()
        experts, hidden, inter = cfg.num_experts, cfg.hidden_size, cfg.expert_width
        self.num_experts, self.inter = experts, inter
        # rows: gate of expert 0..E-1, up of expert 0..E-1, then the router (E MoE logits + 2 contrastive)
        self.gate_up = nn.Linear(hidden, 2 * experts * inter + experts + 2, bias=False)
        self.down = nn.Parameter(torch.empty(experts, inter, hidden))  # [E, I, H]: expert e's x @ down[e]
        nn.init.uniform_(self.down, -inter ** -0.5, inter ** -0.5)  # nn.Linear's default for fan-in I
        self.register_buffer("expert_ids", torch.arange(experts), persistent=False)  # [E]
        self.register_buffer("moe_head", torch.tensor([[True], [False]]), persistent=False)  # [2 heads, 1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Routing]:
        """x: [.., n, H] -> (branches [.., n, 2, H]: F_moe then F_con, experts [.., n, 2, H], routing).

        Both heads' softmaxes, signs and sums run as one op each over a [.., n, 2 heads, 2 experts] table: a
        drafter forward has few rows, so on a CPU each op's dispatch costs more than its arithmetic."""
        E, inter = self.num_experts, self.inter
        y = self.gate_up(x)  # [.., n, 2EI + E + 2]
        gate = y[..., : E * inter].unflatten(-1, (E, inter))  # [.., n, E, I]
        up = y[..., E * inter : 2 * E * inter].unflatten(-1, (E, inter))
        logits = y[..., 2 * E * inter :].float()  # [.., n, 4]
        weights = logits.unflatten(-1, (2, E)).softmax(-1)  # [.., n, 2, E]: w (MoE head), v (contrastive head)
        act = F.silu(gate) * up  # [.., n, E, I]
        if isinstance(self.down, nn.Module):  # quantized experts (core.quant): the same call
            outs = self.down(act)  # [.., n, E, H]
        else:
            outs = torch.einsum("...ei,eih->...eh", act, self.down)  # [.., n, E, H]
        top = weights[..., 1, :].argmax(-1)  # [.., n]
        # the MoE head adds the experts; the contrastive one the top expert and minus the other
        plus = (self.expert_ids == top[..., None, None]) | self.moe_head  # [.., n, 2, E]
        coeffs = torch.where(plus, weights, -weights).to(outs.dtype)  # [.., n, 2, E]
        branches = (coeffs[..., None] * outs[..., None, :, :]).sum(-2)  # [.., n, 2, H]
        return branches, outs, Routing(logits=logits, weights=weights, con_top=top)


class Block(nn.Module):
    """A further drafter layer: a dense SwiGLU then an attention, each pre-normed and residual."""

    def __init__(self, cfg: DrafterConfig) -> None:
        super().__init__()
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg)

    def forward(self, h: torch.Tensor, positions: torch.Tensor, cache, mask: torch.Tensor | None) -> torch.Tensor:
        h = h + self.mlp(self.mlp_norm(h))
        return h + self.attn(self.attn_norm(h), positions, cache, mask)


class Drafter(nn.Module):
    """One EAGLE decoder layer over target features; dense or MoE FFN per ``cfg.ffn``."""

    def __init__(self, cfg: DrafterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        taps = len(cfg.feature_layers)
        self.fuse = nn.Linear((taps + 1) * cfg.hidden_size, cfg.hidden_size, bias=False) if taps else None
        self.fc = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.attn = Attention(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers - 1))
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.ffn: nn.Module = MoEFFN(cfg) if cfg.is_moe else SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        vocab_ids = torch.arange(cfg.draft_vocab_size or cfg.vocab_size)
        self.register_buffer("vocab_ids", vocab_ids, persistent=cfg.draft_vocab_size > 0)  # [V'] target ids
        self.head_weight: torch.Tensor | None = None  # [V', H], bound from the target, never saved
        self.head: nn.Module | None = None  # the head quantized (core.quant), used instead of head_weight when set

    @property
    def dtype(self) -> torch.dtype:
        return self.post_attention_layernorm.weight.dtype  # norms are never quantized

    @property
    def device(self) -> torch.device:
        return self.post_attention_layernorm.weight.device

    def bind_head(self, lm_head_weight: torch.Tensor) -> None:
        """Mutates self: take the target's frozen lm_head rows for the draft vocabulary."""
        if lm_head_weight.shape != (self.cfg.vocab_size, self.cfg.hidden_size):
            raise DrafterMismatchError(
                f"drafter expects an lm_head of shape {(self.cfg.vocab_size, self.cfg.hidden_size)}, "
                f"the target has {tuple(lm_head_weight.shape)}"
            )
        self.head_weight = lm_head_weight.detach()[self.vocab_ids.to(lm_head_weight.device)]
        self.head = None

    def target_features(self, stacked: torch.Tensor) -> torch.Tensor:
        """The drafter's input feature at positions the target computed. ``stacked`` [.., n, (K+1)H]: the
        hidden states after ``cfg.feature_layers`` (K of them, rms-normalised here) and the last hidden state,
        side by side (just the last, [.., n, H], for a drafter that reads no inner layers). -> [.., n, H]"""
        H, K = self.cfg.hidden_size, len(self.cfg.feature_layers)
        if stacked.shape[-1] != (K + 1) * H:
            raise ValueError(f"this drafter reads the target's layers {list(self.cfg.feature_layers)} and its last "
                             f"hidden state: {(K + 1) * H} features wide, got {stacked.shape[-1]}")
        if self.fuse is None:
            return stacked
        inner = F.rms_norm(stacked[..., : K * H].unflatten(-1, (K, H)).float(), (H,), eps=self.cfg.rms_norm_eps)
        joined = torch.cat([inner.flatten(-2), stacked[..., K * H :].float()], dim=-1)  # [.., n, (K+1)H]
        return self.fuse(joined.to(self.dtype))

    def forward(
        self,
        features: torch.Tensor,  # [.., n, H] f_t (target, through target_features) or g (drafted)
        next_embeds: torch.Tensor,  # [.., n, H] e_{t+1}
        positions: torch.Tensor,  # [n]
        cache=None,  # mutated: gains n entries; a DraftCache (or StackedKV), a LayerCaches when num_layers > 1
        mask: torch.Tensor | None = None,  # [n, past + n] bool; None = causal over the new block
        with_experts: bool = False,
    ) -> DrafterOutput:
        layer_cache = cache.__getitem__ if isinstance(cache, LayerCaches) else (lambda _: cache)
        h = self.fc(torch.cat([next_embeds.to(self.dtype), features.to(self.dtype)], dim=-1))
        h = h + self.attn(h, positions, layer_cache(0), mask)
        for i, block in enumerate(self.blocks, start=1):
            h = block(h, positions, layer_cache(i), mask)
        x = self.post_attention_layernorm(h)
        if not self.cfg.is_moe:
            return DrafterOutput(features=h + self.ffn(x), contrastive=None, expert_features=None, routing=None)
        branches, outs, routing = self.ffn(x)
        both = h[..., None, :] + branches  # [.., n, 2, H]
        experts = h[..., None, :] + outs if with_experts else None
        return DrafterOutput(features=both[..., 0, :], contrastive=both[..., 1, :], expert_features=experts,
                             routing=routing)

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """[.., H] -> [.., V'] draft log-probabilities over the draft vocabulary (float32)."""
        if self.head_weight is None:
            raise RuntimeError("call bind_head(target lm_head weight) before drafting")
        if self.head is not None:  # quantized: takes any dtype
            logits = self.head(features)  # [.., V']
        else:
            logits = F.linear(features.to(self.head_weight.dtype), self.head_weight)
        return logits.float().log_softmax(-1)

    def new_cache(self, capacity: int = 256) -> DraftCache | LayerCaches:
        """An empty KV cache for drafting: one DraftCache per attention layer."""
        caches = [DraftCache(self.cfg.num_kv_heads, self.cfg.head_dim, self.dtype, self.device, capacity)
                  for _ in range(self.cfg.num_layers)]
        return caches[0] if len(caches) == 1 else LayerCaches(caches)


def widen_experts(drafter: Drafter, width: int, seed: int = 0) -> Drafter:
    """A new drafter computing the same function with MoE experts ``width`` units wide (net2net widening).

    Each expert gains ``width - I`` units whose gate and up rows are drawn as ``nn.Linear`` draws them and
    whose down rows are zero, so every output (both branches, the routing) is unchanged until training moves
    the new units. ``drafter`` is not modified."""
    cfg = drafter.cfg
    if not cfg.is_moe:
        raise ConfigError("only a Jakiro (moe) drafter has experts to widen")
    old = cfg.expert_width
    if width < old:
        raise ConfigError(f"experts are {old} units wide; widening cannot make them {width}")
    wide = Drafter(replace(cfg, expert_size=width))
    state = dict(drafter.state_dict())
    E, H, new = cfg.num_experts, cfg.hidden_size, width - old
    rows = state["ffn.gate_up.weight"]  # [2*E*I + E + 2, H]: gates e0.., ups e0.., router
    blocks = rows[: 2 * E * old].unflatten(0, (2 * E, old))  # [2E, I, H]
    bound = H ** -0.5
    fresh = (torch.rand(2 * E, new, H, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * bound
    grown = torch.cat([blocks, fresh.to(rows)], dim=1).flatten(0, 1)  # [2E * width, H]
    state["ffn.gate_up.weight"] = torch.cat([grown, rows[2 * E * old :]])
    down = state["ffn.down"]  # [E, I, H]
    state["ffn.down"] = torch.cat([down, down.new_zeros(E, new, H)], dim=1)  # [E, width, H]
    wide.load_state_dict(state, strict=True)
    p = next(drafter.parameters())
    return wide.to(device=p.device, dtype=p.dtype)


def upcycle_experts(drafter: Drafter) -> Drafter:
    """A Jakiro (moe) drafter whose MoE branch computes exactly what the dense ``drafter`` computes (sparse
    upcycling): the dense MLP's 2I units are split into two experts of I units, each expert's down projection is
    doubled, and the router's rows start at zero, so both heads weigh the experts 0.5 / 0.5 and
    F_moe = 0.5 (2 D_0 + 2 D_1) = the dense FFN. The contrastive branch starts at E_0 - E_1 halved (nothing
    learnt) and everything else is copied. ``drafter`` is not modified."""
    cfg = drafter.cfg
    if cfg.is_moe:
        raise ConfigError("the drafter is already a Jakiro (moe) drafter; only a dense one can be upcycled")
    if cfg.intermediate_size % 2:
        raise ConfigError(f"a dense MLP of {cfg.intermediate_size} units cannot be split into two equal experts")
    width = cfg.intermediate_size // 2
    moe = Drafter(replace(cfg, ffn="moe", expert_size=width))  # num_experts is 2 for every MoE drafter
    state = dict(drafter.state_dict())
    rows = state.pop("ffn.gate_up.weight")  # [2 * 2I, H]: gate rows, then up rows; = experts' gates, then ups
    router = rows.new_zeros(2 + 2, cfg.hidden_size)  # [4, H]: MoE head, contrastive head
    state["ffn.gate_up.weight"] = torch.cat([rows, router])
    down = state.pop("ffn.down_proj.weight")  # [H, 2I]
    state["ffn.down"] = 2 * down.T.unflatten(0, (2, width))  # [2, I, H]
    moe.load_state_dict(state, strict=True)
    p = next(drafter.parameters())
    return moe.to(device=p.device, dtype=p.dtype)


def add_feature_layers(drafter: Drafter, layers: tuple[int, ...]) -> Drafter:
    """A new drafter computing the same function that also reads the target's hidden states after ``layers``:
    its fuse matrix starts as [0 .. 0 | I], passing the last hidden state through until training learns to use
    the inner ones. ``drafter`` is not modified."""
    if drafter.cfg.feature_layers:
        raise ConfigError(f"the drafter already reads layers {list(drafter.cfg.feature_layers)}")
    fused = Drafter(replace(drafter.cfg, feature_layers=tuple(layers)))
    state = dict(drafter.state_dict())
    H = drafter.cfg.hidden_size
    state["fuse.weight"] = torch.cat([torch.zeros(H, len(layers) * H), torch.eye(H)], dim=1)  # [H, (K+1)H]
    fused.load_state_dict(state, strict=True)
    p = next(drafter.parameters())
    return fused.to(device=p.device, dtype=p.dtype)


def add_layers(drafter: Drafter, num_layers: int, seed: int = 0) -> Drafter:
    """A new drafter computing the same function with ``num_layers`` attention layers: the new blocks' output
    projections (the SwiGLU's down rows, the attention's o_proj) start at zero, so each block adds nothing until
    training moves them. ``drafter`` is not modified."""
    if num_layers < drafter.cfg.num_layers:
        raise ConfigError(f"the drafter has {drafter.cfg.num_layers} layers; adding cannot make it {num_layers}")
    with torch.random.fork_rng():  # the new blocks drawn as nn.Linear draws them, the caller's RNG untouched
        torch.manual_seed(seed)
        deeper = Drafter(replace(drafter.cfg, num_layers=num_layers))
    state = {**{k: v for k, v in deeper.state_dict().items() if k.startswith("blocks.")}, **drafter.state_dict()}
    for i in range(drafter.cfg.num_layers - 1, num_layers - 1):
        state[f"blocks.{i}.mlp.down_proj.weight"] = torch.zeros_like(state[f"blocks.{i}.mlp.down_proj.weight"])
        state[f"blocks.{i}.attn.o_proj.weight"] = torch.zeros_like(state[f"blocks.{i}.attn.o_proj.weight"])
    deeper.load_state_dict(state, strict=True)
    p = next(drafter.parameters())
    return deeper.to(device=p.device, dtype=p.dtype)


def config_for_target(model_config, ffn: str, target_id: str, fingerprint: str, draft_vocab_size: int = 0,
                      expert_size: int = 0, feature_layers: tuple[int, ...] = (), num_layers: int = 1) -> DrafterConfig:
    """A drafter config matching a Hugging Face target config (attention shape, RoPE, vocabulary)."""
    hidden = int(model_config.hidden_size)
    heads = int(model_config.num_attention_heads)
    layers = int(model_config.num_hidden_layers)
    if any(not 1 <= layer < layers for layer in feature_layers):
        raise ConfigError(f"feature layers must be inner layers of the target, 1..{layers - 1}: got {list(feature_layers)}")
    rope_params = getattr(model_config, "rope_parameters", None) or {}
    theta = float(rope_params.get("rope_theta", getattr(model_config, "rope_theta", 10000.0)))
    return DrafterConfig(
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=int(getattr(model_config, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(model_config, "head_dim", None) or hidden // heads),
        intermediate_size=int(model_config.intermediate_size),
        vocab_size=int(model_config.vocab_size),
        ffn=ffn,
        rms_norm_eps=float(getattr(model_config, "rms_norm_eps", 1e-5)),
        rope_theta=theta,
        draft_vocab_size=draft_vocab_size,
        expert_size=expert_size if ffn == "moe" else 0,
        feature_layers=tuple(feature_layers),
        num_layers=num_layers,
        target_id=target_id,
        target_fingerprint=fingerprint,
    )


def save_drafter(drafter: Drafter, folder: str | Path, extra: dict | None = None) -> None:
    """Write ``drafter.safetensors`` and ``drafter.json`` (config + optional metadata) to ``folder``."""
    state = {k: v.detach().contiguous().cpu() for k, v in drafter.state_dict().items()}
    if any(v.dtype in (torch.int8, torch.uint8) for v in state.values()):  # int8 rows / packed int4 (core.quant)
        raise ValueError("this drafter's weights were quantized for inference (core.quant): save the original")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / WEIGHTS_FILE))
    meta = {"config": to_dict(drafter.cfg), **(extra or {})}
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def upgrade_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict in today's fused layout. Checkpoints saved before it (releases 1-6) hold separate q/k/v,
    gate/up and per-expert matrices: they are stacked into the fused ones, the same numbers."""
    state = dict(state)
    if "attn.q_proj.weight" in state:
        state["attn.qkv_proj.weight"] = torch.cat([state.pop(f"attn.{n}_proj.weight") for n in "qkv"])
    if "ffn.gate_proj.weight" in state:  # dense FFN
        state["ffn.gate_up.weight"] = torch.cat([state.pop("ffn.gate_proj.weight"), state.pop("ffn.up_proj.weight")])
    if "ffn.experts.0.gate_proj.weight" in state:  # MoE FFN
        experts = range(sum(1 for k in state if k.endswith(".gate_proj.weight")))
        gates = [state.pop(f"ffn.experts.{e}.gate_proj.weight") for e in experts]  # [I, H] each
        ups = [state.pop(f"ffn.experts.{e}.up_proj.weight") for e in experts]
        state["ffn.gate_up.weight"] = torch.cat(gates + ups + [state.pop("ffn.gate.weight")])
        downs = [state.pop(f"ffn.experts.{e}.down_proj.weight").T for e in experts]  # [I, H] each
        state["ffn.down"] = torch.stack(downs)  # [E, I, H]
    return state


def load_drafter(folder: str | Path, fingerprint: str | None = None, vocab_size: int | None = None) -> Drafter:
    """Load a drafter saved by ``save_drafter``; refuse one trained for another target."""
    folder = Path(folder)
    cfg_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file() or not weights_path.is_file():
        raise DrafterMismatchError(f"{folder} is not a drafter folder: it needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        meta = json.loads(cfg_path.read_text())
        cfg = DrafterConfig(**meta["config"])
    except (ValueError, KeyError, TypeError, ConfigError) as err:
        raise DrafterMismatchError(f"{cfg_path} is not a valid drafter config: {err}") from err
    if vocab_size is not None and cfg.vocab_size != vocab_size:
        raise DrafterMismatchError(
            f"drafter in {folder} was trained for a target with vocabulary {cfg.vocab_size} "
            f"({cfg.target_id or 'unknown'}), this target has {vocab_size}"
        )
    if fingerprint is not None and cfg.target_fingerprint and cfg.target_fingerprint != fingerprint:
        raise DrafterMismatchError(
            f"drafter in {folder} was trained for target {cfg.target_id!r} (embedding fingerprint "
            f"{cfg.target_fingerprint}), not for this target (fingerprint {fingerprint})"
        )
    drafter = Drafter(cfg)
    try:
        drafter.load_state_dict(upgrade_state(load_file(str(weights_path))), strict=True)
    except (RuntimeError, OSError, ValueError, KeyError, SafetensorError) as err:
        raise DrafterMismatchError(f"drafter weights in {weights_path} are damaged or do not match its config: {err}") from err
    return drafter
