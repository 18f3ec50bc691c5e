"""Int8 drafter weights (core.quant): the arithmetic, the copy, and that decoding stays lossless."""
import pytest
import torch

from core.variants import split_variant
from core.config import EngineConfig, TreeConfig
from core.drafter import save_drafter
from core.engine import SpecDecoder
from core.quant import (Int4Linear, Int8Linear, QuantExperts, W8A8Linear, quantize_drafter, quantize_groups,
                        quantize_rows, quantized_linear, resolve_weights, w8a8_supported, weights_name)
from core.registry import attach, build_proposer, random_drafter
from core.trace import summarize
from tests.helpers import NO_FALLBACK

PROMPTS = ["Tell me a story about a dragon.", "List three colours."]


def test_rows_round_to_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.logspace(-3, 1, 64)[:, None]  # rows of very different scales
    w[5] = 0.0  # an all-zero row must not divide by zero
    q, scales = quantize_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    err = (q.float() * scales[:, None] - w).abs()
    assert torch.all(err <= scales[:, None] / 2 + 1e-7)
    assert torch.all(q[5] == 0)
    assert torch.equal(q.abs().amax(1)[torch.arange(64) != 5], torch.full((63,), 127, dtype=torch.int8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_int8_linear_is_the_dequantized_matmul(dtype):
    torch.manual_seed(1)
    w = torch.randn(40, 32)
    layer = Int8Linear(w.to(dtype))
    x = torch.randn(2, 3, 32, dtype=dtype)  # leading dimensions are kept
    q, scales = quantize_rows(w.to(dtype))
    reference = x.float() @ (q.float() * scales.to(dtype).float()[:, None]).T  # [2, 3, 40]
    out = layer(x)
    assert out.shape == (2, 3, 40) and out.dtype == dtype
    assert layer.scales.dtype == torch.bfloat16  # any activations are multiplied in bfloat16 (vectorised)
    assert torch.allclose(out.float(), reference, atol=0.1, rtol=0.02)
    assert layer(x[:, :0]).shape == (2, 0, 40)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_linear_is_the_dequantized_matmul(dtype):
    torch.manual_seed(5)
    w = torch.randn(40, 128)  # 40 rows: padded to 48 for the kernel, sliced back
    layer = Int4Linear(w.to(dtype))
    q, scales, low = quantize_groups(w.to(dtype), 64)
    assert q.min() >= 0 and q.max() <= 15
    dequant = (q.reshape(40, 2, 64).float() * scales[..., None] + low[..., None]).reshape(40, 128)  # [N, K]
    assert (dequant - w.to(dtype).float()).abs().max() <= scales.max() / 2 + 1e-6  # within half a step
    x = torch.randn(3, 128, dtype=dtype)
    out = layer(x)
    assert out.shape == (3, 40) and out.dtype == dtype
    assert layer.scales_zeros.dtype == torch.bfloat16
    assert torch.allclose(out.float(), x.float() @ dequant.T, atol=0.15, rtol=0.02)


needs_fbgemm = pytest.mark.skipif(not w8a8_supported(), reason="w8a8 needs FBGEMM (x86 torch builds)")


@needs_fbgemm
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_w8a8_linear_is_the_dequantized_matmul_within_activation_rounding(dtype):
    torch.manual_seed(6)
    w = torch.randn(40, 24)  # any width: no kernel blocks
    layer = W8A8Linear(w.to(dtype))
    q, scales = quantize_rows(w.to(dtype))
    assert torch.equal(layer.qweight, q)
    x = torch.randn(2, 3, 24, dtype=dtype)
    reference = x.float() @ (q.float() * scales[:, None]).T  # [2, 3, 40]: the weights' rounding alone
    out = layer(x)
    assert out.shape == (2, 3, 40) and out.dtype == dtype
    rel = (out.float() - reference).norm() / reference.norm()
    assert 0 < rel < 0.02, rel  # the activations are rounded to 8 bits too, and only that
    assert layer(x[:, :0]).shape == (2, 0, 40)


@needs_fbgemm
def test_w8a8_smoothing_keeps_the_product_and_spares_the_small_channels():
    torch.manual_seed(7)
    w = torch.randn(64, 48)
    x = torch.randn(4, 48)
    x[:, 3] *= 80  # one outlier input channel, as drafting's inputs have
    exact = x @ w.T
    plain, smoothed = W8A8Linear(w), W8A8Linear(w, act_absmax=x.abs().amax(0))
    assert plain.inv_smooth is None and smoothed.inv_smooth.shape == (48,)
    err = {name: ((layer(x) - exact).norm() / exact.norm()).item() for name, layer in
           (("plain", plain), ("smoothed", smoothed))}
    assert err["smoothed"] < 0.02 and err["smoothed"] < err["plain"] / 2, err
    small = x.clone()
    small[:, 3] = 0.0  # without the outlier the smoothed layer still computes the same product
    assert (smoothed(small) - small @ w.T).norm() / (small @ w.T).norm() < 0.03


@needs_fbgemm
@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_w8a8_drafters_are_calibrated_on_every_matrix(tiny_target, ffn):
    from core.calibrate import drafting_ranges

    native = attach(random_drafter(tiny_target, ffn, seed=3), tiny_target, ffn).drafter.float()
    ranges = drafting_ranges(native, tiny_target, tiny_target.embed)
    quantized = attach(random_drafter(tiny_target, ffn, seed=3), tiny_target, ffn, weights="w8a8").drafter
    layers = {name: m for name, m in quantized.named_modules() if isinstance(m, W8A8Linear)}
    assert set(ranges) == set(layers) and "head" in layers and ("ffn.down.experts.1" in layers) == (ffn == "moe")
    for name, layer in layers.items():
        assert ranges[name].shape == (layer.in_features,) and bool((ranges[name] > 0).any())
        assert layer.inv_smooth is not None  # every matrix's inputs were evened out
    assert quantized.dtype == torch.float32  # float32 between the integer matmuls, whatever the target's dtype


def test_int4_needs_whole_groups_and_falls_back_to_int8():
    with pytest.raises(ValueError, match="groups of 64"):
        Int4Linear(torch.randn(16, 96))
    assert isinstance(quantized_linear(torch.randn(16, 96), "int4"), Int8Linear)
    assert isinstance(quantized_linear(torch.randn(16, 128), "int4"), Int4Linear)
    with pytest.raises(ValueError, match="blocks of 16"):
        Int8Linear(torch.randn(16, 24))  # the kernel would crash on it
    odd, x = torch.randn(16, 24), torch.randn(3, 24)
    for fmt in ("int8", "int4"):
        plain = quantized_linear(odd, fmt)  # stays a plain matrix, frozen
        assert type(plain) is torch.nn.Linear and not plain.weight.requires_grad
        assert torch.equal(plain(x), x @ odd.T)
    assert resolve_weights("auto", torch.device("cpu")) == ("w8a8" if w8a8_supported() else "int8")
    assert resolve_weights("auto", torch.device("cuda")) == "native"
    assert resolve_weights("w8a8", torch.device("cpu")) == "w8a8" or not w8a8_supported()
    with pytest.raises(ValueError, match="CPU only"):
        resolve_weights("int4", torch.device("cuda"))
    with pytest.raises(ValueError, match="one of auto, int8, int4, w8a8, native"):
        resolve_weights("int2", torch.device("cpu"))


def test_int8_experts_match_the_einsum():
    torch.manual_seed(2)
    down = torch.randn(2, 32, 16)  # [E, I, H]
    act = torch.randn(5, 2, 32)  # [n, E, I]
    experts = QuantExperts(down, "int8")
    dequant = torch.stack([quantize_rows(d.T)[0].float() * quantize_rows(d.T)[1][:, None] for d in down])  # [E, H, I]
    out = experts(act)
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.einsum("nei,ehi->neh", act, dequant), atol=0.1, rtol=0.02)


@pytest.mark.parametrize("fmt, tolerance", [("int8", 0.02), ("int4", 0.15),
                                            pytest.param("w8a8", 0.04, marks=needs_fbgemm)])
@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_quantized_drafter_is_a_close_copy(tiny_target, ffn, fmt, tolerance):
    proposer = attach(random_drafter(tiny_target, ffn, seed=3), tiny_target, ffn)
    drafter = proposer.drafter
    before = {k: v.clone() for k, v in drafter.state_dict().items()}
    quantized = quantize_drafter(drafter, fmt)
    assert all(torch.equal(before[k], v) for k, v in drafter.state_dict().items())  # the original is untouched
    assert drafter.head is None and weights_name(quantized) == fmt and weights_name(drafter) == "native"
    assert not any(isinstance(m, torch.nn.Linear) for m in quantized.modules())  # every matrix is quantized
    torch.manual_seed(4)
    n, H = 6, drafter.cfg.hidden_size
    feats, embeds = torch.randn(n, H), torch.randn(n, H)
    ref = drafter(feats, embeds, torch.arange(n), drafter.new_cache(), with_experts=drafter.cfg.is_moe)
    out = quantized(feats, embeds, torch.arange(n), quantized.new_cache(), with_experts=drafter.cfg.is_moe)
    rel = (out.features - ref.features).norm() / ref.features.norm()
    assert 0 < rel < tolerance, rel  # rounded, and only slightly
    if ffn == "moe":
        assert (out.contrastive - ref.contrastive).norm() / ref.contrastive.norm() < tolerance
        assert torch.allclose(out.routing.moe_weights, ref.routing.moe_weights, atol=tolerance)
    p_ref, p_out = drafter.log_probs(ref.features).exp(), quantized.log_probs(out.features).exp()
    assert (p_out - p_ref).abs().sum(-1).max() < 5 * tolerance  # total variation of the draft distributions


def test_quantizing_needs_a_bound_head_and_a_quantized_drafter_is_not_saved(tiny_target, tmp_path):
    drafter = random_drafter(tiny_target, "dense")
    with pytest.raises(RuntimeError, match="bind the drafter"):
        quantize_drafter(drafter)
    quantized = attach(drafter, tiny_target, "eagle", weights="int8").drafter
    with pytest.raises(ValueError, match="quantized for inference"):
        save_drafter(quantized, tmp_path / "out")
    with pytest.raises(ValueError, match="quantized for inference"):
        save_drafter(attach(random_drafter(tiny_target, "dense"), tiny_target, "eagle", weights="int4").drafter,
                     tmp_path / "out4")
    quantized.bind_head(tiny_target.lm_head.weight)  # a new head is used as given, not a stale int8 one
    assert quantized.head is None and weights_name(quantized) == "int8"  # its other matrices stay int8
    with pytest.raises(ValueError, match="quantized for inference"):
        save_drafter(quantized, tmp_path / "out")
    if w8a8_supported():
        with pytest.raises(ValueError, match="quantized for inference"):
            save_drafter(attach(random_drafter(tiny_target, "moe"), tiny_target, "j", weights="w8a8").drafter,
                         tmp_path / "out8")


TREES = [
    ("small", TreeConfig(top_k=3, depth=4, total_tokens=10)),
    ("hybrid", TreeConfig(top_k=4, depth=4, total_tokens=16, schedule="hybrid")),
    ("decoupled adaptive", TreeConfig(top_k=3, depth=3, total_tokens=12, decoupled=True, adaptive=True)),
]


@pytest.mark.parametrize("fmt", ["int8", "int4", pytest.param("w8a8", marks=needs_fbgemm)])
@pytest.mark.parametrize("ffn", ["dense", "moe"])
@pytest.mark.parametrize("name, tree", TREES)
def test_quantized_drafters_are_lossless(tiny_target, ffn, name, tree, fmt):
    if ffn == "dense" and (tree.schedule == "hybrid" or tree.decoupled):
        pytest.skip("hybrid/decoupled need the MoE drafter")
    spec = SpecDecoder(tiny_target, attach(random_drafter(tiny_target, ffn, seed=3), tiny_target, ffn, weights=fmt))
    plain = SpecDecoder(tiny_target)
    for prompt in PROMPTS:
        cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=30, tree=tree)
        assert summarize(spec.generate(prompt, cfg)).text_tokens == summarize(plain.generate(prompt, cfg)).text_tokens


