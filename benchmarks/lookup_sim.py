"""How many looked-up tokens would the target accept, by match length, chain position and number of chains?

Replays the context lookup (core.lookup) over the target's own greedy answers to training prompts (the
self-distillation data, never the Spec-Bench questions): at every answer position the context is the prompt and
the answer so far, and a looked-up run is accepted up to its first token that differs from the answer's next
tokens. No model runs, so it is fast; the drafter's own proposals, which share some of these tokens, are left out,
so the numbers are an upper bound on what the lookup adds to a draft tree.

    python benchmarks/lookup_sim.py [--answers assets/train-data/answers-broad] [--limit 400] [--length 24]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.lookup import continuations, longest_match  # noqa: E402

DEFAULT_ANSWERS = Path(__file__).resolve().parent.parent / "assets" / "train-data" / "answers"


def accepted_prefix(run: list[int], truth: list[int]) -> int:
    """How many leading tokens of ``run`` the answer continues with."""
    k = 0
    for a, b in zip(run, truth):
        if a != b:
            break
        k += 1
    return k


def trie_size(runs: list[list[int]]) -> int:
    """Nodes the runs add to a tree when runs with a common prefix share it."""
    return len({tuple(run[: i + 1]) for run in runs for i in range(len(run))})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=Path, default=DEFAULT_ANSWERS)
    parser.add_argument("--limit", type=int, default=400, help="answers to replay")
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--chains", type=int, default=3)
    args = parser.parse_args()
    rows = [json.loads(line) for shard in sorted(args.answers.glob("shard-*.jsonl")) for line in shard.open()]
    rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
    # n -> positions, per chain count c: [nodes, accepted], and P(k >= j) counts for the first run
    positions: dict[int, int] = defaultdict(int)
    by_chains: dict[int, list[list[int]]] = defaultdict(lambda: [[0, 0] for _ in range(args.chains)])
    reach: dict[int, list[int]] = defaultdict(lambda: [0] * (args.length + 1))
    for row in rows:
        tokens = torch.tensor(row["prompt_ids"] + row["answer_ids"])
        start = len(row["prompt_ids"])
        for i in range(start, tokens.numel()):
            n, hits = longest_match(tokens[:i], 3)
            runs = continuations(tokens[:i], hits, args.length, args.chains) if n else []
            positions[n] += 1
            if not runs:
                continue
            truth = tokens[i: i + args.length].tolist()
            k1 = accepted_prefix(runs[0], truth)
            for j in range(1, k1 + 1):
                reach[n][j] += 1
            best = 0
            for c in range(args.chains):
                if c < len(runs):
                    best = max(best, accepted_prefix(runs[c], truth))
                by_chains[n][c][0] += trie_size(runs[: c + 1])
                by_chains[n][c][1] += best
    total = sum(positions.values())
    print(f"{len(rows)} answers, {total} positions; run length {args.length}")
    for n in sorted(positions):
        count = positions[n]
        print(f"\nlongest match {n}: {count} positions ({count / total:.0%})")
        if not n:
            continue
        print("  P(first run accepted to >= j), j = 1..: "
              + " ".join(f"{reach[n][j] / count:.3f}" for j in range(1, args.length + 1)))
        for c, (nodes, accepted) in enumerate(by_chains[n]):
            print(f"  {c + 1} run(s): {nodes / count:.1f} nodes, {accepted / count:.2f} tokens accepted per position")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
