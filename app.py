"""Serve the explorer: ``python app.py`` listens on 127.0.0.1:7860 unless flags or
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say otherwise. Models load once, at start-up.

Faults found at start-up (no free port, a missing model, a damaged or mismatched drafter, an
unwritable cache) end the process with status 2 and one line saying what to do, before serving.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # huggingface_hub reads it once, when gradio imports it
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse  # noqa: E402
import errno  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from core.config import DRAFTER_WEIGHTS, DTYPE_CHOICES, WEIGHTS_HELP  # noqa: E402
from core.models import DEFAULT_TARGET, ModelSourceError  # noqa: E402

if TYPE_CHECKING:
    from app.session import Engines

PORT_TRIES = 100  # with no port given, gradio's own range: GRADIO_SERVER_PORT (7860) and the next 99


class StartupError(RuntimeError):
    """A fault found before serving; the message says what to do."""


# ConfigError, DrafterMismatchError and the target loader's errors are ValueErrors; files give OSErrors.
START_ERRORS = (StartupError, ModelSourceError, ValueError, OSError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--target", default=DEFAULT_TARGET, help="HF hub id (in the local cache) or local model folder")
    p.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES,
                   help="auto: bfloat16 where the hardware computes it natively, else float32")
    p.add_argument("--drafters", default="jakiro,eagle",
                   help="one or two comma-separated drafters: jakiro, eagle or the path of a saved drafter folder")
    p.add_argument("--drafter-weights", choices=DRAFTER_WEIGHTS, default="auto", help=WEIGHTS_HELP)
    p.add_argument("--viewer", action="store_true", help="load no model; only replay saved traces")
    p.add_argument("--no-warm-up", action="store_true", help="skip the short warm-up generation at start-up")
    p.add_argument("--host", default=None, help="default: GRADIO_SERVER_NAME, else 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: GRADIO_SERVER_PORT, else 7860 (or the next free)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code shipped in the target's folder to run (off by default)")
    args = p.parse_args(argv)
    drafters = [d.strip() for d in args.drafters.split(",") if d.strip()]
    if not 1 <= len(drafters) <= 2 or "none" in drafters:
        p.error("--drafters takes one or two drafters (plain decoding always runs as the baseline)")
    args.drafters = drafters
    return args


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (bound the way gradio binds it)."""
    address = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise StartupError(f"cannot listen on {host}:{port} ({err.strerror}): check --host and --port") from err
    return True


def pick_port(host: str | None, port: int | None) -> int:
    """``port`` if it is free; with none given, the first free one from GRADIO_SERVER_PORT (else 7860) on."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    if port is None:
        first = os.environ.get("GRADIO_SERVER_PORT") or "7860"
        if not first.isdigit():
            raise StartupError(f"GRADIO_SERVER_PORT={first!r} is not a port number: set it to one, or pass --port N")
        candidates = list(range(int(first), int(first) + PORT_TRIES))
    else:
        candidates = [port]
    for candidate in candidates:
        if port_is_free(host, candidate):
            return candidate
    ports = f"port {port}" if port is not None else f"ports {candidates[0]}-{candidates[-1]}"
    raise StartupError(f"{ports} on {host} already in use: stop the server holding it, or pass --port with a free port")


def load_models(args: argparse.Namespace) -> Engines | None:
    """The shared engines, loaded (and warmed up) before serving; None in viewer mode."""
    if args.viewer:
        return None
    from app.session import load_engines, warm_up
    from core.drafter import DrafterMismatchError

    try:
        engines = load_engines(args.target, args.dtype, args.drafters, weights=args.drafter_weights,
                               trust_remote_code=args.trust_remote_code)
    except DrafterMismatchError as err:
        raise StartupError(
            f"{err}. Pass --drafters with drafter folders saved for this target by `python -m core train fit "
            "--export` (jakiro and eagle ship for the default target), or --viewer to only replay traces"
        ) from err
    if not args.no_warm_up:
        warm_up(engines)
    return engines


def serve(args: argparse.Namespace) -> None:
    """Check the port, load the models, then serve until interrupted."""
    port = pick_port(args.host, args.port)  # first: a busy port is found before any model loads
    engines = load_models(args)
    from app.ui import build_demo, enable_queue, launch_options

    demo = enable_queue(build_demo(engines))
    demo.launch(server_name=args.host, server_port=port, share=args.share, **launch_options())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve(args)
    except START_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
