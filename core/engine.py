"""The decode loop: draft a tree, verify it in one target forward, commit the accepted path.

``SpecDecoder.stream`` yields plain records (see ``core.trace``): a header, the prefill, then
one record per target forward. With no proposer it is plain autoregressive decoding on the
same adapter (a tree of just the root), which is both the speed baseline and the test oracle.
"""
from __future__ import annotations

import platform
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

import torch

from core.config import EngineConfig, FallbackConfig, to_dict
from core.drafting import Proposal, Proposer
from core.kv import keep_accepted
from core.lookup import LOOKUP_BRANCH, graft, look_up, next_run_length
from core.policy import RECENT_CYCLES, FallbackState, can_judge, decide, recent, record_plain_estimate, record_step
from core.quant import weights_name
from core.sizing import (LINE_SIZES, Calibration, CostModel, DraftStop, best_size, break_even, fit_cost,
                         measure_verify_cost, path_probs, prune_floor)
from core.target import PromptError, TargetModel
from core.trace import EmittedToken, NodeRecord, StepRecord, header_record, node_source
from core.tree import MOE_BRANCH, VerifyTree, assemble, keep_best, kept_subtree
from core.verify import VerifyResult, sample_token, verify_tree

_COSTS: weakref.WeakKeyDictionary[TargetModel, CostModel] = weakref.WeakKeyDictionary()  # measured once per target


@dataclass
class _State:
    """What carries from one cycle to the next."""

    cache: Any  # the target's DynamicCache (prefix without the root)
    root_pos: int  # position of the root: the last emitted token, not yet in the cache
    features: torch.Tensor  # [m, H] target features of the tokens verified since the last draft
    next_tokens: torch.Tensor  # [m] the token after each of them; the last is the root
    generated: list[int]
    forwards: int
    fallback: FallbackState
    calibration: Calibration = field(default_factory=Calibration)  # adaptive tree size only
    prompt_ids: list[int] = field(default_factory=list)  # the context lookup searches, with ``generated``
    lookup_tokens: int = 0  # run length after a full n-gram match this cycle (grows while text is copied)
    drafter_behind: bool = True  # the drafter has yet to read the prompt or steps decoded plainly (its next draft
    # catches up on them; the fallback does not judge that cycle)
    propose_ms: float = 0.0  # drafting time (adaptive trees only) in this generation ...
    proposed_forwards: int = 0  # ... and the drafter forwards it made: the cost of one forward here


@dataclass
class _Draft:
    """One cycle's tree to verify, and what committing it needs to know."""

    proposal: Proposal
    runs: list[list[int]]  # the looked-up runs grafted into it
    predicted: float = 0.0  # the drafter's predicted accepted length (adaptive only)
    drafted: bool = True  # False when the looked-up runs were verified alone


