"""The training pipeline on a tiny target: features, loss, resumable fit, and a lossless result."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.config import ConfigError, EngineConfig, TreeConfig
from core.drafter import (add_feature_layers, add_layers, grouped_attention, load_drafter, upcycle_experts,
                          widen_experts)
from core.kv import LayerCaches
from core.engine import SpecDecoder
from core.registry import attach
from core.trace import summarize
from core.train.data import Sequence, encode_conversation, load_features, record_features, recorded_taps
from core.train.losses import drafter_loss
from core.hardware import native_bf16
from core.target import pick_dtype
from core.train.loop import (TrainConfig, _save_checkpoint, collate, draft_vocabulary, make_batches, resolve_precision,
                             step_loss, train)
from core.train.unroll import StackedKV, shift_predictions, unroll_mask
from core.registry import random_drafter


def test_conversation_mask_marks_assistant_tokens_and_end(tiny_target):
    ids, mask = encode_conversation(tiny_target, [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "bye"}, {"role": "assistant", "content": "see you"},
    ])
    text = tiny_target.tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert text == "hi there<|im_end|>see you<|im_end|>"
    assert len(ids) == len(mask)


def test_loss_is_zero_reg_when_prediction_is_exact():
    head = torch.randn(50, 8)
    truth = torch.randn(6, 8)
    parts = drafter_loss(head, truth.clone(), truth, truth.clone(), truth)
    assert parts.reg == pytest.approx(0.0)
    assert parts.top1 == 1.0 and parts.con_top1 == 1.0
    worse = drafter_loss(head, truth + torch.randn(6, 8), truth)
    assert worse.total.item() > parts.total.item()
    assert parts.overlap == pytest.approx(1.0) and 0.0 < worse.overlap < 1.0


def test_overlap_is_the_temperature_one_acceptance_rate():
    """sum_v min(p, q) is the probability that a token sampled from q survives speculative sampling against p."""
    head = torch.eye(3)
    draft, target = torch.log(torch.tensor([[0.7, 0.2, 0.1]])), torch.log(torch.tensor([[0.5, 0.1, 0.4]]))
    parts = drafter_loss(head, draft, target)
    assert parts.overlap == pytest.approx(0.5 + 0.1 + 0.1, abs=1e-6)


@pytest.mark.parametrize("ffn,layers", [("moe", 1), ("dense", 1), ("moe", 2), ("dense", 3)])
def test_unrolled_passes_equal_drafting_on_own_predictions(tiny_target, ffn, layers):
    """Pass j at position t of the training-time test == a depth-(j+1) node drafted after root t-j (with one
    attention layer, and with deeper drafters whose every layer keeps its own cache)."""
    drafter = random_drafter(tiny_target, ffn, seed=3, num_layers=layers).float().eval()
    n, H = 12, tiny_target.config.hidden_size
    torch.manual_seed(0)
    feats, embeds = torch.randn(1, n, H), torch.randn(1, n, H)  # f_t and e_{t+1}
    positions = torch.arange(n)
    kv = StackedKV() if layers == 1 else LayerCaches([StackedKV() for _ in range(layers)])
    x, unrolled = feats, []
    with torch.no_grad():
        for j in range(3):
            out = drafter(x, embeds, positions, cache=kv, mask=unroll_mask(j, n))
            unrolled.append(out.features[0])  # [n, H]
            x = shift_predictions(out.features, feats[:, :1])
        for j in range(3):
            for t in (j, 7, n - 1):
                root = t - j
                cache = drafter.new_cache()
                g = drafter(feats[0, : root + 1], embeds[0, : root + 1], positions[: root + 1], cache).features[-1]
                for d in range(1, j + 1):
                    pos = root + d
                    g = drafter(g[None], embeds[0, pos : pos + 1], positions[pos : pos + 1], cache).features[0]
                assert torch.allclose(g, unrolled[j][t], atol=1e-5), (j, t)


@pytest.mark.parametrize("n, past", [(1, 0), (5, 0), (4, 37)])
def test_drafting_attention_is_training_attention(n, past):
    """Drafting multiplies grouped heads in two matmuls; training uses SDPA: the same function."""
    torch.manual_seed(n + past)
    q, k, v = torch.randn(6, n, 8), torch.randn(2, past + n, 8), torch.randn(2, past + n, 8)  # 3 heads per kv head
    mask = torch.rand(n, past + n) > 0.4
    mask[:, past:] = torch.eye(n, dtype=torch.bool) | mask[:, past:]  # every position sees itself
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert torch.allclose(grouped_attention(q, k, v, mask), ref, atol=1e-5)


def test_unroll_mask_sees_context_then_own_ancestors():
    m = unroll_mask(2, 4).int()
    assert m.tolist() == [[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
                          [0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0],
                          [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
                          [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]]


def test_batches_respect_budget_and_cover_everything():
    lengths = [5, 50, 7, 30, 12, 64, 3]
    batches = make_batches(lengths, list(range(7)), 64, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert all(max(lengths[i] for i in b) * len(b) <= 64 or len(b) == 1 for b in batches)


@pytest.fixture(scope="module")
def features(tiny_target, tmp_path_factory):
    sequences = []
    for i in range(24):
        prompt = tiny_target.encode_chat(f"Count from {i} please.")
        answer = [(i * 7 + k) % 300 + 100 for k in range(20)] + [2]
        sequences.append(Sequence(ids=prompt + answer, loss_mask=[0] * len(prompt) + [1] * len(answer), source="t"))
    path = tmp_path_factory.mktemp("feat") / "f.safetensors"
    record_features(tiny_target, sequences, path, batch_tokens=512)
    return load_features([path])


def test_features_match_a_direct_forward(tiny_target, features):
    ids, mask, hidden = features.sequence(3)
    with torch.inference_mode():
        direct = tiny_target.decoder(input_ids=ids[None].to(tiny_target.device)).last_hidden_state[0].cpu()
    assert torch.allclose(hidden.float(), direct, atol=2e-2, rtol=2e-2)
    assert int(mask.sum()) == 21


def test_draft_vocabulary_keeps_stop_tokens(features):
    vocab = draft_vocabulary(features, 10, frozenset({2}))
    assert vocab[0] == 2 and vocab.numel() == 10


@pytest.mark.parametrize("from_pass,w_con", [(0, 1.0), (1, 1.0), (0, 0.0)])
def test_contrastive_loss_only_from_the_chosen_pass_but_always_measured(tiny_target, features, from_pass, w_con):
    """contrastive_from_pass=1: pass 0's loss leaves the contrastive routing head untouched (no gradient), the
    last pass trains it; w_con=0 leaves it untouched in every pass; every pass still measures its agreement."""
    drafter = random_drafter(tiny_target, "moe", seed=5).float()
    drafter.bind_head(tiny_target.lm_head.weight.float())
    cfg = TrainConfig(ffn="moe", unroll=2, contrastive_from_pass=from_pass, w_con=w_con, noise=0.0)
    batch = collate(features, list(range(4)))
    parts = step_loss(drafter, tiny_target.embed_tokens, *batch, cfg, train=True)
    assert all(not torch.isnan(torch.tensor(p.con_top1)) for p in parts)
    con_rows = drafter.ffn.gate_up.weight  # the router's last two rows are the contrastive head

    def con_grad(loss: torch.Tensor) -> float:
        drafter.zero_grad()
        loss.backward(retain_graph=True)
        return con_rows.grad[-2:].abs().sum().item()

    assert (con_grad(parts[0].total) == 0.0) == (from_pass == 1 or w_con == 0.0)
    assert (con_grad(parts[1].total) > 0.0) == (w_con > 0.0)
    with pytest.raises(ConfigError, match="contrastive_from_pass must name one of the 2 unrolled passes"):
        dataclasses.replace(cfg, contrastive_from_pass=2)
    with pytest.raises(ConfigError, match="w_con must be a finite weight >= 0"):
        dataclasses.replace(cfg, w_con=-0.5)


def test_expert_roles_reads_the_same_agreement_as_the_training_loss(tiny_target, features):
    """benchmarks/expert_roles.py: the MoE output's agreement is the loss's pass-0 top-1 on the same batch (no
    noise), the contrastive head's first choices are shares of the positions, each expert alone is scored."""
    from benchmarks.expert_roles import expert_roles

    drafter = random_drafter(tiny_target, "moe", seed=3).float()
    drafter.bind_head(tiny_target.lm_head.weight.float())
    sequences = [0, 5, 9]
    roles = expert_roles(drafter, tiny_target.embed_tokens, features, sequences)
    cfg = TrainConfig(ffn="moe", noise=0.0)
    with torch.no_grad():
        parts = step_loss(drafter, tiny_target.embed_tokens, *collate(features, sequences), cfg, train=False)
    assert roles["positions"] == parts[0].positions
    assert roles["agreement_moe"] == pytest.approx(parts[0].top1)
    assert sum(roles["contrastive_top_share"]) == pytest.approx(1.0)
    assert len(roles["agreement_expert_alone"]) == drafter.cfg.num_experts
    assert all(0.0 <= a <= 1.0 for a in roles["agreement_expert_alone"])
    assert sum(roles["moe_weight_mean"]) == pytest.approx(1.0)


