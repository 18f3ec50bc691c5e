"""Generation orchestration and per-session data: run every method on one prompt, export, load.

The engines (one target, its proposers) are loaded once and shared by every browser session;
what one user generated lives in a ``Session`` kept in that user's ``gr.State``.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from core.card import DrafterCard, drafter_card
from core.config import (LOOKUP_MAX, LOOKUP_RUNS, LOOKUP_TOKENS, ConfigError, EngineConfig, FallbackConfig,
                         SamplingConfig, TreeConfig)
from core.drafting import FeatureProposer
from core.engine import SpecDecoder
from core.registry import build_proposer, describe
from core.target import TargetModel
from core.trace import Summary, TraceError, read_jsonl, summarize, write_jsonl

from app.views import stats, text

Record = dict[str, Any]
UPLOAD_LIMIT_BYTES = 32 * 1024 * 1024
MAX_UPLOADS = 4


@dataclass
class Engines:
    """The shared models: one target and one decoder per method, plain decoding ("none") last."""

    target: TargetModel
    decoders: dict[str, SpecDecoder]
    cards: list[DrafterCard] = field(default_factory=list)  # what each drafter is, for the Drafters tab
    # held while a decoder computes one record: a generation the user stopped may still be finishing its step
    # in a worker thread when the next one starts on the same decoders (their drafter caches are shared)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # the same target and drafters in another dtype, loaded on first use (None: only this dtype is offered)
    load_dtype: Callable[[str], Engines] | None = field(default=None, repr=False, compare=False)
    _variants: dict[str, Engines] = field(default_factory=dict, repr=False, compare=False)

    @property
    def dtype(self) -> str:
        return str(self.target.dtype).removeprefix("torch.")

    @property
    def device(self) -> str:
        return f"{self.target.device.type}, {self.dtype}"

    def dtype_choices(self) -> list[str]:
        """The dtypes a user may pick: this one first, then the others this device computes (float16 only on a
        GPU: CPUs emulate it)."""
        if self.load_dtype is None:
            return [self.dtype]
        usable = ("float32", "bfloat16", "float16") if self.target.device.type == "cuda" else ("float32", "bfloat16")
        return [self.dtype, *(d for d in usable if d != self.dtype)]

    def is_loaded(self, dtype: str) -> bool:
        return dtype == self.dtype or dtype in self._variants

    def for_dtype(self, dtype: str) -> Engines:
        """These engines in ``dtype``: loaded (and warmed up) the first time, then kept; raises ConfigError for a
        dtype not offered. Slow the first time: the caller says so to the user."""
        if dtype == self.dtype:
            return self
        if dtype not in self.dtype_choices():
            raise ConfigError(f"dtype must be one of {', '.join(self.dtype_choices())}, got {dtype!r}")
        with self.lock:  # one load at a time; generation steps wait for it
            if dtype not in self._variants:
                try:
                    engines = self.load_dtype(dtype)
                    warm_up(engines)
                except (RuntimeError, OSError, ValueError) as err:  # ModelSourceError, TargetLoadError, files
                    raise ConfigError(f"cannot load the models in {dtype}: {err}; pick {self.dtype}") from err
                self._variants[dtype] = engines
        return self._variants[dtype]


def load_engines(target: str, dtype: str = "float32", drafters: list[str] | None = None, seed: int = 0,
                 weights: str = "auto", other_dtypes: bool = True, trust_remote_code: bool = False) -> Engines:
    """Load the target once and build every proposer on it (slow: call at start-up only); ``weights`` as in
    ``build_proposer``. With ``other_dtypes`` the same models may be loaded again in another dtype on demand;
    ``trust_remote_code`` lets a target run its own modeling code (app.py --trust-remote-code)."""
    model = TargetModel.load(target, dtype=dtype, trust_remote_code=trust_remote_code)
    proposers = {spec: build_proposer(spec, model, seed, weights) for spec in (drafters or ["jakiro", "eagle"])}
    cards = [describe(spec, proposer) for spec, proposer in proposers.items() if proposer is not None]
    engines = engines_for(model, proposers, cards)
    if other_dtypes:
        engines.load_dtype = lambda other: load_engines(target, other, drafters, seed, weights, other_dtypes=False,
                                                        trust_remote_code=trust_remote_code)
    return engines


def engines_for(target: TargetModel, proposers: dict[str, Any], cards: list[DrafterCard] | None = None) -> Engines:
    """Engines from an already loaded target and proposers (tests pass tiny ones); without ``cards``, the
    drafters are described from their weights alone."""
    decoders = {name: SpecDecoder(target, proposer, name) for name, proposer in proposers.items() if name != "none"}
    decoders["none"] = SpecDecoder(target, None, "none")
    if cards is None:
        cards = [drafter_card(p.drafter, p.name, p.trained) for p in proposers.values()
                 if isinstance(p, FeatureProposer)]
    return Engines(target=target, decoders=decoders, cards=cards)


def warm_up(engines: Engines) -> None:
    """One short generation per method, so the first user's timings exclude one-off start-up costs."""
    for name, decoder in engines.decoders.items():
        cfg = engine_config(Settings(max_new_tokens=4), is_moe(decoder))
        decoder.generate("Hi", cfg, detail=False)


