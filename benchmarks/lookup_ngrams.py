"""Does each n-gram length of the context lookup pay? Per longest match: cycles, looked-up nodes verified, and
looked-up tokens accepted (the first MT-bench question of each category, Jakiro, default settings, bfloat16).

    python benchmarks/lookup_ngrams.py [--categories 8]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import EngineConfig, FallbackConfig, TreeConfig  # noqa: E402
from core.engine import SpecDecoder  # noqa: E402
from core.lookup import LOOKUP_BRANCH, longest_match  # noqa: E402
from core.registry import build_proposer  # noqa: E402
from core.target import TargetModel  # noqa: E402

QUESTIONS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "spec_bench_questions.jsonl"
CATEGORIES = ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--categories", type=int, default=len(CATEGORIES), help="how many MT-bench categories")
    args = parser.parse_args()
    target = TargetModel.load("default", "bfloat16", "cpu")
    questions = [json.loads(line) for line in QUESTIONS.open()]
    prompts = [next(q for q in questions if q["category"] == c)["turns"][0] for c in CATEGORIES[: args.categories]]
    tree = TreeConfig(schedule="hybrid", adaptive=True, lookup=10)
    cfg = EngineConfig(fallback=FallbackConfig(enabled=False), max_new_tokens=128, tree=tree)
    decoder = SpecDecoder(target, build_proposer("jakiro", target))
    # longest match -> [cycles, looked-up nodes verified, looked-up tokens accepted]
    stats: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for prompt in prompts:
        prompt_ids, generated = target.encode_chat(prompt), []
        for record in decoder.generate(prompt_ids, cfg):
            if record["type"] != "step":
                continue
            if record["kind"] == "spec":  # the engine's own search, repeated on the same context
                ngram, _ = longest_match(torch.tensor(prompt_ids + generated), tree.lookup_ngram)
                looked_up = [n for n in record["nodes"] if n["branch"] == LOOKUP_BRANCH]
                row = stats[ngram]
                row[0] += 1
                row[1] += len(looked_up)
                row[2] += sum(n["accepted"] for n in looked_up)
            generated += [token["token_id"] for token in record["emitted"]]
    for ngram in sorted(stats):
        cycles, verified, accepted = stats[ngram]
        print(f"longest match {ngram}: cycles {cycles}, looked-up nodes verified {verified / cycles:.1f} per cycle, "
              f"accepted {accepted / max(verified, 1):.1%} of them, {accepted / cycles:.2f} tokens per cycle")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
