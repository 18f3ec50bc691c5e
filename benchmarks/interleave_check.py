"""Does the app's turn-taking change any method's speed? Each method's tokens/s when the app runs all of them a
step each in turn (``app.session.run_all``), and when each runs alone on the same prompt, in one process.

A record's timings are its own model time, so taking turns should change nothing but cache warmth; this measures
it. The figure README's "The explorer app" section states comes from the default run:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/interleave_check.py            # 3 prompts x 2 rounds x 64 tokens
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: the models are local
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.session import Session, Settings, engine_config, is_moe, load_engines, run_all, warm_up  # noqa: E402
from core.models import DEFAULT_TARGET  # noqa: E402
from core.trace import summarize  # noqa: E402

PROMPTS = ["List three uses of a paperclip.", "Explain speculative decoding in two sentences.",
           "Write a haiku about the sea."]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default=DEFAULT_TARGET)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    engines = load_engines(args.target, args.dtype, other_dtypes=False)
    warm_up(engines)
    settings = Settings(max_new_tokens=args.max_new_tokens)
    ratios = []
    for _ in range(args.rounds):
        for prompt in PROMPTS:
            session = Session()
            list(run_all(engines, prompt, settings, session))
            turns = {name: summarize(records).tokens_per_s for name, records in session.traces.items()}
            alone = {name: summarize(d.generate(prompt, engine_config(settings, is_moe(d)), detail=True)).tokens_per_s
                     for name, d in engines.decoders.items()}
            ratios += [turns[n] / alone[n] for n in turns]
            print(f"{prompt[:32]:32}  " + "  ".join(f"{n} {turns[n]:.1f} / {alone[n]:.1f}" for n in turns),
                  flush=True)
    ratios.sort()
    print(f"tokens/s taking turns / alone: median {ratios[len(ratios) // 2]:.3f}, range {ratios[0]:.3f}-{ratios[-1]:.3f}"
          f" over {len(ratios)} (method, prompt, round) pairs")


if __name__ == "__main__":
    main()
