"""How many drafted nodes to verify: measured verification cost against the drafter's own confidence.

A node's path is accepted with probability P_i = exp(cumulative draft log-prob) when the drafter is
calibrated, and siblings exclude each other, so verifying the T best nodes accepts on average
E(T) = c * sum_{i<=T} P_i draft tokens (plus the target's own token), where c corrects the drafter's
calibration from what verification actually accepted in this generation. A cycle costs the drafting
already spent plus the verification of T + 1 tokens, which is measured on this machine: timed target forwards
over 1, 2, 4, ... 48 tokens, interpolated between those sizes (on a CPU the first few extra tokens cost the most:
the cost is concave; ``TreeConfig.cost_curve``, off by default), or the least-squares line through the sizes in
``LINE_SIZES``, verify_ms(n) = fixed_ms + per_node_ms * (n - 1).
The best T maximises tokens per millisecond, (1 + E(T)) / (draft_ms + verify_ms(T + 1)); and the
tree stops growing (``DraftStop``) once no frontier node could pay for its own verification
(``prune_floor``), or once the next layer's expected tokens (``layer_gain``) could not pay for the
drafter forward that drafts it (``break_even``), saving drafter forwards.

Any subtree that keeps every kept node's ancestors is verified exactly, so sizing is lossless; the
T best nodes by cumulative score always include their ancestors (a child never outscores its parent).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from core.kv import keep_accepted
from core.target import TargetModel


@dataclass(frozen=True)
class CostModel:
    fixed_ms: float  # time of a verification forward over one token (the line's)
    per_node_ms: float  # added time per extra token in the forward (the line's slope)
    curve: tuple[tuple[int, float], ...] = ()  # measured (tokens, ms), sorted, ms non-decreasing; () = the line only

    def verify_ms(self, nodes: int) -> float:
        return float(self.verify_ms_many(torch.tensor([nodes]))[0])

    def verify_ms_many(self, nodes: torch.Tensor) -> torch.Tensor:
        """[k] token counts -> [k] ms: interpolated between the measured sizes (beyond them: the line's slope from
        the nearest one), or the line when nothing was measured."""
        n = nodes.double()
        if not self.curve:
            return self.fixed_ms + self.per_node_ms * (n - 1)
        xs = torch.tensor([x for x, _ in self.curve], dtype=torch.float64)  # [m]
        ys = torch.tensor([y for _, y in self.curve], dtype=torch.float64)  # [m]
        if xs.numel() == 1:
            return ys[0] + self.per_node_ms * (n - xs[0])
        right = torch.searchsorted(xs, n).clamp(1, xs.numel() - 1)  # [k] the segment's upper end
        x0, x1, y0, y1 = xs[right - 1], xs[right], ys[right - 1], ys[right]
        inside = y0 + (y1 - y0) * (n - x0) / (x1 - x0)
        below = ys[0] + self.per_node_ms * (n - xs[0])
        above = ys[-1] + self.per_node_ms * (n - xs[-1])
        return torch.where(n < xs[0], below, torch.where(n > xs[-1], above, inside))

    def plain_step_ms(self, cycle_ms: float, nodes: int) -> float:
        """A plain step's time implied by a verification of ``nodes`` tokens that took ``cycle_ms``: scaled by the
        measured cost of one token against ``nodes`` (follows the context's length and the machine's speed)."""
        return cycle_ms * self.verify_ms(1) / self.verify_ms(nodes)

    def linear(self) -> CostModel:
        """The least-squares line alone."""
        return CostModel(self.fixed_ms, self.per_node_ms)


LINE_SIZES = (1, 8, 16, 32, 48)  # the sizes the line is fitted on: those the adaptive sizing was tuned with


def fit_cost(samples: list[tuple[int, float]], line_sizes: tuple[int, ...] | None = None) -> CostModel:
    """Least-squares line through the (nodes, ms) samples of ``line_sizes`` (all when None; the slope kept
    non-negative), and every sample as a curve (repeated sizes averaged, the cost made non-decreasing in the size)."""
    if not samples:
        raise ValueError("fit_cost needs at least one (nodes, ms) sample")
    sizes = sorted({s[0] for s in samples})
    every_ms = torch.tensor([s[1] for s in samples], dtype=torch.float64)  # [m]
    every_n = torch.tensor([s[0] for s in samples])  # [m]
    means = [float(every_ms[every_n == size].mean()) for size in sizes]
    curve = tuple(zip(sizes, torch.tensor(means).cummax(0).values.tolist()))
    on_line = [s for s in samples if line_sizes is None or s[0] in line_sizes] or samples
    n = torch.tensor([s[0] for s in on_line], dtype=torch.float64) - 1  # [k] extra nodes
    ms = torch.tensor([s[1] for s in on_line], dtype=torch.float64)  # [k]
    if n.unique().numel() < 2:
        return CostModel(fixed_ms=float(ms.mean()), per_node_ms=0.0, curve=curve)
    slope = float(((n - n.mean()) * (ms - ms.mean())).sum() / ((n - n.mean()) ** 2).sum())
    slope = max(0.0, slope)
    return CostModel(fixed_ms=float(ms.mean() - slope * n.mean()), per_node_ms=slope, curve=curve)


@torch.inference_mode()
def measure_verify_cost(
    target: TargetModel, sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 48), context: int = 96, repeats: int = 3
) -> list[tuple[int, float]]:
    """(nodes, median ms) of target forwards over chains of ``nodes`` tokens after ``context`` tokens.

    The work of a tree forward depends on its node count, not its shape, so a chain stands in for trees. The
    sizes are timed in turn, round after round (the first round warms up), so that a slow spell of a shared
    machine slows every size alike instead of one: the costs' ratios, which size the tree and price a plain step
    (``FallbackConfig.plain_from_verify``), vary about three times less than when each size is timed in a block
    (session 29, bfloat16: cost(1)/cost(6) 0.89 +- 0.03 against 0.83 +- 0.10 over 8 measurements).
    """
    vocab = target.vocab_size
    ids = torch.arange(context) * 7919 % vocab  # [context] arbitrary fixed tokens
    cache = target.new_cache()
    target.forward(ids, torch.arange(context), cache)
    times: dict[int, list[float]] = {nodes: [] for nodes in sizes}
    for round_ in range(repeats + 1):
        for nodes in sizes:
            tokens = (torch.arange(nodes) * 104729 + 13) % vocab  # [nodes]
            mask = torch.ones(nodes, nodes, dtype=torch.bool).tril()
            t0 = time.perf_counter()
            target.forward(tokens, context + torch.arange(nodes), cache, mask if nodes > 1 else None)
            if target.device.type == "cuda":
                torch.cuda.synchronize()
            if round_ > 0:
                times[nodes].append((time.perf_counter() - t0) * 1e3)
            keep_accepted(cache, context, torch.zeros(0, dtype=torch.int64))
    return [(nodes, sorted(ms)[len(ms) // 2]) for nodes, ms in times.items()]


@dataclass
class Calibration:
    """How far the drafter's confidence is from what verification accepts, in this generation."""

    predicted: float = 2.0  # prior: believe the drafter (ratio 1) until evidence accrues
    observed: float = 2.0

    @property
    def ratio(self) -> float:
        return self.observed / self.predicted

    def update(self, predicted: float, accepted: int) -> None:
        """Mutates self with one verified cycle: the sum of P_i over the kept nodes, and the accepted count."""
        self.predicted += predicted
        self.observed += accepted


