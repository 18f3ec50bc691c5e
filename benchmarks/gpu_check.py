"""GPU cost model: verification cost against tree size, and the cost of a draft step.

Randomly initialised models of realistic shapes (no weights travel to the GPU machine): the
default target's shape and Llama 1B / 8B shapes. For each: one target forward over q tree
nodes after a 512-token context, q = 1..128, and one full drafting cycle of a dense and an MoE
drafter; from those, the speedup to expect at a given tau:  tau * t(1) / (t_draft + t(q)).
Then the real engine on the same random target: milliseconds per plain step and per speculative
cycle as its trace records them (Python, cache and tree work included). The drafters are
untrained, so their tau is ~1; the cycle cost is what counts:  speedup = tau * plain / cycle.

    python benchmarks/gpu_check.py --out results.json            # on a CUDA machine
    python benchmarks/gpu_check.py --smoke                       # tiny shapes on the CPU
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import EngineConfig, TreeConfig  # noqa: E402
from core.drafter import Drafter, add_feature_layers, config_for_target  # noqa: E402
from core.drafting import FeatureProposer  # noqa: E402
from core.engine import SpecDecoder  # noqa: E402
from core.models import resolve_target  # noqa: E402
from core.policy import FallbackConfig  # noqa: E402
from core.registry import attach, random_drafter  # noqa: E402
from core.target import TargetModel  # noqa: E402
from core.trace import summarize  # noqa: E402
from core.tree import ancestor_mask  # noqa: E402

SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=49152, rope_theta=10000.0),
}
TREE_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128)
TREES = {"cpu-default": TreeConfig(top_k=4, depth=5, total_tokens=24),
         "eagle2-gpu": TreeConfig(top_k=10, depth=6, total_tokens=60)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int) -> float:
    """Median milliseconds of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def random_parents(q: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return [-1] + [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, q)]


@torch.inference_mode()
def verify_costs(model, device, dtype, context: int, reps: int) -> dict[int, float]:
    from transformers import DynamicCache

    out = {}
    prefix = torch.randint(0, model.config.vocab_size, (1, context), device=device)
    for q in TREE_SIZES:
        parents = random_parents(q)
        mask = ancestor_mask(parents).to(device)
        depth = torch.tensor([0] * q)
        for i, p in enumerate(parents):
            depth[i] = 0 if p < 0 else depth[p] + 1
        add = torch.zeros(1, 1, q, context + q, dtype=dtype, device=device)
        add[0, 0, :, context:].masked_fill_(~mask, torch.finfo(dtype).min)
        ids = torch.randint(0, model.config.vocab_size, (1, q), device=device)
        pos = (context + depth)[None].to(device)
        cache = DynamicCache(config=model.config)
        model(input_ids=prefix, cache=cache)

        def step():
            model(input_ids=ids, position_ids=pos, attention_mask=add, cache=cache)
            cache.crop(-q)

        out[q] = timed(step, device, reps)
    return out


@torch.inference_mode()
def draft_costs(model, device, dtype, context: int, reps: int) -> dict[str, float]:
    out = {}
    hidden = model.config.hidden_size
    table = model.get_input_embeddings()
    embed = lambda ids: table(ids.to(device))  # noqa: E731  (the proposer keeps token ids on the CPU)
    for ffn in ("dense", "moe"):
        drafter = Drafter(config_for_target(model.config, ffn, "random", "")).to(device=device, dtype=dtype)
        drafter.bind_head(model.get_output_embeddings().weight)
        proposer = FeatureProposer(drafter, embed, ffn)
        feats = torch.randn(context, hidden, device=device, dtype=dtype)
        toks = torch.randint(0, model.config.vocab_size, (context,), device=device)
        proposer.propose(feats, toks, context, TreeConfig())  # fill the drafter cache with the context
        step_feats, step_toks = feats[:3], toks[:3]
        for name, tree in TREES.items():
            schedules = ["standard", "hybrid"] if ffn == "moe" else ["standard"]
            for schedule in schedules:
                cfg = TreeConfig(top_k=tree.top_k, depth=tree.depth, total_tokens=tree.total_tokens, schedule=schedule)
                out[f"{ffn}/{name}/{schedule}"] = timed(
                    lambda: proposer.propose(step_feats, step_toks, context + 3, cfg), device, reps)
    return out


