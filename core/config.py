"""Frozen, validated configuration records for the engine, the drafters and the sampler.

Every config is a frozen dataclass that checks itself in ``__post_init__`` and raises
``ConfigError`` with a message a user can act on. ``to_dict`` gives the plain-data form that
is saved in traces and benchmark results.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

FfnKind = Literal["dense", "moe"]
Schedule = Literal["standard", "hybrid"]
DTYPES = ("float32", "bfloat16", "float16")
DTYPE_CHOICES = (*DTYPES, "auto")  # what --dtype takes; auto: bfloat16 where native, else float32 (core.hardware)
MAX_TREE_NODES = 512


class ConfigError(ValueError):
    """A setting is out of range or settings contradict each other."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


LOOKUP_TOKENS = 10  # context-lookup run length where the CLI, app and bench turn lookup on
LOOKUP_RUNS = 1  # runs looked up after a full n-gram match, there
LOOKUP_MAX = 32  # the longest runs there, while the text is being copied (tuned: benchmarks/RESULTS.md)
MAX_LOOKUP = 64  # the longest run any setting asks for
DRAFTER_WEIGHTS = ("auto", "int8", "int4", "w8a8", "native")  # --drafter-weights (core.quant.resolve_weights)
AUTO_DRAFTER_WEIGHTS = ("w8a8", "int8")  # what auto means on a CPU: the first one it supports (benchmarks/RESULTS.md)
WEIGHTS_HELP = ("the drafter's weights while drafting: int8 (half the bytes a forward reads), int4 (a quarter), "
                "w8a8 (int8 weights and 8-bit activations: FBGEMM's integer kernel, x86 CPUs), native (the target's "
                "dtype) or auto (w8a8 on an x86 CPU, int8 on other CPUs, native on a GPU); core.quant")