def path_probs(scores: torch.Tensor) -> torch.Tensor:
    """[n] cumulative draft log-probs -> [n] path probabilities, best first."""
    return scores.float().exp().sort(descending=True).values


def best_size(probs: torch.Tensor, cost: CostModel, draft_ms: float, ratio: float, cap: int) -> int:
    """The number of drafted nodes (0..cap) to verify that maximises expected tokens per millisecond.

    probs: [n] path probabilities of the drafted nodes, best first.
    """
    cap = min(cap, probs.numel())
    if cap == 0:
        return 0
    sizes = torch.arange(cap + 1, dtype=torch.float64)  # [cap + 1] drafted nodes kept
    expected = 1 + ratio * torch.cat([torch.zeros(1, dtype=torch.float64), probs[:cap].double().cumsum(0)])
    ms = draft_ms + cost.verify_ms_many(sizes + 1)  # [cap + 1] the root is verified too
    return int((expected / ms).argmax())


@dataclass(frozen=True)
class DraftStop:
    """When the drafter stops growing this cycle's tree (all zeros: it drafts the full tree)."""

    min_path_prob: float = 0.0  # stop once no frontier node's path probability reaches this (``prune_floor``)
    min_layer_gain: float = 0.0  # skip a drafter forward whose ``layer_gain`` is below this (``break_even``)


def layer_gain(mass: float, previous_mass: float) -> float:
    """Expected draft tokens (before calibration) that one more drafter forward adds: the frontier's summed path
    probability ``mass``, shrunk by the factor it shrank by over the last layer (from ``previous_mass``; the root's
    is 1). Measured on held-out training prompts with Jakiro release 4, the accepted tokens at and below the next
    layer were 1-2x this estimate (the calibration ratio corrects the drafter's underconfidence)."""
    return mass * mass / max(previous_mass, 1e-9)


def break_even(ms: float, tokens_per_ms: float, ratio: float) -> float:
    """The draft probability mass below which something costing ``ms`` cannot pay at the current speed: it adds
    ``ratio * mass`` expected tokens, and pays while that beats the rate the cycles already achieve,
    ``tokens_per_ms``. For one more drafter forward, the mass is its ``layer_gain``."""
    return ms * tokens_per_ms / max(ratio, 1e-6)


def prune_floor(cost: CostModel, tokens_per_ms: float, ratio: float) -> float:
    """The path probability below which a node cannot pay for its verification (``per_node_ms``) at the current
    speed (``break_even``). Children are never likelier than their parent, so drafting can stop once the whole
    frontier is below this floor.
    """
    return break_even(cost.per_node_ms, tokens_per_ms, ratio)
