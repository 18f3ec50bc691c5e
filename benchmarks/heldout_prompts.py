"""Write the held-out training prompts (every 50th answer of each answer folder, never trained on since release 4)
as bench prompt lines, with their source as the category: the set to tune engine settings on, since the
Spec-Bench questions only measure.

    python benchmarks/heldout_prompts.py OUT.jsonl
    python -m core bench --prompts OUT.jsonl --limit-per-category 2 ...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.train.cli import ANSWER_SETS  # noqa: E402
from core.train.heldout import heldout_prompts  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "assets" / "train-data"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    prompts = heldout_prompts([DATA / folder for folder in ANSWER_SETS.values()])
    with open(sys.argv[1], "w") as out:
        for p in prompts:
            out.write(json.dumps({"prompt": p.prompt, "category": p.source}) + "\n")
    print(f"{len(prompts)} held-out prompts -> {sys.argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