@dataclass(frozen=True)
class Settings:
    """What the settings panel holds (the same for every method of one run)."""

    max_new_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    tree_top_k: int = 4
    depth: int = 5
    total_tokens: int = 24
    schedule: str = "hybrid"  # for MoE drafters; single-head drafters always use "standard"
    decoupled: bool = False  # MoE drafters only
    adaptive: bool = True  # verify only the nodes that pay on this machine (total_tokens is the cap)
    lookup: int = LOOKUP_TOKENS  # tokens copied from earlier in the context into the tree; 0 = off
    lookup_runs: int = LOOKUP_RUNS  # runs copied after a full n-gram match
    lookup_max: int = LOOKUP_MAX  # runs grow up to this while text is copied (<= lookup: no growth)
    fallback: bool = True  # decode plainly while speculation measurably does not pay (core.policy)
    seed: int = 0


def is_moe(decoder: SpecDecoder) -> bool:
    drafter = getattr(decoder.proposer, "drafter", None)
    return bool(drafter is not None and drafter.cfg.is_moe)


def engine_config(settings: Settings, moe: bool) -> EngineConfig:
    """The engine config of one method; raises ``ConfigError`` for invalid settings."""
    return EngineConfig(
        tree=TreeConfig(
            top_k=settings.tree_top_k, depth=settings.depth, total_tokens=settings.total_tokens,
            schedule=settings.schedule if moe else "standard", decoupled=settings.decoupled and moe,
            adaptive=settings.adaptive, lookup=settings.lookup, lookup_runs=settings.lookup_runs,
            lookup_max=settings.lookup_max,
        ),
        sampling=SamplingConfig(temperature=settings.temperature, top_p=settings.top_p),
        fallback=FallbackConfig(enabled=settings.fallback),
        max_new_tokens=settings.max_new_tokens,
        seed=settings.seed,
    )


