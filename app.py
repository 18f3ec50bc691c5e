"""Serve the explorer: ``python app.py`` listens on 127.0.0.1:7860 unless flags or
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say otherwise. Models load once, at start-up."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # huggingface_hub reads it once, when gradio imports it
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse  # noqa: E402
import logging  # noqa: E402

from core.models import DEFAULT_TARGET  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--target", default=DEFAULT_TARGET, help="HF hub id (in the local cache) or local model folder")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--drafters", default="jakiro,eagle",
                   help="one or two comma-separated drafters: jakiro, eagle or the path of a saved drafter folder")
    p.add_argument("--viewer", action="store_true", help="load no model; only replay saved traces")
    p.add_argument("--no-warm-up", action="store_true", help="skip the short warm-up generation at start-up")
    p.add_argument("--host", default=None, help="default: GRADIO_SERVER_NAME, else 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: GRADIO_SERVER_PORT, else 7860 (or the next free)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    args = p.parse_args(argv)
    drafters = [d.strip() for d in args.drafters.split(",") if d.strip()]
    if not 1 <= len(drafters) <= 2 or "none" in drafters:
        p.error("--drafters takes one or two drafters (plain decoding always runs as the baseline)")
    args.drafters = drafters
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from app.session import load_engines, warm_up
    from app.ui import build_demo, launch_options

    engines = None
    if not args.viewer:
        engines = load_engines(args.target, args.dtype, args.drafters)
        if not args.no_warm_up:
            warm_up(engines)
    demo = build_demo(engines)
    demo.queue(max_size=16, default_concurrency_limit=1)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options())


if __name__ == "__main__":
    main()