ENGINE_PROMPT = "Explain how a bicycle works, step by step, for a curious ten-year-old."


@torch.inference_mode()
def engine_costs(model, new_tokens: int) -> dict[str, dict]:
    """The engine's own timings on ``model`` (the default tokenizer; token ids fit every shape's vocabulary)."""
    target = TargetModel(model, AutoTokenizer.from_pretrained(resolve_target("default")), "random")
    off = FallbackConfig(enabled=False)

    def run(decoder: SpecDecoder, tree: TreeConfig) -> dict:
        cfg = EngineConfig(tree=tree, max_new_tokens=new_tokens, fallback=off)
        decoder.generate(ENGINE_PROMPT, cfg, detail=False)  # warm-up
        s = summarize(decoder.generate(ENGINE_PROMPT, cfg, detail=False))
        return {"ms_per_forward": 1e3 * s.decode_s / s.target_forwards, "tau": s.tau, "draft_ms": s.draft_ms_per_step,
                "verify_ms": s.verify_ms_per_step, "commit_ms": s.commit_ms_per_step,
                "tree_nodes": s.tree_nodes_per_step, "drafter_forwards": s.drafter_forwards_per_step}

    out = {"none": run(SpecDecoder(target), TreeConfig())}
    plain_ms = out["none"]["ms_per_forward"]
    for ffn in ("dense", "moe"):
        decoder = SpecDecoder(target, attach(random_drafter(target, ffn), target, ffn))
        for name, tree in TREES.items():
            row = run(decoder, tree)
            row["speedup_at_tau"] = {tau: round(tau * plain_ms / row["ms_per_forward"], 2) for tau in (2.0, 3.0, 4.0, 5.0)}
            out[f"{ffn}/{name}"] = row
    # the cost of fused features (EAGLE-3's low/mid/high taps): the target returns three inner layers' states
    layers = model.config.num_hidden_layers
    taps = tuple(sorted({max(1, min(layers - 1, k)) for k in (3, layers // 2, layers - 3)}))
    fused = add_feature_layers(random_drafter(target, "dense"), taps)
    out["dense-fused/cpu-default"] = run(SpecDecoder(target, attach(fused, target, "dense")), TREES["cpu-default"])
    return out


def expected_speedup(verify: dict[int, float], draft_ms: float, q: int, tau: float) -> float:
    return tau * verify[1] / (draft_ms + verify[q])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="smollm2-135m,llama-1b,llama-8b")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on any device (checks the script)")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--new-tokens", type=int, default=96, help="tokens per engine run")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    shapes = ["smoke"] if args.smoke else args.shapes.split(",")
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "dtype": "bfloat16", "context": args.context, "shapes": {}}
    for name in shapes:
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**SHAPES[name], max_position_embeddings=4096)).to(dtype).eval()
        verify = verify_costs(model, device, dtype, args.context, args.reps)
        draft = draft_costs(model, device, dtype, args.context, max(3, args.reps // 4))
        table = {}
        for key, ms in draft.items():
            q = 24 if "cpu-default" in key else 64  # the verified tree size closest to the drafted one
            for tau in (3.0, 4.0, 5.0):
                table[f"{key} q={q} tau={tau}"] = round(expected_speedup(verify, ms, q, tau), 2)
        engine = engine_costs(model, args.new_tokens)
        report["shapes"][name] = {"verify_ms": verify, "draft_cycle_ms": draft, "expected_speedup": table,
                                  "engine": engine}
        print(json.dumps({name: report["shapes"][name]}, indent=1), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
