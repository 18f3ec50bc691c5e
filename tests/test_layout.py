"""The target's linear layers and head computed by any of three kernels (core.layout): the same model, the kernel
kept chosen by timing."""
import time

import pytest
import torch
from torch import nn

from core.config import EngineConfig, TreeConfig
from core.engine import SpecDecoder
from core.layout import (KERNELS, OneDnnLinear, TransposedLinear, available_kernels, choose_layout, kernel_of,
                         layout_of, linears, set_layout, swap)
from core.registry import attach, random_drafter
from core.trace import summarize
from tests.helpers import make_tiny_target


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return make_tiny_target(tmp_path_factory.mktemp("layout"), seed=3)


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().clone() for name, m in linears(module).items()}


def test_the_tiny_torch_build_here_has_every_kernel():
    assert available_kernels() == KERNELS


@pytest.mark.parametrize("kernel, kind", [("transposed", TransposedLinear), ("onednn", OneDnnLinear)])
def test_kernels_round_trip_with_the_same_weights(target, kernel, kind):
    target.set_layout("stock")
    before = _weights(target.decoder)
    assert before and layout_of(target.decoder) == "stock"
    assert target.set_layout(kernel) == f"{kernel}; head: {kernel}"
    assert target.kernels == (kernel, kernel)
    swapped = linears(target.decoder)
    assert set(swapped) == set(before) and all(type(m) is kind for m in swapped.values())  # same names
    for name, m in swapped.items():
        assert torch.equal(m.weight, before[name])  # ``weight`` still reads [out, in]
        if kind is TransposedLinear:
            assert m.weight_t.shape == before[name].shape[::-1] and m.weight_t.is_contiguous()
    target.set_layout("stock")
    after = linears(target.decoder)
    assert all(type(m) is nn.Linear for m in after.values())
    assert all(torch.equal(after[name].weight, before[name]) for name in before)
    assert target._head["lm_head"] is target.lm_head  # the model's own head (its weight tied) is back


def test_swap_refuses_an_unknown_kernel_and_keeps_a_layer_already_in_it():
    linear = nn.Linear(4, 3)
    assert swap(linear, "stock") is linear and kernel_of(swap(linear, "onednn")) == "onednn"
    with pytest.raises(ValueError, match="kernel must be one of stock, transposed, onednn"):
        swap(linear, "rows")


def test_onednn_computes_what_nn_linear_does_with_gradients_and_other_dtypes():
    linear = nn.Linear(24, 40)
    fast = OneDnnLinear(linear)
    x = torch.randn(2, 5, 24, requires_grad=True)  # [batch, q, in]
    with torch.no_grad():
        torch.testing.assert_close(fast(x), linear(x), rtol=1e-5, atol=1e-5)
    fast(x).sum().backward()  # autograd through the stock product (oneDNN's op has none)
    want = torch.autograd.grad(linear(x).sum(), x)[0]
    torch.testing.assert_close(x.grad, want)
    half = OneDnnLinear(nn.Linear(24, 40).to(torch.bfloat16))
    assert half(x.detach().to(torch.bfloat16)).dtype == torch.bfloat16


def test_every_kernel_decodes_the_same_tokens_and_speculation_stays_lossless(target):
    cfg = EngineConfig(max_new_tokens=24, tree=TreeConfig(top_k=4, depth=3, total_tokens=12))
    prompt = torch.arange(40) * 31 % 1000
    outputs, logits = {}, {}
    for kernel in KERNELS:
        target.set_layout(kernel)
        cache = target.new_cache()
        logits[kernel] = target.forward(prompt, torch.arange(40), cache).logits  # [40, vocab]
        outputs[kernel] = summarize(SpecDecoder(target).generate("Hello there", cfg)).text_tokens
        proposer = attach(random_drafter(target, "moe", seed=1), target, "jakiro")
        speculative = summarize(SpecDecoder(target, proposer).generate("Hello there", cfg)).text_tokens
        assert speculative == outputs[kernel], kernel
    target.set_layout("stock")
    for kernel in KERNELS:
        torch.testing.assert_close(logits[kernel], logits["stock"], rtol=1e-5, atol=1e-4)
        assert outputs[kernel] == outputs["stock"]


@pytest.mark.parametrize("fast", KERNELS)
def test_auto_keeps_the_kernel_that_times_fastest(target, fast):
    target.set_layout("stock")

    def probe() -> None:  # every kernel but ``fast`` made 30 ms slower
        time.sleep(0.0 if layout_of(target.decoder) == fast else 0.03)

    choice = choose_layout(target.decoder, probe, rounds=3)
    assert choice.kept == fast == layout_of(target.decoder)
    assert set(choice.ms) == set(KERNELS) and min(choice.ms, key=choice.ms.get) == fast
    assert choice.describe().startswith(f"{fast} (probe forwards: stock ")
    set_layout(target.decoder, "stock")


def test_a_kernel_barely_faster_than_stock_is_not_kept(target):
    target.set_layout("stock")
    def probe() -> None:  # every other kernel 2.5% faster than stock
        time.sleep(0.02 if layout_of(target.decoder) == "stock" else 0.0195)

    choice = choose_layout(target.decoder, probe, rounds=3, margin=0.9)
    assert choice.kept == "stock" == layout_of(target.decoder)


def test_auto_on_a_cpu_in_float32_times_decoder_and_head_and_says_which_it_kept(target):
    note = target.set_layout("auto")
    decoder, head = target.kernels
    assert note.startswith(f"{decoder} (probe forwards: stock ")
    assert f"; head: {head} (probe products: stock " in note
    target.set_layout("stock")


def test_the_decoder_and_the_head_take_separate_kernels(target):
    assert target.set_layout("transposed", head="onednn") == "transposed; head: onednn"
    assert target.kernels == ("transposed", "onednn")
    target.set_layout("stock")


@pytest.mark.parametrize("layout, head", [("columns", None), ("stock", "rows")])
def test_an_unknown_layout_is_refused(target, layout, head):
    with pytest.raises(ValueError, match="layout must be one of auto, stock, transposed, onednn"):
        target.set_layout(layout, head)