def test_a_job_stopped_in_its_final_evaluation_keeps_its_steps(tiny_target, features, tmp_path, monkeypatch):
    """The checkpoint is written before the final held-out evaluation (minutes on one core), so a job killed
    during it resumes from its last step, and the next run evaluates and records it."""
    import core.train.loop as loop

    cfg = TrainConfig(ffn="dense", draft_vocab=256, epochs=1, batch_tokens=512, checkpoint_every=1000,
                      holdout_every=6, warmup_steps=2, lr=2e-3)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(loop, "evaluate", killed)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_target, features, cfg, tmp_path / "run", max_minutes=1e-9)  # one step, then the kill
    saved = json.loads((tmp_path / "run" / "state.json").read_text())
    assert saved["step"] == 1 and "final" not in saved
    state = train(tiny_target, features, cfg, tmp_path / "run")
    assert state["step"] > 1 and state["done"] and state["final"]["positions"] > 0
    assert json.loads((tmp_path / "run" / "state.json").read_text())["final"] == state["final"]


@pytest.mark.parametrize("ffn,unroll", [("moe", 2), ("dense", 1)])
def test_fit_resume_and_use(tiny_target, features, tmp_path, ffn, unroll):
    cfg = TrainConfig(ffn=ffn, draft_vocab=256, epochs=3, batch_tokens=512, checkpoint_every=4, holdout_every=6,
                      warmup_steps=2, lr=2e-3, unroll=unroll)
    first = train(tiny_target, features, cfg, tmp_path / "run", max_minutes=1e-9)  # stops after one step
    assert first["step"] == 1 and not first["done"]
    _crash_while_checkpointing(tiny_target, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == 1  # the old checkpoint survives
    state = train(tiny_target, features, cfg, tmp_path / "run")
    assert state["done"] and state["step"] > 1
    with pytest.raises(ConfigError, match="trained with --holdout-scheme per-folder --holdout-every 6"):
        train(tiny_target, features, dataclasses.replace(cfg, holdout_scheme="global"), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == state["step"]
    history = state["history"]
    assert {h["precision"] for h in history} == {resolve_precision("auto", tiny_target.device)}
    assert history[-1]["loss"] < history[0]["loss"] + 1e-6
    assert 0 <= history[-1]["top1_unrolled"] <= 1
    drafter = load_drafter(tmp_path / "run", tiny_target.fingerprint(), tiny_target.vocab_size).to(tiny_target.device)
    _check_scores_by_depth(drafter, tiny_target, features, cfg, state["final"])
    assert drafter.cfg.draft_vocab_size == drafter.vocab_ids.numel() <= 256
    proposer = attach(drafter, tiny_target, ffn)
    tree = TreeConfig(top_k=3, depth=3, total_tokens=10, schedule="hybrid" if ffn == "moe" else "standard")
    decoder = SpecDecoder(tiny_target, proposer)
    plain = summarize(SpecDecoder(tiny_target).generate("Count from 3 please.", EngineConfig(max_new_tokens=24)))
    spec = summarize(decoder.generate("Count from 3 please.", EngineConfig(max_new_tokens=24, tree=tree)))
    assert spec.text_tokens == plain.text_tokens


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_only_where_the_hardware_has_it(monkeypatch, native):
    """An Ice Lake Xeon emulates bfloat16 (feature recording ran ~4x slower than in float32), so ``auto`` (the
    default of feature recording and of training's mixed precision) falls back to float32 there."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    cpu = torch.device("cpu")
    assert native_bf16(cpu) is native
    assert pick_dtype("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert pick_dtype("float32", cpu) == torch.float32 and pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ConfigError, match="precision must be one of auto, bf16, fp32, got 'fp16'"):
        TrainConfig(ffn="moe", precision="fp16")
    with pytest.raises(ValueError, match="or auto, got 'float8'"):
        pick_dtype("float8", cpu)


def _check_scores_by_depth(drafter, target, features, cfg, final):
    """``evaluate(passes=N)`` scores a node at every depth down to N; its first two depths are the training
    loop's own held-out numbers."""
    from core.train.loop import evaluate, holdout_split

    drafter.bind_head(target.lm_head.weight.float())
    scores = evaluate(drafter, target.embed_tokens, features, holdout_split(features, cfg)[0], cfg, passes=4)
    depths = scores["top1_by_depth"]
    assert len(depths) == 4 and depths[0] == pytest.approx(final["top1"], abs=1e-6)
    assert depths[1] == pytest.approx(final["top1_unrolled"], abs=1e-6)
    assert all(0 <= d <= 1 for d in depths)
    contrastive = scores["con_top1_by_depth"]
    if cfg.ffn == "moe":
        assert len(contrastive) == 4 and contrastive[0] == pytest.approx(final["con_top1"], abs=1e-6)
    else:
        assert all(c is None for c in contrastive)
    assert "top1_by_depth" not in evaluate(drafter, target.embed_tokens, features, [0], cfg)


def test_warm_start_continues_from_a_trained_drafter(tiny_target, features, tmp_path):
    """--init starts a new run from a trained drafter's weights and draft vocabulary; its first evaluation is that
    drafter's (the optimizer has not moved it yet at step 1 with a ~zero learning rate), not a random one's."""
    cfg = TrainConfig(ffn="moe", draft_vocab=256, epochs=2, batch_tokens=512, checkpoint_every=1, holdout_every=6,
                      warmup_steps=2, lr=2e-3)
    trained = train(tiny_target, features, cfg, tmp_path / "a")
    warm_cfg = dataclasses.replace(cfg, lr=1e-12, epochs=0.01)
    warm = train(tiny_target, features, warm_cfg, tmp_path / "b", init=tmp_path / "a")
    cold = train(tiny_target, features, warm_cfg, tmp_path / "c")
    assert warm["init"] == {"folder": str(tmp_path / "a"), "steps": trained["step"]}
    assert warm["final"]["loss"] == pytest.approx(trained["final"]["loss"], rel=1e-3)
    assert abs(cold["final"]["loss"] - trained["final"]["loss"]) > 1e-2
    a, b = (load_drafter(tmp_path / run, tiny_target.fingerprint(), tiny_target.vocab_size) for run in "ab")
    assert torch.equal(a.vocab_ids, b.vocab_ids)
    with pytest.raises(ConfigError, match="holds a moe drafter, this run trains --ffn dense"):
        train(tiny_target, features, dataclasses.replace(warm_cfg, ffn="dense"), tmp_path / "d", init=tmp_path / "a")
    with pytest.raises(ConfigError, match="drafts over .* tokens, this run asks for --draft-vocab 0"):
        train(tiny_target, features, dataclasses.replace(warm_cfg, draft_vocab=0), tmp_path / "e", init=tmp_path / "a")
    wide = train(tiny_target, features, dataclasses.replace(warm_cfg, expert_size=96), tmp_path / "w", init=tmp_path / "a")
    assert wide["init"]["widened"] == {"from": 64, "to": 96}
    assert wide["final"]["loss"] == pytest.approx(trained["final"]["loss"], rel=1e-3)  # the same function
    assert load_drafter(tmp_path / "w", tiny_target.fingerprint()).cfg.expert_width == 96


def test_warm_start_upcycles_a_dense_drafter_into_jakiro(tiny_target, features, tmp_path):
    """--ffn moe --init <dense run> starts from the dense drafter's function: its first evaluation's next-token
    agreement is the dense drafter's, and the record says it was upcycled, also in a run trained on from it."""
    cfg = TrainConfig(ffn="dense", draft_vocab=256, epochs=2, batch_tokens=512, checkpoint_every=1, holdout_every=6,
                      warmup_steps=2, lr=2e-3)
    dense = train(tiny_target, features, cfg, tmp_path / "dense")
    up_cfg = dataclasses.replace(cfg, ffn="moe", lr=1e-12, epochs=0.01)
    up = train(tiny_target, features, up_cfg, tmp_path / "up", init=tmp_path / "dense")
    assert up["init"]["upcycled"] == {"from": "dense", "intermediate": 128}
    assert up["final"]["top1"] == pytest.approx(dense["final"]["top1"], abs=1e-6)
    assert load_drafter(tmp_path / "up", tiny_target.fingerprint()).cfg.expert_width == 64
    again = train(tiny_target, features, up_cfg, tmp_path / "again", init=tmp_path / "up")  # its lineage stays known
    assert "upcycled" not in again["init"] and again["init"]["previous"] == up["init"]


def _assert_same_function(before, after) -> None:
    """Both drafters give the same MoE and contrastive features, expert outputs and routing on random inputs."""
    H = before.cfg.hidden_size
    feats, embeds, pos = torch.randn(7, H), torch.randn(7, H), torch.arange(7)
    a, b = before(feats, embeds, pos, with_experts=True), after(feats, embeds, pos, with_experts=True)
    for x, y in ((a.features, b.features), (a.contrastive, b.contrastive), (a.expert_features, b.expert_features),
                 (a.routing.logits, b.routing.logits)):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)


def test_widened_experts_compute_the_same_function_and_the_new_units_learn(tiny_target):
    """widen_experts adds units to both experts without changing any output (MoE and contrastive features,
    routing); a training step then moves the new units' down rows off zero."""
    torch.manual_seed(3)
    narrow = random_drafter(tiny_target, "moe")
    wide = widen_experts(narrow, 96)
    _assert_same_function(narrow, wide)
    H = narrow.cfg.hidden_size
    feats, embeds, pos = torch.randn(7, H), torch.randn(7, H), torch.arange(7)
    assert wide.ffn.down.shape == (2, 96, H) and narrow.ffn.down.shape == (2, 64, H)
    optimizer = torch.optim.AdamW(wide.parameters(), lr=1e-3)
    wide(feats, embeds, pos).features.square().mean().backward()
    optimizer.step()
    assert wide.ffn.down[:, 64:].abs().sum() > 0
    with pytest.raises(ConfigError, match="cannot make them 32"):
        widen_experts(narrow, 32)
    with pytest.raises(ConfigError, match="only a Jakiro"):
        widen_experts(random_drafter(tiny_target, "dense"), 96)
    with pytest.raises(ConfigError, match="expert_size is for --ffn moe"):
        TrainConfig(ffn="dense", expert_size=96)


def test_upcycled_experts_compute_the_dense_function_and_the_router_learns(tiny_target):
    """upcycle_experts turns a dense drafter into a Jakiro one whose MoE branch gives the dense features exactly,
    with even routing; a training step on both branches moves the router off zero."""
    torch.manual_seed(4)
    dense = random_drafter(tiny_target, "dense")
    moe = upcycle_experts(dense)
    H, I = dense.cfg.hidden_size, dense.cfg.intermediate_size
    assert moe.cfg.is_moe and moe.ffn.down.shape == (2, I // 2, H) and dense.ffn.down_proj.weight.shape == (H, I)
    feats, embeds, pos = torch.randn(7, H), torch.randn(7, H), torch.arange(7)
    a, b = dense(feats, embeds, pos), moe(feats, embeds, pos, with_experts=True)
    torch.testing.assert_close(b.features, a.features, rtol=0, atol=1e-5)
    torch.testing.assert_close(b.routing.moe_weights, torch.full((7, 2), 0.5))
    optimizer = torch.optim.AdamW(moe.parameters(), lr=1e-3)
    out = moe(feats, embeds, pos)
    (out.features.square().mean() + (out.contrastive - 1).square().mean()).backward()
    optimizer.step()
    assert moe.ffn.gate_up.weight[-4:].abs().sum() > 0  # the router learns
    with pytest.raises(ConfigError, match="only a dense one"):
        upcycle_experts(moe)


@pytest.fixture(scope="module")
def deep_target(tmp_path_factory):
    from tests.helpers import make_tiny_target

    return make_tiny_target(tmp_path_factory.mktemp("deep"), seed=1, layers=4)


def _count_sequences(target, n: int = 24) -> list[Sequence]:
    out = []
    for i in range(n):
        prompt = target.encode_chat(f"Count from {i} please.")
        answer = [(i * 7 + k) % 300 + 100 for k in range(20)] + [2]
        out.append(Sequence(ids=prompt + answer, loss_mask=[0] * len(prompt) + [1] * len(answer), source="t"))
    return out


def test_fused_features_are_recorded_preserved_trained_and_lossless(deep_target, tmp_path):
    """Features recorded with --taps hold the inner layers' hidden states; a drafter that gains feature layers
    computes what it computed before (fuse = [0 | I]); training moves the fuse onto the inner layers; the engine
    feeds them to the drafter and stays lossless."""
    target = deep_target
    path = tmp_path / "taps.safetensors"
    record_features(target, _count_sequences(target), path, batch_tokens=512, taps=(1, 3))
    data = load_features([path])
    assert recorded_taps(path) == (1, 3) and data.tap_layers == (1, 3)
    ids = data.sequence(5)[0]
    with torch.inference_mode():
        direct = target.decoder(input_ids=ids[None].to(target.device), output_hidden_states=True).hidden_states
    torch.testing.assert_close(data.sequence_taps(5, (3,)).float(), direct[3][0].cpu(), atol=3e-2, rtol=2e-2)
    with pytest.raises(ValueError, match="not of \\[2\\]"):
        data.sequence_taps(5, (2,))
    plain_path = tmp_path / "plain.safetensors"
    record_features(target, _count_sequences(target, 6), plain_path, batch_tokens=512)
    both = load_features([path, plain_path])
    assert both.tap_layers == () and len(both) == len(data) + 6  # mixed files: taps dropped, training says so
    alone = load_file(str(plain_path))  # memory-mapped rows of the second file are that file's rows
    a, b = int(alone["offsets"][2]), int(alone["offsets"][3])
    assert torch.equal(both.sequence(len(data) + 2)[2], alone["hidden"][a:b])
    assert torch.equal(both.sequence(len(data) + 2)[0], alone["ids"][a:b])
    edge = int(both.offsets[len(data)])
    with pytest.raises(IndexError, match="cross from one recorded file"):
        both.hidden[edge - 1 : edge + 1]

    cfg = TrainConfig(ffn="moe", draft_vocab=256, epochs=2, batch_tokens=512, checkpoint_every=50, holdout_every=6,
                      warmup_steps=2, lr=2e-3, unroll=2)
    base = train(target, data, cfg, tmp_path / "base")
    drafter = load_drafter(tmp_path / "base", target.fingerprint())
    fused = add_feature_layers(drafter, (1, 3))
    H = drafter.cfg.hidden_size
    stacked, embeds, pos = torch.randn(7, 3 * H) * 4, torch.randn(7, H), torch.arange(7)
    a = drafter(drafter.target_features(stacked[:, -H:]), embeds, pos)
    b = fused(fused.target_features(stacked), embeds, pos)
    torch.testing.assert_close(a.features, b.features, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="192 features wide, got 64"):
        fused.target_features(stacked[:, -H:])

    warm_cfg = dataclasses.replace(cfg, feature_layers=(1, 3), epochs=1, added_lr_scale=10.0)
    with pytest.raises(ConfigError, match="added_lr_scale must be positive"):
        dataclasses.replace(warm_cfg, added_lr_scale=0.0)
    with pytest.raises(ConfigError, match="features hold taps of none"):
        train(target, load_features([plain_path]), warm_cfg, tmp_path / "x", init=tmp_path / "base")
    warm = train(target, data, warm_cfg, tmp_path / "fused", init=tmp_path / "base")
    assert warm["init"]["feature_layers_added"] == [1, 3]
    trained = load_drafter(tmp_path / "fused", target.fingerprint())
    assert trained.cfg.feature_layers == (1, 3) and trained.fuse.weight[:, : 2 * H].abs().sum() > 0
    assert warm["final"]["loss"] < base["final"]["loss"] + 0.5

    proposer = attach(trained, target, "moe")
    assert proposer.feature_layers == (1, 3)
    tree = TreeConfig(top_k=3, depth=3, total_tokens=10, schedule="hybrid")
    plain = summarize(SpecDecoder(target).generate("Count from 3 please.", EngineConfig(max_new_tokens=24)))
    spec = summarize(SpecDecoder(target, proposer).generate("Count from 3 please.",
                                                            EngineConfig(max_new_tokens=24, tree=tree)))
    assert spec.text_tokens == plain.text_tokens


def test_a_deeper_drafter_starts_as_the_shallow_one_trains_and_stays_lossless(tiny_target, features, tmp_path):
    """add_layers inserts blocks that add nothing until trained (both branches and the routing unchanged); a
    warm start with --num-layers 2 trains them; the engine drafts with one cache per layer and stays lossless."""
    torch.manual_seed(5)
    shallow = random_drafter(tiny_target, "moe")
    deep = add_layers(shallow, 3)
    _assert_same_function(shallow, deep)
    assert len(deep.blocks) == 2 and not torch.equal(deep.state_dict()["blocks.0.mlp.gate_up.weight"],
                                                     deep.state_dict()["blocks.1.mlp.gate_up.weight"])
    with pytest.raises(ConfigError, match="cannot make it 1"):
        add_layers(deep, 1)
    with pytest.raises(ConfigError, match="num_layers must be between 1 and 4"):
        TrainConfig(ffn="moe", num_layers=0)

    cfg = TrainConfig(ffn="dense", draft_vocab=256, epochs=2, batch_tokens=512, checkpoint_every=50, holdout_every=6,
                      warmup_steps=2, lr=2e-3, unroll=2)
    base = train(tiny_target, features, cfg, tmp_path / "base")
    warm = train(tiny_target, features, dataclasses.replace(cfg, num_layers=2, epochs=1), tmp_path / "deep",
                 init=tmp_path / "base")
    assert warm["init"]["layers_added"] == {"from": 1, "to": 2}
    trained = load_drafter(tmp_path / "deep", tiny_target.fingerprint())
    assert trained.cfg.num_layers == 2 and trained.blocks[0].attn.o_proj.weight.abs().sum() > 0
    assert warm["final"]["loss"] < base["final"]["loss"] + 0.5
    tree = TreeConfig(top_k=3, depth=4, total_tokens=12)
    plain = summarize(SpecDecoder(tiny_target).generate("Count from 3 please.", EngineConfig(max_new_tokens=24)))
    spec = summarize(SpecDecoder(tiny_target, attach(trained, tiny_target, "dense")).generate(
        "Count from 3 please.", EngineConfig(max_new_tokens=24, tree=tree)))
    assert spec.text_tokens == plain.text_tokens


def _crash_while_checkpointing(target, run):
    """A job killed while writing a checkpoint (here: the weights file is left truncated) keeps the last one."""
    import core.drafter

    drafter = load_drafter(run, target.fingerprint(), target.vocab_size)
    optimizer = torch.optim.AdamW(drafter.parameters())

    def truncated(tensors, path):
        Path(path).write_bytes(b"trunc")
        raise OSError("killed")

    real = core.drafter.save_file
    core.drafter.save_file = truncated
    try:
        with pytest.raises(OSError):
            _save_checkpoint(run, drafter, optimizer, {"step": 99}, TrainConfig(ffn=drafter.cfg.ffn))
    finally:
        core.drafter.save_file = real
    load_drafter(run, target.fingerprint(), target.vocab_size)  # still readable


def test_features_record_the_answers_they_came_from(tiny_target, tmp_path):
    from core.train.data import recorded_counts
    from core.train.heldout import parse_counts

    assert parse_counts("answers=2368, answers-broad=1440") == {"answers": 2368, "answers-broad": 1440}
    with pytest.raises(ValueError, match="does not exist"):
        recorded_counts(tmp_path / "absent.safetensors")

    seqs = [Sequence(ids=[1, 2, 3, 4], loss_mask=[0, 0, 1, 1], source="test")]
    record_features(tiny_target, seqs, tmp_path / "with.safetensors",
                    metadata={"answer_counts": json.dumps({"answers": 1})})
    record_features(tiny_target, seqs, tmp_path / "without.safetensors")
    assert recorded_counts(tmp_path / "with.safetensors") == {"answers": 1}
    assert recorded_counts(tmp_path / "without.safetensors") is None


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_checkpoints_in_the_separate_matrix_layout_load_and_compute_the_same(ffn, tmp_path):
    """Releases 1-6 were saved with separate q/k/v, gate/up and per-expert matrices. Write such a checkpoint
    (random matrices), load it into today's fused layout, and check the FFN against the formula computed by
    hand from the separate matrices."""
    import torch.nn.functional as F

    from core.config import DrafterConfig, to_dict

    torch.manual_seed(0)
    H, heads, kv, d, inter = 32, 4, 2, 8, 48
    cfg = DrafterConfig(hidden_size=H, num_heads=heads, num_kv_heads=kv, head_dim=d, intermediate_size=inter,
                        vocab_size=100, ffn=ffn)
    width = inter if ffn == "dense" else H
    rand = lambda *shape: torch.randn(*shape) * 0.2  # noqa: E731
    legacy = {"fc.weight": rand(H, 2 * H), "attn.q_proj.weight": rand(heads * d, H),
              "attn.k_proj.weight": rand(kv * d, H), "attn.v_proj.weight": rand(kv * d, H),
              "attn.o_proj.weight": rand(H, heads * d), "post_attention_layernorm.weight": 1 + rand(H)}
    prefixes = ["ffn."] if ffn == "dense" else ["ffn.experts.0.", "ffn.experts.1."]
    for p in prefixes:
        legacy |= {p + "gate_proj.weight": rand(width, H), p + "up_proj.weight": rand(width, H),
                   p + "down_proj.weight": rand(H, width)}
    if ffn == "moe":
        legacy["ffn.gate.weight"] = rand(4, H)
    save_file(legacy, str(tmp_path / "drafter.safetensors"))
    (tmp_path / "drafter.json").write_text(json.dumps({"config": to_dict(cfg)}))
    drafter = load_drafter(tmp_path)

    x = torch.randn(5, H)
    expert = [F.linear(F.silu(F.linear(x, legacy[p + "gate_proj.weight"])) * F.linear(x, legacy[p + "up_proj.weight"]),
                       legacy[p + "down_proj.weight"]) for p in prefixes]
    with torch.no_grad():
        if ffn == "dense":
            torch.testing.assert_close(drafter.ffn(x), expert[0])
        else:
            branches, outs, routing = drafter.ffn(x)
            f_moe, f_con = branches.unbind(-2)
            logits = F.linear(x, legacy["ffn.gate.weight"])
            w, v = logits[:, :2].softmax(-1), logits[:, 2:].softmax(-1)
            torch.testing.assert_close(routing.logits, logits)
            torch.testing.assert_close(outs, torch.stack(expert, dim=-2))
            torch.testing.assert_close(f_moe, w[:, :1] * expert[0] + w[:, 1:] * expert[1])
            top = v.argmax(-1, keepdim=True)
            sign0 = torch.where(top == 0, 1.0, -1.0)
            torch.testing.assert_close(f_con, sign0 * v[:, :1] * expert[0] - sign0 * v[:, 1:] * expert[1])
        q = F.linear(x, legacy["attn.q_proj.weight"])
        torch.testing.assert_close(drafter.attn.qkv_proj(x)[:, : heads * d], q)


def test_a_drafter_picks_its_vocabulary_again_from_the_training_answers(tiny_target, tmp_path):
    from collections import Counter

    from core.drafter import Drafter, config_for_target, save_drafter
    from core.train.vocab import coverage, ranked_vocabulary, training_token_counts, with_vocabulary

    folder = tmp_path / "answers"
    folder.mkdir()
    answers = [[5, 6, 6, 7], [9, 9, 9, 9], [6, 8, 2], [11, 11, 11, 12], [6, 7]]  # 0, 2, 4 are held out
    lines = [json.dumps({"prompt": str(i), "answer_ids": a}) for i, a in enumerate(answers)]
    (folder / "shard-0000.jsonl").write_text("\n".join(lines) + "\n")
    counts = training_token_counts([folder], holdout_every=2)
    assert counts == Counter({9: 4, 11: 3, 12: 1})
    ids = ranked_vocabulary(counts, 3, [2])
    assert ids.tolist() == [2, 9, 11] and coverage(counts, ids) == 7 / 8

    cfg = config_for_target(tiny_target.config, "moe", tiny_target.model_id, tiny_target.fingerprint(), 8)
    drafter = Drafter(cfg)
    drafter.vocab_ids.copy_(torch.arange(8) + 3)
    picked = with_vocabulary(drafter, ids)
    assert picked.cfg.draft_vocab_size == 3 and drafter.cfg.draft_vocab_size == 8  # the original is untouched
    save_drafter(picked, tmp_path / "picked")
    loaded = load_drafter(tmp_path / "picked", tiny_target.fingerprint(), tiny_target.vocab_size)
    loaded.bind_head(tiny_target.lm_head.weight.float())
    drafter.bind_head(tiny_target.lm_head.weight.float())
    assert torch.equal(loaded.head_weight, tiny_target.lm_head.weight.float()[ids])
    feats, embeds = torch.randn(2, 4, cfg.hidden_size), torch.randn(2, 4, cfg.hidden_size)
    with torch.no_grad():
        same = [d(feats, embeds, torch.arange(4)).features for d in (drafter, loaded)]
    assert torch.equal(same[0], same[1])  # the same weights: only which tokens are scored changed
    with pytest.raises(ValueError, match="must lie in"):
        with_vocabulary(drafter, torch.tensor([2, tiny_target.vocab_size]))