@dataclass(frozen=True)
class TreeConfig:
    """Shape of the EAGLE-2 dynamic draft tree.

    top_k: children per expanded node and width of the frontier.
    depth: drafted tree layers below the root (the most draft tokens one cycle can accept).
    total_tokens: drafted nodes kept after the final rerank (the root is extra).
    schedule: "standard" runs one drafter forward per layer; "hybrid" (Jakiro) takes the last
        layer from the contrastive branch and skips that forward (needs an MoE drafter, depth >= 2).
    decoupled: siblings come from the union of the experts' own distributions (MoE drafters only).
    adaptive: verify, of the total_tokens best nodes, only as many as pay on this machine: the
        drafter's path probabilities (calibrated on what was accepted) against the measured cost of
        verifying each extra node (see core.sizing); total_tokens is then the cap.
    layer_stop: adaptive trees also skip a drafter forward whose layer is not expected to accept enough
        tokens to pay for it (see core.sizing.layer_gain); off, drafting stops only once no frontier node
        could pay for its own verification.
    lookup: also graft up to this many tokens that followed the context's last ``lookup_ngram`` tokens
        earlier in the prompt or answer (prompt lookup inside the tree, see core.lookup); 0 = off. A
        shorter match (n-grams down to 1 are tried next) gets fewer: lookup x (n / lookup_ngram)^lookup_curve.
        These nodes come on top of total_tokens and may reach below ``depth`` (never past the context).
    lookup_curve: the power p of that shortening, lookup x (n / lookup_ngram)^p; 0 gives every match
        ``lookup`` tokens.
    lookup_max: while the text is being copied, look up more: after a cycle that accepted a whole run,
        the next full match's runs are twice as long, up to this many tokens (back to ``lookup`` after a
        cycle that did not); at most ``lookup`` (the default, 0) turns the growth off.
    lookup_ngram: the longest n-gram matched for the lookup.
    lookup_runs: after a full ``lookup_ngram`` match, look up this many distinct runs (the most recent
        occurrences first); a shorter match looks up one.
    lookup_alone: when the longest n-gram matched and a full ``lookup``-token run followed it, verify
        the looked-up runs alone and skip drafting this cycle (prompt lookup's cost where text is copied).
    cost_curve: adaptive trees price a verification by the measured costs interpolated between the timed sizes
        (core.sizing); off, by the least-squares line through them.
    """

    top_k: int = 4
    depth: int = 5
    total_tokens: int = 24
    schedule: Schedule = "standard"
    decoupled: bool = False
    adaptive: bool = False
    layer_stop: bool = True
    lookup: int = 0
    lookup_max: int = 0
    lookup_ngram: int = 3
    lookup_curve: int = 2
    lookup_runs: int = 1
    lookup_alone: bool = False
    cost_curve: bool = False

    def __post_init__(self) -> None:
        _require(_is_int(self.top_k) and 1 <= self.top_k <= 64, f"tree top_k must be an integer in 1..64, got {self.top_k!r}")
        _require(_is_int(self.depth) and 1 <= self.depth <= 32, f"tree depth must be an integer in 1..32, got {self.depth!r}")
        _require(
            _is_int(self.total_tokens) and 1 <= self.total_tokens <= MAX_TREE_NODES,
            f"tree total_tokens must be an integer in 1..{MAX_TREE_NODES}, got {self.total_tokens!r}",
        )
        _require(_is_int(self.lookup) and 0 <= self.lookup <= MAX_LOOKUP,
                 f"tree lookup must be an integer in 0..{MAX_LOOKUP}, got {self.lookup!r}")
        _require(_is_int(self.lookup_max) and 0 <= self.lookup_max <= MAX_LOOKUP,
                 f"tree lookup_max must be an integer in 0..{MAX_LOOKUP}, got {self.lookup_max!r}")
        _require(_is_int(self.lookup_ngram) and 1 <= self.lookup_ngram <= 8,
                 f"tree lookup_ngram must be an integer in 1..8, got {self.lookup_ngram!r}")
        _require(_is_int(self.lookup_curve) and 0 <= self.lookup_curve <= 4,
                 f"tree lookup_curve must be an integer in 0..4, got {self.lookup_curve!r}")
        _require(_is_int(self.lookup_runs) and 1 <= self.lookup_runs <= 8,
                 f"tree lookup_runs must be an integer in 1..8, got {self.lookup_runs!r}")
        _require(isinstance(self.layer_stop, bool), f"tree layer_stop must be true or false, got {self.layer_stop!r}")
        _require(isinstance(self.lookup_alone, bool), f"tree lookup_alone must be true or false, got {self.lookup_alone!r}")
        _require(isinstance(self.cost_curve, bool), f"tree cost_curve must be true or false, got {self.cost_curve!r}")
        _require(self.schedule in ("standard", "hybrid"), f"tree schedule must be 'standard' or 'hybrid', got {self.schedule!r}")
        _require(
            self.schedule != "hybrid" or self.depth >= 2,
            "the hybrid schedule takes the last tree layer from the contrastive branch, so it needs depth >= 2",
        )


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen from the target's distribution.

    temperature 0 is greedy decoding; top_p in (0, 1] and top_k >= 0 (0 = off) filter the
    distribution before sampling, exactly as the target's own sampler would.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        t = self.temperature
        _require(isinstance(t, (int, float)) and not isinstance(t, bool), f"temperature must be a number, got {t!r}")
        _require(math.isfinite(t) and 0.0 <= t <= 100.0, f"temperature must be a finite number in [0, 100], got {t!r}")
        p = self.top_p
        _require(isinstance(p, (int, float)) and not isinstance(p, bool), f"top_p must be a number, got {p!r}")
        _require(math.isfinite(p) and 0.0 < p <= 1.0, f"top_p must be in (0, 1], got {p!r}")
        _require(_is_int(self.top_k) and self.top_k >= 0, f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class DrafterConfig:
    """Architecture of an EAGLE feature-level drafter (one decoder layer on target features).

    ffn: "dense" is the single-head EAGLE-2 drafter; "moe" is Jakiro's two-head MoE FFN.
    draft_vocab_size: 0 scores the full vocabulary; otherwise the drafter scores only this many
        of the target's tokens (the ids are stored with the weights).
    expert_size: intermediate width of each MoE expert; 0 = hidden_size (JAKIRO.md's reference). Two experts of
        intermediate_size / 2 hold as many FFN weights as the dense drafter's one MLP.
    feature_layers: inner target layers (1-based) whose hidden states the drafter reads besides the last one,
        fused into one feature (EAGLE-3's low/mid/high features); () = the last hidden state alone (JAKIRO.md).
    num_layers: attention layers (1 = EAGLE's and JAKIRO.md's single layer); each further one adds a dense SwiGLU
        and an attention block between the first attention and the last FFN (dense or MoE), so the MoE stays last.
    The target_* fields name the target the drafter was trained for, so a mismatch is caught at load.
    """

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    ffn: FfnKind = "dense"
    num_experts: int = 2
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    draft_vocab_size: int = 0
    expert_size: int = 0
    feature_layers: tuple[int, ...] = ()
    num_layers: int = 1
    target_id: str = ""
    target_fingerprint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_layers", tuple(self.feature_layers))  # a list when read from JSON
        _require(all(_is_int(layer) and layer >= 1 for layer in self.feature_layers)
                 and list(self.feature_layers) == sorted(set(self.feature_layers)),
                 f"drafter feature_layers must be distinct increasing layer numbers >= 1, got {self.feature_layers!r}")
        _require(_is_int(self.num_layers) and 1 <= self.num_layers <= 4,
                 f"drafter num_layers must be 1..4, got {self.num_layers!r}")
        for name in ("hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size", "vocab_size"):
            value = getattr(self, name)
            _require(_is_int(value) and value > 0, f"drafter {name} must be a positive integer, got {value!r}")
        _require(self.ffn in ("dense", "moe"), f"drafter ffn must be 'dense' or 'moe', got {self.ffn!r}")
        _require(self.num_heads % self.num_kv_heads == 0, "drafter num_heads must be a multiple of num_kv_heads")
        _require(self.ffn != "moe" or self.num_experts == 2, "the Jakiro MoE drafter has exactly 2 experts (top-2 of 2)")
        _require(
            _is_int(self.draft_vocab_size) and 0 <= self.draft_vocab_size <= self.vocab_size,
            f"draft_vocab_size must be in 0..vocab_size ({self.vocab_size}), got {self.draft_vocab_size!r}",
        )
        _require(_is_int(self.expert_size) and self.expert_size >= 0,
                 f"drafter expert_size must be 0 (= hidden_size) or a positive integer, got {self.expert_size!r}")

    @property
    def expert_width(self) -> int:
        """Intermediate width of one MoE expert."""
        return self.expert_size or self.hidden_size

    @property
    def is_moe(self) -> bool:
        return self.ffn == "moe"


@dataclass(frozen=True)
class FallbackConfig:
    """Decode plainly while speculation is measured not to pay (see core.policy)."""

    enabled: bool = True
    window: int = 16  # the latest speculative cycles the expected speedup averages (session 25: 4 fell back too often)
    judge_after: int = 4  # speculative cycles before the first judgement, and in each probe (at most window)
    cooldown: int = 12  # plain steps before probing speculation again
    margin: float = 0.9  # speculate while the expected speedup is above this (session 29: 1.0 switched on windows
    # inside the plain-step price's noise; 0.9 at T=1 on held-out prompts 1.26x / 1.23x against 1.24x / 1.18x)
    max_cooldown: int = 96  # each probe that still does not pay doubles the cooldown, up to this many steps
    confidence: float = 0.0  # fall back only when the window's tokens per cycle + this many standard errors do not pay
    ahead: float = 0.0  # ride out a slow window while the generation so far runs at least this many times plain
    # decoding's speed (0: judge the window alone)
    plain_from_verify: bool = True  # price a plain step from each cycle's own verify + commit time, scaled by the
    # target's measured cost of one token against the verified tree's size: it follows the context's length and the
    # machine's drift, instead of three bare one-token forwards timed once per decoder (False). Session 29, MT-bench
    # at greedy: 2 switches to plain decoding against 13 (Jakiro), 3 against 7 (EAGLE-2)

    def __post_init__(self) -> None:
        _require(_is_int(self.window) and self.window >= 1, "fallback window must be an integer >= 1")
        _require(_is_int(self.judge_after) and self.judge_after >= 1, "fallback judge_after must be an integer >= 1")
        _require(_is_int(self.cooldown) and self.cooldown >= 1, "fallback cooldown must be an integer >= 1")
        _require(math.isfinite(self.margin) and self.margin > 0, "fallback margin must be a positive number")
        _require(math.isfinite(self.confidence) and self.confidence >= 0,
                 "fallback confidence must be a non-negative number")
        _require(math.isfinite(self.ahead) and self.ahead >= 0, "fallback ahead must be a non-negative number")
        _require(_is_int(self.max_cooldown) and self.max_cooldown >= self.cooldown,
                 "fallback max_cooldown must be an integer >= cooldown")


@dataclass(frozen=True)
class EngineConfig:
    """Everything one generation needs besides the models and the prompt."""

    tree: TreeConfig = TreeConfig()
    sampling: SamplingConfig = SamplingConfig()
    max_new_tokens: int = 128
    seed: int = 0
    fallback: FallbackConfig = FallbackConfig()

    def __post_init__(self) -> None:
        _require(
            _is_int(self.max_new_tokens) and 1 <= self.max_new_tokens <= 8192,
            f"max_new_tokens must be an integer in 1..8192, got {self.max_new_tokens!r}",
        )
        _require(_is_int(self.seed) and 0 <= self.seed < 2**63, f"seed must be a non-negative integer, got {self.seed!r}")


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-data form of any config dataclass (nested configs become dicts)."""
    return dataclasses.asdict(config)


def candidate_count(tree: TreeConfig) -> int:
    """Most candidates one draft tree scores: top_k children of the root, then top_k children of each of the
    top_k frontier nodes per further layer (lookup nodes come on top)."""
    return tree.top_k + (tree.depth - 1) * tree.top_k**2


def advisories(tree: TreeConfig, sampling: SamplingConfig) -> list[str]:
    """Valid settings that do not do what they seem to: one sentence each, for the user (empty when none)."""
    notes = []
    most = candidate_count(tree)
    if tree.total_tokens > most:
        notes.append(f"total tokens {tree.total_tokens} is more than the {most} candidates a tree of top-k "
                     f"{tree.top_k} and depth {tree.depth} holds (k + (depth−1)·k²): at most {most} are verified.")
    if tree.total_tokens < tree.depth:
        notes.append(f"total tokens {tree.total_tokens} is less than depth {tree.depth}: at most "
                     f"{tree.total_tokens} drafted tokens can be accepted per cycle, so layers deeper than that are "
                     "drafted for nothing.")
    if sampling.greedy and sampling.top_p < 1.0:
        notes.append(f"top-p {sampling.top_p:g} has no effect at temperature 0 (greedy decoding).")
    return notes