def test_build_proposer_quantizes_on_the_cpu_unless_told(tiny_target):
    assert weights_name(build_proposer("eagle", tiny_target).drafter) == ("w8a8" if w8a8_supported() else "int8")
    assert weights_name(build_proposer("jakiro", tiny_target, weights="native").drafter) == "native"
    assert weights_name(None) is None


def test_weight_variants_parse_and_exclude_each_other():
    assert split_variant("jakiro@int8+fixed") == ("jakiro", ("int8", "fixed"))
    assert split_variant("eagle@native") == ("eagle", ("native",))
    with pytest.raises(ValueError, match="at most one of int8, int4, w8a8, native"):
        split_variant("jakiro@int8+native")


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_the_card_counts_a_quantized_drafter_alike(tiny_target, ffn):
    from core.card import drafter_card

    native = attach(random_drafter(tiny_target, ffn, seed=3), tiny_target, ffn).drafter
    card, int8_card = drafter_card(native, ffn, False), drafter_card(quantize_drafter(native), ffn, False)
    assert int8_card.parameters == card.parameters == sum(p.numel() for p in native.parameters())
    assert int8_card.weights == "int8" and card.weights == "native"


def test_the_drafter_weights_flag_reaches_the_engines(monkeypatch):
    import runpy
    from pathlib import Path

    import app.session
    from core.cli import build_parser

    app_script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "app.py"), run_name="app_script")
    seen = {}
    monkeypatch.setattr(app.session, "load_engines", lambda *args, **kwargs: seen.update(kwargs) or "engines")
    for flag in ("native", "int8", "int4", "w8a8", "auto"):
        args = app_script["parse_args"](["--drafter-weights", flag, "--no-warm-up"])
        assert app_script["load_models"](args) == "engines" and seen["weights"] == flag
    assert build_parser().parse_args(["generate", "--prompt", "hi"]).drafter_weights == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--prompt", "hi", "--drafter-weights", "int2"])


