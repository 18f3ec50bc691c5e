"""The target's linear layers in either weight layout (core.layout): the same model, chosen by timing."""
import time

import pytest
import torch
from torch import nn

from core.config import EngineConfig, TreeConfig
from core.engine import SpecDecoder
from core.layout import TransposedLinear, choose_layout, is_transposed, set_layout
from core.registry import attach, random_drafter
from core.trace import summarize
from tests.helpers import make_tiny_target


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return make_tiny_target(tmp_path_factory.mktemp("layout"), seed=3)


def _linears(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().clone() for name, m in module.named_modules()
            if isinstance(m, (nn.Linear, TransposedLinear))}


def test_layouts_round_trip_with_the_same_weights(target):
    target.set_layout("stock")
    before = _linears(target.decoder)
    assert before and not is_transposed(target.decoder)
    assert target.set_layout("transposed") == "transposed"
    swapped = {name: m for name, m in target.decoder.named_modules() if isinstance(m, TransposedLinear)}
    assert set(swapped) == set(before)  # every linear layer, under its own name
    for name, m in swapped.items():
        assert m.weight_t.shape == before[name].shape[::-1] and m.weight_t.is_contiguous()
        assert torch.equal(m.weight, before[name])  # ``weight`` still reads [out, in]
    target.set_layout("stock")
    after = _linears(target.decoder)
    assert all(type(target.decoder.get_submodule(name)) is nn.Linear for name in after)
    assert all(torch.equal(after[name], before[name]) for name in before)


def test_both_layouts_decode_the_same_tokens_and_speculation_stays_lossless(target):
    cfg = EngineConfig(max_new_tokens=24, tree=TreeConfig(top_k=4, depth=3, total_tokens=12))
    prompt = torch.arange(40) * 31 % 1000
    outputs, logits = {}, {}
    for layout in ("stock", "transposed"):
        target.set_layout(layout)
        cache = target.new_cache()
        logits[layout] = target.forward(prompt, torch.arange(40), cache).logits  # [40, vocab]
        outputs[layout] = summarize(SpecDecoder(target).generate("Hello there", cfg)).text_tokens
    proposer = attach(random_drafter(target, "moe", seed=1), target, "jakiro")
    speculative = summarize(SpecDecoder(target, proposer).generate("Hello there", cfg)).text_tokens  # transposed
    target.set_layout("stock")
    torch.testing.assert_close(logits["transposed"], logits["stock"], rtol=1e-5, atol=1e-4)
    assert outputs["transposed"] == outputs["stock"] == speculative


@pytest.mark.parametrize("slow_layout, kept", [(True, False), (False, True)])
def test_auto_keeps_the_layout_that_times_faster(target, slow_layout, kept):
    target.set_layout("stock")

    def probe() -> None:  # one layout made 30 ms slower
        time.sleep(0.03 if is_transposed(target.decoder) == slow_layout else 0.0)

    choice = choose_layout(target.decoder, probe, rounds=3)
    assert choice.transposed == kept == is_transposed(target.decoder)
    assert (choice.transposed_ms > choice.stock_ms) == slow_layout
    assert ("transposed" if kept else "stock") in choice.describe().split(" (")[0]
    set_layout(target.decoder, False)


def test_auto_on_a_cpu_in_float32_times_both_and_says_which_it_kept(target):
    note = target.set_layout("auto")
    assert note.startswith(("stock (probe forwards", "transposed (probe forwards"))
    assert is_transposed(target.decoder) == note.startswith("transposed")
    target.set_layout("stock")


def test_an_unknown_layout_is_refused(target):
    with pytest.raises(ValueError, match="layout must be one of auto, stock, transposed"):
        target.set_layout("columns")
