"""Bootstrap intervals for benchmark reports written before ``python -m core bench`` computed them (session 30).

Reads each ``--json`` report, redraws its prompts within their categories (``core.bench_stats``) and prints the
speedup and tau intervals of every method and the ratio of every pair of methods, as the report's Markdown now
shows them under "How sure".

    python benchmarks/bench_intervals.py benchmarks/results/mtbench80-catchup-bf16-s29.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.bench_report import interval_tables  # noqa: E402
from core.bench_stats import DRAWS, LEVEL, intervals, to_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+", help="JSON reports of python -m core bench --json")
    parser.add_argument("--draws", type=int, default=DRAWS)
    parser.add_argument("--level", type=float, default=LEVEL)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0.0 < args.level < 1.0 or args.draws < 1:
        parser.error("--level must lie between 0 and 1 and --draws be at least 1")
    for path in args.reports:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            stats = intervals(report, draws=args.draws, seed=args.seed, level=args.level)
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"{path}: not a benchmark report with per-prompt rows ({type(err).__name__}: {err})",
                  file=sys.stderr)
            return 2
        print(f"## {path}\n\n{len(report['per_prompt'])} prompts, {args.draws} draws, level {args.level}\n")
        print(interval_tables(to_json(stats)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