@pytest.mark.parametrize("fmt", ["int8", pytest.param("w8a8", marks=needs_fbgemm)])
def test_a_quantized_jakiro_drafter_keeps_the_target_distribution(tiny_target, fmt):
    """Sampling at temperature 1 with a quantized MoE drafter (hybrid schedule): the first two tokens are distributed as
    the target's own (chi-square over every pair the target can give)."""
    from scipy.stats import chisquare

    from core.config import SamplingConfig
    from core.verify import target_probs

    sampling = SamplingConfig(temperature=1.0, top_k=3)
    prompt = tiny_target.encode_chat("Hi")

    @torch.inference_mode()
    def probs(context: list[int]) -> torch.Tensor:  # [vocab]
        return target_probs(tiny_target.model(torch.tensor([context])).logits[0, -1:], sampling)[0]

    p1 = probs(prompt)
    firsts = p1.nonzero().flatten().tolist()
    p2 = {x: probs(prompt + [x]) for x in firsts}
    proposer = attach(random_drafter(tiny_target, "moe", seed=2), tiny_target, "moe", weights=fmt)
    decoder = SpecDecoder(tiny_target, proposer)
    tree = TreeConfig(top_k=2, depth=2, total_tokens=4, schedule="hybrid")
    draws, counts = 600, {}
    for seed in range(draws):
        cfg = EngineConfig(fallback=NO_FALLBACK, max_new_tokens=2, tree=tree, sampling=sampling, seed=seed)
        pair = tuple(summarize(decoder.generate(prompt, cfg, detail=False)).text_tokens[:2])
        counts[pair] = counts.get(pair, 0) + 1
    cells = [(x, y) for x in firsts for y in p2[x].nonzero().flatten().tolist()]
    assert set(counts) <= set(cells)
    expected = [float(p1[x] * p2[x][y]) * draws for x, y in cells]
    assert chisquare([counts.get(c, 0) for c in cells], expected).pvalue > 1e-3
