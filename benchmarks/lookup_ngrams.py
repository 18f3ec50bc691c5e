"""Does each n-gram length of the context lookup pay? Per matched n: cycles, looked-up nodes verified, and
looked-up tokens accepted (the first MT-bench question of each category, Jakiro, default settings, bf16).

    python benchmarks/lookup_ngrams.py
"""
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.target import TargetModel  # noqa: E402
from core.engine import SpecDecoder  # noqa: E402
from core.registry import build_proposer  # noqa: E402
from core.config import EngineConfig, TreeConfig, FallbackConfig  # noqa: E402
from core.lookup import find_continuation  # noqa: E402
torch.set_num_threads(2)
t = TargetModel.load("default", "bfloat16", "cpu")
qs = [json.loads(l) for l in open(Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "spec_bench_questions.jsonl")]
cats = ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"]
prompts = [next(q for q in qs if q["category"] == c)["turns"][0] for c in cats]
d = SpecDecoder(t, build_proposer("jakiro", t))
cfg = EngineConfig(fallback=FallbackConfig(enabled=False), max_new_tokens=128, tree=TreeConfig(schedule="hybrid", adaptive=True, lookup=10))
stats = defaultdict(lambda: [0, 0, 0, 0])  # n -> cycles, lookup nodes verified, lookup tokens accepted, cycles with any accepted
for p in prompts:
    ids = t.encode_chat(p)
    recs = d.generate(ids, cfg)
    gen = []
    for r in recs:
        if r["type"] != "step":
            continue
        if r["kind"] == "spec":
            n, chain = find_continuation(torch.tensor(ids + gen), 10, 3)
            look = [x for x in r["nodes"] if x["branch"] == "lookup"]
            acc = sum(1 for x in look if x["accepted"])
            s = stats[n]; s[0] += 1; s[1] += len(look); s[2] += acc; s[3] += acc > 0
        gen += [e["token_id"] for e in r["emitted"]]
for n in sorted(stats):
    c, v, a, k = stats[n]
    print(f"n={n}: cycles {c}, lookup nodes verified {v} ({v/c:.1f}/cycle), accepted {a} ({a/max(v,1):.2%} of them, {a/c:.2f}/cycle), cycles with any {k/c:.2%}")
