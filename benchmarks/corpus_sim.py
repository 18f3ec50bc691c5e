"""Would a lookup in a corpus of the target's own answers (REST-style retrieval drafting) add accepted tokens?

Replays, with no model, a suffix match against the target's greedy answers to training prompts: at every position
of a held-out answer (every 50th of each answer folder, never trained on), the longest of the last 8, 6, 5, 4 or
3 tokens that occurs in the other answers proposes the continuation most of its occurrences share (up to
``--length`` tokens), accepted up to its first token that differs from the held-out answer. Rows are split by the
corpus match length and by whether the context lookup (core.lookup) had a full 3-token match there too.

    python benchmarks/corpus_sim.py            # the corpus holds answers to prompts from the same sources
    python benchmarks/corpus_sim.py --cross    # the corpus leaves out the held-out answer's own source

The second is the fair estimate for new prompts (Spec-Bench's questions come from none of our sources).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.lookup import longest_match  # noqa: E402
from core.train.loop import TrainConfig, split_holdout  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "assets" / "train-data"
KEYS = (8, 6, 5, 4, 3)  # suffix lengths tried, longest first
SAMPLE = 64  # occurrences a continuation is voted from


def load_rows() -> list[dict]:
    """Every answer, marked ``held`` where release 4-5 training held it out (``split_holdout``, per folder)."""
    folders = [[json.loads(line) for shard in sorted((DATA / folder).glob("shard-*.jsonl")) for line in shard.open()]
               for folder in ("answers", "answers-broad")]
    held, _ = split_holdout([len(rows) for rows in folders], TrainConfig(ffn="dense").holdout_every)
    held_set = set(held)
    return [{**row, "held": i in held_set} for i, row in enumerate(row for rows in folders for row in rows)]


def build_index(answers: list[list[int]]) -> dict[int, dict[tuple[int, ...], list[tuple[int, int]]]]:
    """k -> k-gram -> [(answer, position after it)]."""
    index: dict[int, dict[tuple[int, ...], list[tuple[int, int]]]] = {k: defaultdict(list) for k in KEYS}
    for a, tokens in enumerate(answers):
        for k in KEYS:
            for i in range(k, len(tokens)):
                index[k][tuple(tokens[i - k: i])].append((a, i))
    return index


def propose(index, answers: list[list[int]], context: list[int], length: int) -> tuple[int, list[int]]:
    """(matched k, the continuation most occurrences share, token by token while a quarter still agree)."""
    for k in KEYS:
        hits = index[k].get(tuple(context[-k:])) if len(context) >= k else None
        if not hits:
            continue
        if len(hits) > SAMPLE:
            hits = random.Random(0).sample(hits, SAMPLE)
        run: list[int] = []
        for j in range(length):
            votes = Counter(answers[a][i + j] for a, i in hits if i + j < len(answers[a]))
            if not votes:
                break
            token, count = votes.most_common(1)[0]
            if j and count < max(1, len(hits) // 4):
                break
            run.append(token)
            hits = [(a, i) for a, i in hits if i + j < len(answers[a]) and answers[a][i + j] == token]
        return k, run
    return 0, []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cross", action="store_true", help="leave the held-out answer's own source out of the corpus")
    parser.add_argument("--length", type=int, default=16)
    args = parser.parse_args()
    rows = load_rows()
    test = [r for r in rows if r["held"]][::2]
    groups = sorted({r["source"] for r in test}) if args.cross else [None]
    stats: dict[tuple[int, bool], list[int]] = defaultdict(lambda: [0] * (args.length + 1))
    for source in groups:
        corpus = [r["answer_ids"] for r in rows if not r["held"] and (source is None or r["source"] != source)]
        index = build_index(corpus)
        for row in test:
            if source is not None and row["source"] != source:
                continue
            tokens = row["prompt_ids"] + row["answer_ids"]
            for i in range(len(row["prompt_ids"]), len(tokens)):
                n, _ = longest_match(torch.tensor(tokens[:i]), 3)
                k, run = propose(index, corpus, tokens[:i], args.length)
                counts = stats[(k, n == 3)]
                counts[0] += 1
                for j, (a, b) in enumerate(zip(run, tokens[i: i + args.length]), start=1):
                    if a != b:
                        break
                    counts[j] += 1
    total = sum(c[0] for c in stats.values())
    print(f"{total} held-out answer positions; corpus {'without' if args.cross else 'with'} the answer's own source")
    print("| corpus match k | context has a 3-token match | share | P(j-th accepted), j = 1 2 4 8 16 | E[accepted] |")
    print("|---|---|---|---|---|")
    for (k, full), c in sorted(stats.items()):
        if k:
            reach = " ".join(f"{c[j] / c[0]:.2f}" for j in (1, 2, 4, 8, 16) if j <= args.length)
            print(f"| {k} | {'yes' if full else 'no'} | {c[0] / total:.1%} | {reach} | {sum(c[1:]) / c[0]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
