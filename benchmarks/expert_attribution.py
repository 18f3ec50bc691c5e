"""Which expert the MoE tokens of a Jakiro drafter belong to, in real decoding on held-out training prompts.

Every verified MoE-branch node is attributed two ways: to the expert whose own distribution (h + E_i alone) gives
its token the higher probability (what the trace records and the app colours by since session 17), and to the
expert with the larger gate weight w (what it recorded before). Prints both, with acceptance rates, how often the
two agree, and the emitted tokens by source.

    python benchmarks/expert_attribution.py [--drafter jakiro] [--prompts 8] [--max-new-tokens 96] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.cli import build_parser, engine_config  # noqa: E402
from core.engine import SpecDecoder  # noqa: E402
from core.models import DEFAULT_TARGET  # noqa: E402
from core.registry import build_proposer  # noqa: E402
from core.target import TargetModel  # noqa: E402
from core.train.cli import ANSWER_SETS  # noqa: E402
from core.train.heldout import heldout_prompts  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "assets" / "train-data"


def attribution(records: list[dict]) -> dict:
    """Counts over the verified MoE-branch nodes and the emitted tokens of one or more traces."""
    verified = {"favoured": Counter(), "gate": Counter()}
    accepted = {"favoured": Counter(), "gate": Counter()}
    agree, emitted = 0, Counter()
    for step in records:
        if step.get("type") != "step":
            continue
        emitted.update(t["source"] for t in step["emitted"])
        for node in step["nodes"]:
            if node["branch"] != "moe" or not node["kept"]:
                continue
            gate = int(node["routing"][1] > node["routing"][0])
            for rule, expert in (("favoured", node["expert"]), ("gate", gate)):
                verified[rule][expert] += 1
                accepted[rule][expert] += int(node["accepted"])
            agree += gate == node["expert"]
    total = sum(verified["favoured"].values())
    return {
        rule: {f"expert {e}": {"verified": verified[rule][e], "acceptance": accepted[rule][e] / verified[rule][e]}
               for e in sorted(verified[rule])}
        for rule in verified
    } | {"nodes": total, "gate_agrees": agree / total if total else None, "emitted": dict(emitted)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drafter", default="jakiro")
    parser.add_argument("--prompts", type=int, default=8, help="every k-th held-out prompt, this many in all")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    prompts = heldout_prompts([DATA / folder for folder in ANSWER_SETS.values()])
    prompts = prompts[:: max(1, len(prompts) // args.prompts)][: args.prompts]
    target = TargetModel.load(DEFAULT_TARGET, args.dtype)
    proposer = build_proposer(args.drafter, target)
    if proposer is None or not proposer.drafter.cfg.is_moe:
        parser.error(f"{args.drafter} is not an MoE drafter: its tokens have no experts")
    decoder = SpecDecoder(target, proposer)
    defaults = build_parser().parse_args(["generate", "--prompt", "-", "--max-new-tokens", str(args.max_new_tokens)])
    cfg = engine_config(defaults, moe=True)  # the engine's defaults, as `python -m core generate` runs them
    records = [r for p in prompts for r in decoder.generate(p.prompt, cfg)]
    result = {"drafter": args.drafter, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
              "dtype": args.dtype} | attribution(records)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
