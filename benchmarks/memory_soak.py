"""Memory over many generations in a row: the figure README's "Limits and safe deployment" states.

Loads the app's engines once (the default target and its two drafters unless told otherwise), warms up, then
runs ``--generations`` generations through ``app.session.run_all`` exactly as the app does (every method on one
prompt, a fresh ``Session`` each time, every 10th one exported and deleted as an expiring session would be) and
prints the process's resident memory and live Python objects before, after the first 10 and after all of them.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/memory_soak.py                     # default model, 50 x 32 tokens
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/memory_soak.py --target DIR --generations 2 --json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: the models are local

import psutil  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.session import Engines, Session, Settings, delete_session, export_files, run_all  # noqa: E402
from core.models import DEFAULT_TARGET  # noqa: E402

PROMPTS = [f"Tell me about {topic}." for topic in ("cats", "rivers", "stars", "bread", "trains", "maps")]
WARM_UP = 5  # generations before the first measurement: allocator pools, lazy initialisation
EARLY = 10  # generations after which the second measurement is taken


@dataclass
class Soak:
    generations: int
    rss_before_mb: float  # after the warm-up generations
    rss_early_mb: float  # after the first EARLY generations (or all, when fewer)
    rss_after_mb: float
    objects_before: int  # live objects gc tracks
    objects_after: int

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_after_mb - self.rss_before_mb

    @property
    def rss_growth_after_early_mb(self) -> float:
        return self.rss_after_mb - self.rss_early_mb

    @property
    def object_growth(self) -> int:
        return self.objects_after - self.objects_before


def soak(engines: Engines, settings: Settings, generations: int, warm_up: int = WARM_UP) -> Soak:
    """Run ``warm_up`` then ``generations`` generations in a row and measure memory around the latter."""
    process = psutil.Process()

    def generate(i: int) -> Session:
        session = Session()
        for _ in run_all(engines, PROMPTS[i % len(PROMPTS)], settings, session, min_interval_s=0):
            pass
        return session

    def rss_mb() -> float:
        gc.collect()
        return process.memory_info().rss / 2**20

    for i in range(warm_up):
        generate(i)
    before, objects = rss_mb(), len(gc.get_objects())
    early = before
    for i in range(generations):
        session = generate(i)
        if i % 10 == 0:  # what an expiring session does: exports written, then its folder deleted
            export_files(session)
            delete_session(session)
        del session
        if i + 1 == min(EARLY, generations):
            early = rss_mb()
    after = rss_mb()
    return Soak(generations=generations, rss_before_mb=before, rss_early_mb=early, rss_after_mb=after,
                objects_before=objects, objects_after=len(gc.get_objects()))


def report(result: Soak, settings: Settings, methods: list[str]) -> str:
    return (
        f"{result.generations} generations ({', '.join(methods)} x {settings.max_new_tokens} new tokens each): "
        f"RSS {result.rss_before_mb:,.1f} -> {result.rss_after_mb:,.1f} MB ({result.rss_growth_mb:+.1f} MB, "
        f"{result.rss_growth_after_early_mb:+.1f} MB after the first {min(EARLY, result.generations)}); "
        f"Python objects {result.objects_before:,} -> {result.objects_after:,} ({result.object_growth:+,})"
    )


def main(argv: list[str] | None = None) -> int:
    from app.session import load_engines

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default=DEFAULT_TARGET, help="HF hub id (in the local cache) or local model folder")
    p.add_argument("--drafters", default="jakiro,eagle", help="comma-separated drafters run next to plain decoding")
    p.add_argument("--dtype", default="float32", help="as app.py's --dtype (float32 is what `make run` serves)")
    p.add_argument("--generations", type=int, default=50)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON object")
    args = p.parse_args(argv)
    if args.generations < 1:
        p.error("--generations must be at least 1")
    settings = Settings(max_new_tokens=args.max_new_tokens)
    engines = load_engines(args.target, args.dtype, [d for d in args.drafters.split(",") if d])
    result = soak(engines, settings, args.generations)
    print(report(result, settings, list(engines.decoders)))
    if args.json:
        print(json.dumps({**asdict(result), "rss_growth_mb": result.rss_growth_mb,
                          "rss_growth_after_early_mb": result.rss_growth_after_early_mb,
                          "object_growth": result.object_growth, "target": args.target,
                          "max_new_tokens": args.max_new_tokens, "methods": list(engines.decoders)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