class SpecDecoder:
    """Speculative decoding of one target with one proposer (None = plain decoding)."""

    def __init__(self, target: TargetModel, proposer: Proposer | None = None, name: str | None = None,
                 cost: CostModel | None = None) -> None:
        self.target = target
        self.proposer = proposer
        self._taps = proposer.feature_layers if proposer is not None else ()  # inner layers the drafter reads
        self.name = name or (proposer.name if proposer else "none")
        self._plain_ms: float | None = None  # measured once, the first time the fallback needs it
        self._cost = cost  # None: the target's, measured the first time a tree or the fallback needs it

    def verify_cost(self) -> CostModel:
        """This machine's verification cost (timed target forwards, once per target: every decoder of one target
        sizes its trees and prices plain steps by the same measurement)."""
        if self._cost is None:
            if self.target not in _COSTS:
                _COSTS[self.target] = fit_cost(measure_verify_cost(self.target), line_sizes=LINE_SIZES)
            self._cost = _COSTS[self.target]
        return self._cost

    def generate(self, prompt: str | list[int], cfg: EngineConfig, detail: bool = True) -> list[dict[str, Any]]:
        """All records of one generation."""
        return list(self.stream(prompt, cfg, detail))

    def stream(self, prompt: str | list[int], cfg: EngineConfig, detail: bool = True) -> Iterator[dict[str, Any]]:
        """Header, prefill and one record per target forward. ``detail`` adds every tree node."""
        prompt_ids = self.target.encode_chat(prompt) if isinstance(prompt, str) else list(prompt)
        if not prompt_ids:
            raise PromptError("the prompt is empty")
        if len(prompt_ids) + 1 >= self.target.max_context:
            raise PromptError(f"the prompt ({len(prompt_ids)} tokens) leaves no room in the context of {self.target.max_context}")
        if self.proposer is not None:
            self.proposer.check_tree(cfg.tree)
            if cfg.tree.adaptive or (cfg.fallback.enabled and cfg.fallback.plain_from_verify):
                self.verify_cost()  # once per target, before any timed phase
        generator = torch.Generator().manual_seed(cfg.seed)
        yield self._header(prompt, prompt_ids, cfg)
        state, record = self._prefill(prompt_ids, cfg, generator)
        yield record.to_dict()
        step = 1
        while not record.finished:
            record = self._cycle(state, cfg, generator, step, detail)
            yield record.to_dict()
            step += 1

    # --- phases -------------------------------------------------------------------------------

    @torch.inference_mode()
    def _prefill(self, prompt_ids: list[int], cfg: EngineConfig, generator: torch.Generator) -> tuple[_State, StepRecord]:
        t0 = self._clock()
        cache = self.target.new_cache()
        n = len(prompt_ids)
        out = self.target.forward(torch.tensor(prompt_ids), torch.arange(n), cache, taps=self._taps)
        first = sample_token(self._rows_for_sampling(out.logits[-1:], cfg)[0], cfg.sampling, generator)
        if self.proposer is not None:
            self.proposer.reset(prompt_ids)
        state = _State(
            cache=cache, root_pos=n, features=out.drafter_features(), next_tokens=torch.tensor(prompt_ids[1:] + [first]),
            generated=[], forwards=1, fallback=FallbackState(), prompt_ids=list(prompt_ids),
            lookup_tokens=cfg.tree.lookup,
        )
        emitted = self._emit(state, [first], cfg)
        ms = (self._clock() - t0) * 1e3
        record = self._record(state, 0, "prefill", emitted, 0, (0.0, ms, 0.0), None, None, None, cfg, False)
        return state, record

    @torch.inference_mode()
    def _cycle(self, state: _State, cfg: EngineConfig, generator: torch.Generator, step: int, detail: bool) -> StepRecord:
        # 1. Draft: grow a token tree below the root from the last verified features (or decode plainly).
        mode, note = self._mode(state, cfg.fallback)
        t0 = self._clock()
        draft = self._draft(state, cfg, t0) if mode == "spec" else None
        proposal = draft.proposal if draft else None
        drafted = bool(draft and draft.drafted)
        vtree = kept_subtree(proposal.tree) if proposal else _root_only(int(state.next_tokens[-1]))
        t1 = self._clock()
        # 2. Verify: one target forward over every kept node under the ancestor mask.
        mask = vtree.mask if vtree.size > 1 else None
        out = self.target.forward(vtree.tokens, state.root_pos + vtree.depths, state.cache, mask, self._taps)
        result = verify_tree(vtree.tokens, vtree.parents, self._rows_for_sampling(out.logits, cfg), cfg.sampling, generator)
        t2 = self._clock()
        # 3. Commit: keep the accepted nodes' KV, emit their tokens and the bonus token.
        accepted = torch.tensor(result.accepted)
        if drafted and cfg.tree.adaptive:  # calibrate on the drafter's own nodes only
            own = [n for n in result.accepted[1:] if proposal.tree.branches[int(vtree.nodes[n])] != LOOKUP_BRANCH]
            state.calibration.update(draft.predicted, len(own))
        keep_accepted(state.cache, state.root_pos, accepted)
        new_tokens = vtree.tokens[accepted[1:]].tolist() + [result.bonus_token]
        if draft is not None:
            state.lookup_tokens = next_run_length(cfg.tree, state.lookup_tokens, draft.runs, new_tokens[:-1])
        features = out.drafter_features()  # [q, (K+1)H]
        verified = features[accepted.to(features.device)]  # [len(accepted), (K+1)H]
        if not drafted and self.proposer is not None:  # the drafter did not run: it catches up later
            state.features = torch.cat([state.features, verified])
            state.next_tokens = torch.cat([state.next_tokens, torch.tensor(new_tokens)])
        else:
            state.features, state.next_tokens = verified, torch.tensor(new_tokens)
        state.root_pos += len(result.accepted)
        state.forwards += 1
        emitted = self._emit(state, new_tokens, cfg, vtree, result)
        t3 = self._clock()
        # 4. Record: plain data, built outside the timed phases.
        timings = ((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        kind = "spec" if proposal is not None else "plain"
        catch_up = drafted and state.drafter_behind
        state.drafter_behind = kind == "plain" or (state.drafter_behind and not drafted)
        record_step(state.fallback, kind, len(new_tokens), sum(timings), cfg.fallback, judged=not catch_up)
        if kind == "spec" and cfg.fallback.enabled and cfg.fallback.plain_from_verify:
            implied = self.verify_cost().plain_step_ms(timings[1] + timings[2], vtree.size)  # this verify + commit
            record_plain_estimate(state.fallback, implied)
        record = self._record(state, step, kind, emitted, len(result.accepted) - 1, timings, proposal, vtree, result,
                              cfg, detail)
        record.note = note
        return record

    def _draft(self, state: _State, cfg: EngineConfig, t0: float) -> _Draft:
        """This cycle's tree: the drafter's (sized when adaptive) with the context lookup grafted in; or, with
        ``lookup_alone``, the looked-up runs alone when a longest n-gram match gave a full-length one."""
        room = self.target.max_context - 2 - state.root_pos  # as deep as a drafted node may go here
        ngram, runs = look_up(torch.tensor(state.prompt_ids + state.generated), cfg.tree, room, state.lookup_tokens)
        if cfg.tree.lookup_alone and ngram == cfg.tree.lookup_ngram and len(runs[0]) == state.lookup_tokens:
            alone = Proposal(tree=graft(assemble(int(state.next_tokens[-1]), [], 0), runs), forwards=0)
            return _Draft(alone, runs, drafted=False)
        stop = self._draft_stop(state, cfg.tree.layer_stop) if cfg.tree.adaptive else DraftStop()
        t_propose = self._clock()
        proposal = self.proposer.propose(state.features, state.next_tokens, state.root_pos, cfg.tree, stop)
        predicted = 0.0
        if cfg.tree.adaptive:
            state.propose_ms += (self._clock() - t_propose) * 1e3
            state.proposed_forwards += proposal.forwards
            proposal, predicted = self._size(proposal, state.calibration, (self._clock() - t0) * 1e3,
                                             cfg.tree.cost_curve)
        if runs:
            proposal = replace(proposal, tree=graft(proposal.tree, runs))
        return _Draft(proposal, runs, predicted)

    def _draft_stop(self, state: _State, layers: bool) -> DraftStop:
        """When drafting stops: below the path probability a node needs to pay for its verification, and (if
        ``layers``) below the expected tokens a layer needs to pay for its drafter forward, both at the speed
        recent cycles reached (no early stop until they give a speed to beat)."""
        tokens, ms = recent(state.fallback, RECENT_CYCLES)
        if ms <= 0:
            return DraftStop()
        tokens_per_ms, ratio = tokens / ms, state.calibration.ratio
        forward_ms = state.propose_ms / max(state.proposed_forwards, 1)
        return DraftStop(min_path_prob=prune_floor(self.verify_cost(), tokens_per_ms, ratio),
                         min_layer_gain=break_even(forward_ms, tokens_per_ms, ratio) if layers else 0.0)

    def _size(self, proposal: Proposal, calibration: Calibration, draft_ms: float,
              curve: bool) -> tuple[Proposal, float]:
        """Keep only the best nodes worth verifying (core.sizing), priced by the measured cost ``curve`` or its
        line; also returns their summed path probability."""
        tree = proposal.tree
        probs = path_probs(tree.scores[tree.kept][1:])  # [m] best first
        cost = self.verify_cost() if curve else self.verify_cost().linear()
        n = best_size(probs, cost, draft_ms, calibration.ratio, probs.numel())
        return replace(proposal, tree=keep_best(tree, n)), float(probs[:n].sum())

    def _mode(self, state: _State, fallback: FallbackConfig) -> tuple[str, str]:
        """Speculate, or decode plainly while speculation is measured not to pay (see core.policy)."""
        if self.proposer is None:
            return "plain", ""
        if fallback.enabled and state.fallback.plain_ms is None and can_judge(state.fallback, fallback):
            state.fallback.plain_ms = self._plain_step_ms(state)
        return decide(state.fallback, fallback)

    def _plain_step_ms(self, state: _State) -> float:
        """Time of one plain decoding step here (median of 3 single-token forwards, cached rolled back)."""
        if self._plain_ms is None:
            times = []
            root = state.next_tokens[-1:]
            for _ in range(3):
                t0 = self._clock()
                self.target.forward(root, torch.tensor([state.root_pos]), state.cache)
                times.append((self._clock() - t0) * 1e3)
                keep_accepted(state.cache, state.root_pos, torch.zeros(0, dtype=torch.int64))
            self._plain_ms = sorted(times)[1]
        return self._plain_ms

    def _emit(
        self, state: _State, tokens: list[int], cfg: EngineConfig, vtree: VerifyTree | None = None,
        result: VerifyResult | None = None,
    ) -> list[EmittedToken]:
        """Mutates ``state.generated``: append tokens up to a stop token or the token budget. Drafted tokens get
        their text and source later, in ``_record`` (outside the timed phases)."""
        drafted = [int(vtree.nodes[n]) for n in result.accepted[1:]] if vtree is not None and result is not None else []
        last = "bonus" if vtree is not None and vtree.size > 1 else "target"
        emitted = []
        # plain decoding stops once the root is this close to the end of the context; a cycle that accepted past
        # that point emits no more than plain decoding would have
        budget = min(cfg.max_new_tokens, self.target.max_context - cfg.tree.depth - len(state.prompt_ids))
        for token, node in zip(tokens, drafted + [-1]):
            if len(state.generated) >= budget:
                break
            state.generated.append(token)
            emitted.append(EmittedToken(token_id=token, text="", source=last if node < 0 else "", node=node))
            if token in self.target.stop_token_ids:
                break
        return emitted

    # --- records ------------------------------------------------------------------------------

    def _stop_reason(self, state: _State, cfg: EngineConfig) -> str:
        if state.generated and state.generated[-1] in self.target.stop_token_ids:
            return "stop_token"
        if len(state.generated) >= cfg.max_new_tokens:
            return "max_new_tokens"
        if state.root_pos + cfg.tree.depth + 2 > self.target.max_context:
            return "context"
        return ""

    def _record(
        self, state: _State, step: int, kind: str, emitted: list[EmittedToken], accepted_len: int,
        timings: tuple[float, float, float], proposal: Proposal | None, vtree: VerifyTree | None,
        result: VerifyResult | None, cfg: EngineConfig, detail: bool,
    ) -> StepRecord:
        texts = self.target.tokenizer.batch_decode([[t.token_id] for t in emitted], skip_special_tokens=False)
        for token, text in zip(emitted, texts):
            token.text = text
        stop = self._stop_reason(state, cfg)
        tree = proposal.tree if proposal else None
        nodes, path = [], []
        if tree is not None and vtree is not None and result is not None:
            path = [int(vtree.nodes[i]) for i in result.accepted]
            favoured = _favoured(proposal, range(tree.size) if detail else [t.node for t in emitted if t.node > 0])
            for token in emitted:
                if token.node > 0:
                    token.source = node_source(tree.branches[token.node],
                                               favoured.get(token.node, int(tree.experts[token.node])))
            if detail:
                nodes = self._node_records(proposal, vtree, result, path, favoured)
        new_tokens = len(state.generated)
        return StepRecord(
            step=step, kind=kind, emitted=emitted, accepted_len=accepted_len,
            draft_ms=timings[0], verify_ms=timings[1], commit_ms=timings[2],
            drafter_forwards=proposal.forwards if proposal else 0,
            tree_nodes=(vtree.size - 1) if vtree is not None else 0,
            candidates=(tree.size - 1) if tree is not None else 0,
            tree_depth=int(vtree.depths.max()) if vtree is not None else 0,
            new_tokens=new_tokens, target_forwards=state.forwards, tau=new_tokens / state.forwards,
            nodes=nodes, accepted_path=path, finished=bool(stop), stop_reason=stop,
        )

    def _node_records(
        self, proposal: Proposal, vtree: VerifyTree, result: VerifyResult, path: list[int], favoured: dict[int, int]
    ) -> list[NodeRecord]:
        """Every scored node; for an MoE drafter, expanded nodes also get each expert's own top-k, and MoE-branch
        nodes the expert that favours their token (``favoured``; both scored outside the timed phases, from the
        features the proposer kept)."""
        tree = proposal.tree
        expert_topk = proposal.experts.top_tokens() if proposal.experts is not None else {}
        tokens = tree.tokens.tolist()
        text = self._token_texts(tokens + [t for pair in expert_topk.values() for top in pair for t in top])
        target_prob = {int(c): result.node_target_prob[i] for i, c in enumerate(vtree.nodes.tolist()) if i > 0}
        on_path = set(path)
        parents, depths = tree.parents.tolist(), tree.depths.tolist()
        logp, scores, kept = tree.logp.tolist(), tree.scores.tolist(), tree.kept.tolist()
        experts, routing = tree.experts.tolist(), tree.routing.tolist()
        return [
            NodeRecord(
                id=i, parent=parents[i], depth=depths[i], token_id=tokens[i], token=text[tokens[i]], logp=logp[i],
                score=scores[i], kept=kept[i], branch=tree.branches[i], expert=favoured.get(i, experts[i]),
                routing=[round(x, 4) for x in routing[i]], target_prob=target_prob.get(i), accepted=i in on_path,
                expert_topk=expert_topk.get(i),
                expert_topk_text=[[text[t] for t in top] for top in expert_topk[i]] if i in expert_topk else None,
            )
            for i in range(tree.size)
        ]

    def _token_texts(self, ids: list[int]) -> dict[int, str]:
        """Each distinct token id decoded once."""
        unique = sorted(set(ids))
        return dict(zip(unique, self.target.tokenizer.batch_decode([[t] for t in unique], skip_special_tokens=False)))

    def _header(self, prompt: str | list[int], prompt_ids: list[int], cfg: EngineConfig) -> dict[str, Any]:
        drafter_cfg = None
        drafter = getattr(self.proposer, "drafter", None)
        if drafter is not None:
            drafter_cfg = to_dict(drafter.cfg)
        return header_record(
            method=self.name,
            target=self.target.model_id,
            dtype=str(self.target.dtype).removeprefix("torch."),
            device=str(self.target.device),
            layout=self.target.layout,
            engine=to_dict(cfg),
            drafter=drafter_cfg,
            drafter_trained=getattr(self.proposer, "trained", None),
            drafter_weights=weights_name(drafter),
            prompt=prompt if isinstance(prompt, str) else None,
            prompt_tokens=len(prompt_ids),
            versions={"torch": torch.__version__, "python": platform.python_version(), **_versions()},
            stop_token_ids=sorted(self.target.stop_token_ids),
        )

    # --- helpers ------------------------------------------------------------------------------

    def _clock(self) -> float:
        if self.target.device.type == "cuda":
            torch.cuda.synchronize(self.target.device)
        return time.perf_counter()

    @staticmethod
    def _rows_for_sampling(logits: torch.Tensor, cfg: EngineConfig) -> torch.Tensor:
        """Sampling uses a CPU generator, so sampled rows move to the CPU; greedy stays put."""
        return logits if cfg.sampling.greedy else logits.cpu()


def _root_only(root_token: int) -> VerifyTree:
    return VerifyTree(
        nodes=torch.zeros(1, dtype=torch.int64), tokens=torch.tensor([root_token]), parents=[-1],
        depths=torch.zeros(1, dtype=torch.int64), mask=torch.ones(1, 1, dtype=torch.bool),
    )


def _favoured(proposal: Proposal, nodes: Iterable[int]) -> dict[int, int]:
    """MoE-branch node -> the expert whose own distribution gives its token the higher probability (the gate
    mixes both experts, and its larger weight says little about which of them put the token there)."""
    if proposal.experts is None:
        return {}
    tree = proposal.tree
    parents, tokens = tree.parents.tolist(), tree.tokens.tolist()
    children = {n: (parents[n], tokens[n]) for n in nodes if tree.branches[n] == MOE_BRANCH}
    return proposal.experts.favoured(children)


def _versions() -> dict[str, str]:
    import transformers

    return {"transformers": transformers.__version__}