@dataclass
class Session:
    """One browser session's data: the traces by method, and a private folder for exports."""

    traces: dict[str, list[Record]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    folder: str | None = None
    source: str = ""  # "generated" or the names of the loaded files

    def summaries(self) -> dict[str, Summary]:
        return {name: summarize(records) for name, records in self.traces.items()}

    def export_folder(self) -> Path:
        """Mutates ``self.folder``: created on first use with an unguessable name."""
        if self.folder is None or not os.path.isdir(self.folder):
            self.folder = tempfile.mkdtemp(prefix=f"jakiro-explorer-{secrets.token_hex(8)}-")
        return Path(self.folder)


def delete_session(session: Session | None) -> None:
    """``gr.State`` delete callback: remove the session's export folder."""
    if session is not None and session.folder:
        shutil.rmtree(session.folder, ignore_errors=True)


def _one_step_at_a_time(stream: Iterator[dict], lock: threading.Lock) -> Iterator[dict]:
    """``stream``'s records, each computed while holding ``lock`` (released between records, so a stream that
    is never resumed holds nothing)."""
    while True:
        with lock:
            record = next(stream, None)
        if record is None:
            return
        yield record


def run_all(
    engines: Engines, prompt: str, settings: Settings, session: Session, min_interval_s: float = 0.2
) -> Iterator[tuple[str, ...]]:
    """Run every method on ``prompt`` side by side, one step of each in turn, appending records to
    ``session.traces`` (mutated); each record's timings are its own model time, so taking turns changes no
    method's tokens/s, and plain decoding's speed is known from its first steps.

    Yields the methods still running when the UI should refresh: at most every ``min_interval_s`` and
    after each method's last record. Raises ConfigError/PromptError/ValueError before any record when
    the settings or the prompt cannot be used.
    """
    configs = {name: engine_config(settings, is_moe(d)) for name, d in engines.decoders.items()}
    for name, decoder in engines.decoders.items():
        if decoder.proposer is not None:
            decoder.proposer.check_tree(configs[name].tree)
    engines.target.encode_chat(prompt)  # raises PromptError for an empty or too long prompt
    session.source = "generated"
    streams = {name: _one_step_at_a_time(decoder.stream(prompt, configs[name]), engines.lock)
               for name, decoder in engines.decoders.items()}
    for name in streams:
        session.traces[name] = []
    last = 0.0
    while streams:
        for name, stream in list(streams.items()):
            record = next(stream, None)
            if record is not None:
                session.traces[name].append(record)
            else:
                del streams[name]
                session.texts[name] = engines.target.decode(summarize(session.traces[name]).text_tokens)
            now = time.perf_counter()
            if record is None or now - last >= min_interval_s:
                last = now
                yield tuple(streams)


def export_files(session: Session) -> list[str]:
    """Write one trace JSONL per method and a summary CSV (every summary metric, and the statistics tab's
    diversity and routing numbers) into the session's folder."""
    folder = session.export_folder()
    tag = secrets.token_hex(6)
    paths = []
    for name, records in session.traces.items():
        path = folder / f"trace-{_safe(name)}-{tag}.jsonl"
        write_jsonl(records, path)
        paths.append(str(path))
    table = text.summary_table(session.summaries())
    diversity = stats.diversity_columns(session.traces)
    for column in ("distinct_in_layer_by_depth", "distinct_among_siblings_by_depth", "routing_confidence_acceptance"):
        table[column] = [diversity.get(method, {}).get(column, "") for method in table["method"]]
    csv = folder / f"summary-{tag}.csv"
    table.to_csv(csv, index=False)
    paths.append(str(csv))
    return paths


def load_session(paths: list[str]) -> Session:
    """A session from saved trace files (no model needed); raises TraceError with a readable message."""
    if not paths:
        raise TraceError("choose one or more .jsonl trace files")
    if len(paths) > MAX_UPLOADS:
        raise TraceError(f"load at most {MAX_UPLOADS} trace files at once")
    session = Session(source=", ".join(Path(p).name for p in paths))
    for path in paths:
        size = os.path.getsize(path)
        if size > UPLOAD_LIMIT_BYTES:
            raise TraceError(f"{Path(path).name} is {size / 1e6:.1f} MB; the limit is {UPLOAD_LIMIT_BYTES / 1e6:.0f} MB")
        records = read_jsonl(path)
        name = str(records[0].get("method") or Path(path).stem)
        while name in session.traces:
            name += "'"
        session.traces[name] = records
        session.texts[name] = text.trace_text(records)
    if "none" in session.traces:  # plain decoding is shown last, as in a generated session
        session.traces["none"] = session.traces.pop("none")
    return session


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "method"
