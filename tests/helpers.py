"""Shared test builders: tiny random targets that reuse the real tokenizer, and an oracle proposer."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from core.config import TreeConfig
from core.policy import FallbackConfig
from core.drafting import Proposal
from core.sizing import DraftStop
from core.models import resolve_target
from core.target import TargetModel
from core.tree import Layer, assemble

if TYPE_CHECKING:
    import gradio as gr

    from app.session import Engines

VOCAB = 49152  # the default target's tokenizer
TEST_DEVICE = os.environ.get("JAKIRO_TEST_DEVICE", "cpu")  # benchmarks/gpu_check.sh runs the suite on cuda


def make_tiny_target(folder: Path, seed: int = 0, layers: int = 2, hidden: int = 64, context: int = 512) -> TargetModel:
    """A randomly initialised Llama of the given shape, saved and loaded like any local checkpoint."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, rope_theta=10000.0,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper logits than the default init, so greedy paths are not near-ties
        model.lm_head.weight.mul_(8.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_target("default")).save_pretrained(folder)
    return TargetModel.load(str(folder), dtype="float32", device=TEST_DEVICE)


class OracleProposer:
    """Proposes the target's own greedy continuation as the best chain, plus decoy siblings.

    Greedy acceptance of its trees must be total: every cycle accepts ``depth`` tokens (or the
    chain up to a stop), so tau reaches depth + 1.
    """

    name = "oracle"

    def __init__(self, target: TargetModel, decoys: int = 2, sibling_depths: frozenset[int] = frozenset()) -> None:
        self.target = target
        self.decoys = decoys
        self.sibling_depths = sibling_depths  # at these depths a decoy outranks the true token
        self.context: list[int] = []
        self.feature_layers: tuple[int, ...] = ()

    def reset(self, prompt_ids: list[int]) -> None:
        self.context = list(prompt_ids[:1])

    def check_tree(self, tree: TreeConfig) -> None:
        pass

    @torch.inference_mode()
    def propose(self, features, next_tokens, root_pos, tree: TreeConfig, stop: DraftStop = DraftStop()) -> Proposal:
        self.context = self.context[: root_pos - next_tokens.numel() + 1] + next_tokens.tolist()
        seq = list(self.context)
        layers, parent = [], 0
        offset = 1
        for depth in range(1, tree.depth + 1):
            logits = self.target.model(torch.tensor([seq], device=self.target.device)).logits[0, -1].cpu()
            top = logits.topk(1 + self.decoys).indices.tolist()
            true_at = 0
            if depth in self.sibling_depths and len(top) > 1:
                top[0], top[1] = top[1], top[0]
                true_at = 1
            scores = torch.tensor([-float(i) / 8 for i in range(len(top))])
            layers.append(Layer(
                parents=torch.full((len(top),), parent), tokens=torch.tensor(top), logp=scores.clone(),
                scores=scores, experts=torch.full((len(top),), -1), routing=torch.zeros(len(top), 4), branch="dense",
            ))
            parent = offset + true_at
            offset += len(top)
            seq.append(top[true_at])
        return Proposal(tree=assemble(self.context[-1], layers, tree.total_tokens), forwards=tree.depth)


NO_FALLBACK = FallbackConfig(enabled=False)  # tests of speculative paths must not drift into plain steps


def tiny_engines(folder: Path) -> Engines:
    """The app's shared engines on a tiny target, with random Jakiro and EAGLE drafters."""
    from app.session import engines_for
    from core import registry

    target = make_tiny_target(folder)
    return engines_for(target, {
        "jakiro": registry.attach(registry.random_drafter(target, "moe"), target, "jakiro"),
        "eagle": registry.attach(registry.random_drafter(target, "dense"), target, "eagle"),
    })


@contextlib.contextmanager
def launched(engines: Engines, max_size: int | None = None) -> Iterator[tuple[gr.Blocks, str]]:
    """The explorer on ``engines``, queued and launched as app.py does (``max_size`` overrides the queue bound);
    yields the Blocks and its URL."""
    from app.ui import QUEUE_SIZE, build_demo, enable_queue, launch_options

    demo = enable_queue(build_demo(engines), QUEUE_SIZE if max_size is None else max_size)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        yield demo, url
    finally:
        demo.close()


@contextlib.contextmanager
def tiny_app(folder: Path) -> Iterator[str]:
    """The explorer on a tiny target with random Jakiro and EAGLE drafters, launched; yields its URL."""
    with launched(tiny_engines(folder)) as (_, url):
        yield url
