"""Growing one draft tree per cycle with an EAGLE drafter (EAGLE-2 dynamic tree, Jakiro schedules).

``FeatureProposer`` owns a drafter and its KV cache. Each cycle it first reads the target's
true features of the tokens verified since the last cycle (one causal forward whose last row
predicts the root's children), then expands the frontier layer by layer under the tree mask:

    layer 1          <- the last row of the catch-up forward
    layer d (d >= 2) <- one drafter forward over the top_k frontier nodes of layer d-1
    hybrid schedule: the last layer comes from the contrastive branch of the forward before it
                     (evaluated at each frontier node's parent), so the last forward is skipped; with a
                     layer stop, the last layer is the one where the next forward would not pay, and the
                     contrastive branch drafts it for free instead of ending the tree one layer higher.

An MoE drafter also hands back each expanded node's per-expert features (``ExpertFeatures``),
by reference only: what each expert alone would propose there, and which expert each drafted
token belongs to, are scored later, outside the timed drafting phase, when the engine builds its
records; while drafting, MoE-branch children carry no expert (-1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from core.config import TreeConfig
from core.drafter import Drafter, DrafterOutput
from core.sizing import DraftStop, layer_gain
from core.tree import MOE_BRANCH, DraftTree, Layer, assemble, depths_of, select_frontier, top_children

Embed = Callable[[torch.Tensor], torch.Tensor]  # [n] token ids -> [n, H]


@dataclass
class ExpertFeatures:
    """Each expanded node's per-expert output features, kept by reference while drafting (MoE only).

    Scored only after the timed phases: each expert's own top-k at a node, and which expert a drafted token
    belongs to (the one whose own distribution gives it the higher probability; the gate mixes both)."""

    rows: dict[int, torch.Tensor]  # tree node -> [2, H] each expert alone at that node (its children's source)
    drafter: Drafter  # scores them through the target's lm_head rows
    top_k: int  # children per expanded node
    _scored: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)  # node -> [2, V'] log-probs

    def log_probs(self, nodes: list[int]) -> torch.Tensor:
        """[len(nodes), 2, V'] each expert's own draft log-probabilities at these expanded nodes (cached)."""
        missing = [n for n in nodes if n not in self._scored]
        if missing:
            self._scored.update(zip(missing, self.drafter.log_probs(torch.stack([self.rows[n] for n in missing]))))
        return torch.stack([self._scored[n] for n in nodes])

    def top_tokens(self) -> dict[int, list[list[int]]]:
        """Tree node -> [2][k] target token ids of each expert's k most likely children, best first."""
        if not self.rows:
            return {}
        nodes = sorted(self.rows)
        logp = self.log_probs(nodes)  # [e, 2, V']
        cols = logp.topk(min(self.top_k, logp.shape[-1]), dim=-1).indices  # [e, 2, k]
        return dict(zip(nodes, self.drafter.vocab_ids[cols].tolist()))

    def favoured(self, children: dict[int, tuple[int, int]]) -> dict[int, int]:
        """Drafted node -> the expert (0 or 1) whose own distribution at its parent gives its token the higher
        probability; ``children`` maps each node to (parent node, target token id). Parents that were not
        expanded from their own output (contrastive children) are skipped."""
        nodes = [n for n, (parent, _) in children.items() if parent in self.rows]
        if not nodes:
            return {}
        logp = self.log_probs([children[n][0] for n in nodes])  # [c, 2, V']
        tokens = torch.tensor([children[n][1] for n in nodes])  # [c] target ids
        vocab = self.drafter.vocab_ids.to(tokens.device)  # [V']
        cols = (vocab[None, :] == tokens[:, None]).int().argmax(-1)  # [c] draft columns
        per_expert = logp[torch.arange(len(nodes)), :, cols.to(logp.device)]  # [c, 2]
        return dict(zip(nodes, per_expert.argmax(-1).tolist()))


@dataclass
class Proposal:
    tree: DraftTree
    forwards: int  # drafter forwards spent on this tree
    experts: ExpertFeatures | None = None  # MoE drafters: what each expert alone proposes at expanded nodes


class Proposer(Protocol):
    """Anything that proposes draft trees to the engine."""

    name: str
    feature_layers: tuple[int, ...]  # inner target layers whose hidden states ``propose`` reads (() = none)

    def reset(self, prompt_ids: list[int]) -> None:
        """Forget every previous generation."""

    def check_tree(self, tree: TreeConfig) -> None:
        """Raise ValueError for tree options this proposer cannot run."""

    def propose(
        self,
        features: torch.Tensor,  # [m, (K+1)H] target features of the tokens verified since the last call: the
        # hidden states after the K feature_layers, then the last hidden state (TargetOutput.drafter_features)
        next_tokens: torch.Tensor,  # [m] the token that followed each of them (the last is the root)
        root_pos: int,  # position of the root token
        tree: TreeConfig,
        stop: DraftStop = DraftStop(),
    ) -> Proposal:
        """Draft a tree below the root ``next_tokens[-1]``; stop growing it early as ``stop`` says (children are
        never likelier than their parent)."""


@dataclass
class _Row:
    """One node's drafter output (the node was the input token of that drafter position)."""

    features: torch.Tensor  # [H] predicted feature of the node (its children come from it)
    contrastive: torch.Tensor | None  # [H] prediction two ahead (its grandchildren)
    experts: torch.Tensor | None  # [2, H] each expert alone
    routing: torch.Tensor  # [4] (w0, w1, v0, v1); zeros for a dense drafter


def _rows(out: DrafterOutput, picks: slice) -> list[_Row]:
    """The picked rows of one drafter forward, split with one call per output (not one per row: each tensor op
    costs microseconds of dispatch on a CPU, and a forward's rows are few)."""
    features, contrastive, experts = (None if t is None else t[picks].unbind(0)
                                      for t in (out.features, out.contrastive, out.expert_features))
    n = len(features)
    routing = (torch.zeros(n, 4) if out.routing is None else
               out.routing.weights[picks].flatten(-2).cpu())  # [n, 4] (w0, w1, v0, v1)
    return [_Row(features=features[i], contrastive=None if contrastive is None else contrastive[i],
                 experts=None if experts is None else experts[i], routing=routing[i]) for i in range(n)]


@dataclass
class _Cycle:
    """Bookkeeping of one drafting cycle."""

    root_pos: int
    parents: list[int]  # [m] tree index of every candidate's parent (root -1)
    tokens: list[int]  # [m] every candidate's token
    fed: dict[int, _Row] = field(default_factory=dict)  # node -> its drafter output
    entries: list[int] = field(default_factory=list)  # tree nodes in the drafter cache, in cache order

    def add(self, layer: Layer) -> None:
        self.parents += layer.parents.tolist()
        self.tokens += layer.tokens.tolist()


class FeatureProposer:
    """Drafts with an EAGLE feature-level drafter (dense or Jakiro MoE)."""

    def __init__(self, drafter: Drafter, embed: Embed, name: str, trained: bool = True) -> None:
        if drafter.head_weight is None:
            raise ValueError("bind the drafter to the target's lm_head before drafting")
        self.drafter = drafter.eval()
        self.embed = embed
        self.name = name
        self.trained = trained  # False for a randomly initialised drafter (lossless, but its speed means nothing)
        self.feature_layers = drafter.cfg.feature_layers
        self.cache = drafter.new_cache()

    def reset(self, prompt_ids: list[int]) -> None:
        self.cache = self.drafter.new_cache(capacity=max(256, 2 * len(prompt_ids)))

    def check_tree(self, tree: TreeConfig) -> None:
        if not self.drafter.cfg.is_moe and (tree.schedule == "hybrid" or tree.decoupled):
            raise ValueError("the hybrid schedule and decoupled candidates need an MoE (Jakiro) drafter")

    @torch.inference_mode()
    def propose(self, features: torch.Tensor, next_tokens: torch.Tensor, root_pos: int, tree: TreeConfig,
                stop: DraftStop = DraftStop()) -> Proposal:
        self.check_tree(tree)
        m = next_tokens.numel()
        self.cache.crop(root_pos - m)
        cycle = _Cycle(root_pos=root_pos, parents=[-1], tokens=[int(next_tokens[-1])])
        # 1. Catch up on the verified tokens; the last row is the root's own output.
        moe = self.drafter.cfg.is_moe
        out = self.drafter(
            self.drafter.target_features(features), self.embed(next_tokens), torch.arange(root_pos - m, root_pos),
            self.cache, with_experts=moe,
        )
        cycle.fed[0] = _rows(out, slice(m - 1, m))[0]
        forwards = 1
        layers = [self._children(cycle, [0], torch.zeros(1), tree, contrastive=False)]
        cycle.add(layers[-1])
        offset, previous_mass = 1, 1.0
        # 2. Expand: pick the frontier in the last layer, feed it, score its children.
        for depth in range(2, tree.depth + 1):
            last = layers[-1]
            pick = select_frontier(last.scores, tree.top_k)  # [f] indices into the last layer
            probs = last.scores[pick].exp()  # [f] the frontier's path probabilities
            if float(probs.max()) < stop.min_path_prob:
                break  # no child could pay for its verification
            mass = float(probs.sum())
            pays = layer_gain(mass, previous_mass) >= stop.min_layer_gain
            # hybrid: the last layer (full depth, or where a forward stops paying) is contrastive, without a forward
            contrastive = tree.schedule == "hybrid" and (depth == tree.depth or not pays)
            if not contrastive and not pays:
                break  # the next layer could not pay for the forward that drafts it
            previous_mass = mass
            frontier = [offset + int(i) for i in pick]
            offset += last.tokens.numel()
            if not contrastive:
                self._feed(cycle, frontier)
                forwards += 1
            layers.append(self._children(cycle, frontier, last.scores[pick], tree, contrastive))
            cycle.add(layers[-1])
            if contrastive:
                break  # nothing was fed below the contrastive layer
        experts = None
        if moe:  # every fed node was expanded from its own output (contrastive children come from the parent)
            rows = {node: row.experts for node, row in cycle.fed.items() if row.experts is not None}
            experts = ExpertFeatures(rows=rows, drafter=self.drafter, top_k=tree.top_k)
        return Proposal(tree=assemble(cycle.tokens[0], layers, tree.total_tokens), forwards=forwards, experts=experts)

    def _feed(self, cycle: _Cycle, frontier: list[int]) -> None:
        """One drafter forward over the frontier under the tree mask; mutates ``cycle`` (fed, entries)."""
        committed = cycle.root_pos
        cycle.entries.extend(frontier)
        slot = {node: committed + i for i, node in enumerate(cycle.entries)}
        mask = torch.zeros(len(frontier), committed + len(cycle.entries), dtype=torch.bool)  # [f, keys]
        mask[:, :committed] = True
        for row, node in enumerate(frontier):
            cur = node
            while cur > 0:  # the node and its drafted ancestors; the root's entry is committed
                mask[row, slot[cur]] = True
                cur = cycle.parents[cur]
        depths = depths_of(cycle.parents)
        parent_feats = torch.stack([cycle.fed[cycle.parents[node]].features for node in frontier])  # [f, H]
        ids = torch.tensor([cycle.tokens[node] for node in frontier])  # [f]
        positions = torch.tensor([cycle.root_pos + depths[node] - 1 for node in frontier])  # [f]
        device = parent_feats.device
        with_experts = self.drafter.cfg.is_moe
        out = self.drafter(parent_feats, self.embed(ids), positions, self.cache, mask.to(device), with_experts)
        cycle.fed.update(zip(frontier, _rows(out, slice(None))))

    def _children(
        self, cycle: _Cycle, frontier: list[int], frontier_scores: torch.Tensor, tree: TreeConfig, contrastive: bool
    ) -> Layer:
        """The top_k children of each frontier node, from its own output or its parent's contrastive one."""
        source = [cycle.fed[cycle.parents[n]] if contrastive else cycle.fed[n] for n in frontier]
        routing = torch.stack([r.routing for r in source])  # [f, 4]
        if contrastive:
            logp = self.drafter.log_probs(torch.stack([r.contrastive for r in source]))  # [f, V']
            experts = routing[:, 2:].argmax(-1)[:, None].expand(logp.shape).to(logp.device)
            branch = "contrastive"
        elif tree.decoupled:
            per_expert = self.drafter.log_probs(torch.stack([r.experts for r in source]))  # [f, 2, V']
            logp, experts = per_expert.max(dim=1)  # best of the two experts per token
            branch = "experts"
        else:
            logp = self.drafter.log_probs(torch.stack([r.features for r in source]))  # [f, V']
            # no expert yet: the engine's records attribute MoE children to the expert that favours them
            experts = torch.full(logp.shape, -1, device=logp.device)
            branch = MOE_BRANCH if self.drafter.cfg.is_moe else "dense"
        scores = frontier_scores.to(logp.device)
        rows, cols, child_logp = top_children(scores, logp, tree.top_k)
        return Layer(
            parents=torch.tensor(frontier)[rows.cpu()],
            tokens=self.drafter.vocab_ids[cols].cpu(),
            logp=child_logp.cpu(),
            scores=(scores[rows] + child_logp).cpu(),
            experts=experts[rows, cols].cpu(),
            routing=routing[rows.cpu()],
            branch=branch,
        )
