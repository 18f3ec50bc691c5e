"""Load and isolation on the launched tiny app: concurrent sessions, a bounded queue, stopping mid-generation,
50 generations in a row, exports and uploads."""
from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import httpx
import pytest
from gradio_client import Client
from gradio_client.utils import QueueError, Status

import app.session as app_session
from app.session import Session, Settings, export_files, load_session
from benchmarks import memory_soak
from benchmarks.memory_soak import report, soak
from core.config import EngineConfig
from core.drafter import save_drafter
from core.registry import random_drafter
from core.trace import TraceError, header_record, read_jsonl
from tests.helpers import NO_FALLBACK, launched, tiny_engines

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")  # gradio's queue analytics

PROMPTS = [f"Tell me about {topic}." for topic in ("cats", "rivers", "stars", "bread", "trains", "maps")]
# The tiny random target answers every prompt alike, so each session also asks for its own length.
LENGTHS = dict(zip(PROMPTS, range(4, 4 + len(PROMPTS))))
LONG = 200  # new tokens of a generation that is still running when the test acts on it


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    return tiny_engines(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def app(engines):
    with launched(engines) as (demo, url):
        yield demo, url


def ask(url: str, prompt: str, client: Client | None = None) -> list[Any]:
    """One greedy /generate call of ``LENGTHS[prompt]`` tokens, in a new session unless ``client`` is given."""
    client = client or Client(url, verbose=False)
    return client.predict(prompt=prompt, max_new_tokens=LENGTHS[prompt], temperature=0, api_name="/generate")


def answer(outputs: list[Any]) -> dict[str, tuple[str, int]]:
    """What must not depend on other users or timing: each method's text and token count."""
    return {name: (entry["text"], entry["new_tokens"]) for name, entry in outputs[4].items()}


def session_of(demo: gr.Blocks, client: Client) -> Session:
    """The ``Session`` that the app keeps in ``client``'s gr.State."""
    state = next(block for block in demo.blocks.values() if isinstance(block, gr.State))
    return demo.state_holder[client.session_hash][state._id]


def wait_until(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_concurrent_sessions_each_get_their_own_answer_traces_and_exports(app):
    demo, url = app
    alone = {prompt: answer(ask(url, prompt)) for prompt in PROMPTS}
    assert len({json.dumps(a) for a in alone.values()}) == len(PROMPTS)  # distinct, so a mix-up would show
    clients = [Client(url, verbose=False) for _ in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda c, p: ask(url, p, c), clients, PROMPTS))
    assert [answer(out) for out in together] == [alone[p] for p in PROMPTS]

    folders = set()
    for client, prompt in zip(clients, PROMPTS):
        session = session_of(demo, client)
        assert {records[0]["prompt"] for records in session.traces.values()} == {prompt}
        paths = [Path(p) for p in export_files(session)]
        folder = paths[0].parent
        assert {p.parent for p in paths} == {folder} and folder.stat().st_mode & 0o777 == 0o700
        assert re.fullmatch(r"jakiro-explorer-[0-9a-f]{16}-\w+", folder.name)  # 64 random bits, then mkdtemp's
        assert {read_jsonl(p)[0]["prompt"] for p in paths if p.suffix == ".jsonl"} == {prompt}
        folders.add(folder)
    assert len(folders) == len(clients)  # one private, randomly named folder per session

    for client in clients:  # what gradio does when a session expires: the delete callback removes its exports
        folder = Path(session_of(demo, client).folder)
        demo.state_holder.delete_state(client.session_hash)
        assert not folder.exists()


def test_a_full_queue_refuses_with_a_clear_message(engines):
    with launched(engines, max_size=1) as (_, url):
        running = Client(url, verbose=False).submit(
            prompt=PROMPTS[0], max_new_tokens=LONG, temperature=0, api_name="/generate")
        wait_until(lambda: running.status().code in (Status.PROCESSING, Status.ITERATING))
        waiting = Client(url, verbose=False).submit(
            prompt=PROMPTS[1], max_new_tokens=4, temperature=0, api_name="/generate")
        wait_until(lambda: waiting.status().code == Status.IN_QUEUE)
        refused = Client(url, verbose=False).submit(
            prompt=PROMPTS[2], max_new_tokens=4, temperature=0, api_name="/generate")
        with pytest.raises(QueueError, match="Queue is full"):
            refused.result(timeout=60)
        running.cancel()
        assert set(waiting.result(timeout=60)[4]) == {"jakiro", "eagle", "none"}  # the queued one still runs


def test_stop_mid_generation_then_generate_again(app):
    _, url = app
    reference = answer(ask(url, PROMPTS[3]))
    client = Client(url, verbose=False)
    job = client.submit(prompt=PROMPTS[4], max_new_tokens=LONG, temperature=0, api_name="/generate")
    wait_until(lambda: len(job.outputs()) >= 2)
    job.cancel()  # what the Stop button does: gradio cancels the generator between two yields
    wait_until(job.done)
    assert "none" not in job.outputs()[-1][4]  # stopped before the last method ran
    assert answer(ask(url, PROMPTS[3], client)) == reference


def test_a_stream_closed_mid_generation_does_not_change_the_next(engines):
    decoder = engines.decoders["jakiro"]
    cfg = EngineConfig(max_new_tokens=10, fallback=NO_FALLBACK)  # every step speculates: trees are comparable

    def decisions(records: list[dict[str, Any]]) -> list[Any]:
        return [(r["emitted"], r["accepted_len"], [(n["parent"], n["token_id"]) for n in r["nodes"]])
                for r in records if r["type"] == "step"]

    fresh = decisions(decoder.generate(PROMPTS[0], cfg))
    stream = decoder.stream(PROMPTS[1], cfg)
    for _ in range(4):  # header, prefill and two cycles
        next(stream)
    stream.close()
    assert decisions(decoder.generate(PROMPTS[0], cfg)) == fresh


RSS_BOUND_MB = 32  # README's "Limits and safe deployment" states both bounds
OBJECT_BOUND = 2000  # one generation's records alone are several thousand objects


def test_fifty_generations_in_a_row_keep_memory_bounded(engines):
    settings = Settings(max_new_tokens=4, tree_top_k=2, depth=3, total_tokens=8)  # small: the loop is what counts
    result = soak(engines, settings, generations=50)
    print(report(result, settings, list(engines.decoders)))
    assert result.rss_growth_mb < RSS_BOUND_MB  # a leaked trace or KV cache per generation would pass it quickly
    assert result.object_growth < OBJECT_BOUND


def test_the_memory_soak_script_runs_on_any_target(engines, tmp_path, capsys):
    """benchmarks/memory_soak.py, which measured README's figure on the default model, on a tiny target."""
    target = engines.target
    save_drafter(random_drafter(target, "moe"), tmp_path / "jakiro")
    argv = ["--target", target.model.name_or_path, "--drafters", str(tmp_path / "jakiro"), "--generations", "2",
            "--max-new-tokens", "3", "--json"]
    assert memory_soak.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert lines[0].startswith("2 generations") and "RSS" in lines[0]
    assert figures["generations"] == 2 and figures["rss_after_mb"] > 0 and figures["objects_after"] > 0
    assert figures["methods"] == [str(tmp_path / "jakiro"), "none"]


def test_uploads_over_the_cap_are_refused_by_the_server(app):
    demo, url = app
    assert demo.max_file_size == app_session.UPLOAD_LIMIT_BYTES
    upload = f"{url}gradio_api/upload"
    small = httpx.post(upload, files={"files": ("ok.jsonl", b"{}\n")}, timeout=60)
    assert small.status_code == 200
    big = httpx.post(upload, files={"files": ("big.jsonl", b" " * (app_session.UPLOAD_LIMIT_BYTES + 1))}, timeout=60)
    assert big.status_code == 413 and "size" in big.text.lower()


def test_uploaded_traces_are_validated_as_data(tmp_path, monkeypatch):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(header_record(method="jakiro")) + "\n")
    code = tmp_path / "code.jsonl"
    code.write_text(f"__import__('pathlib').Path({str(tmp_path / 'ran')!r}).touch()\n")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({**header_record(), "version": 999}) + "\n")
    with pytest.raises(TraceError, match="not valid JSON"):
        load_session([str(code)])
    assert not (tmp_path / "ran").exists()  # parsed, never executed
    with pytest.raises(TraceError, match="not supported"):
        load_session([str(other)])
    with pytest.raises(TraceError, match="at most"):
        load_session([str(good)] * (app_session.MAX_UPLOADS + 1))
    monkeypatch.setattr(app_session, "UPLOAD_LIMIT_BYTES", good.stat().st_size - 1)
    with pytest.raises(TraceError, match="the limit is"):
        load_session([str(good)])
    monkeypatch.undo()
    assert list(load_session([str(good)]).traces) == ["jakiro"]


def test_a_stopped_generations_last_step_finishes_before_the_next_starts():
    """Stopping a generation leaves its current step running in a worker thread; the next generation on the same
    (shared) decoders must not start a step until it is done, or both would use one drafter cache."""
    lock, events = threading.Lock(), []
    in_step = threading.Event()

    def slow_stream(name: str, steps: int):
        for i in range(steps):
            events.append(f"{name}{i} start")
            in_step.set()
            time.sleep(0.2)
            events.append(f"{name}{i} end")
            yield i

    stopped = app_session._one_step_at_a_time(slow_stream("a", 5), lock)
    next(stopped)
    in_step.clear()
    worker = threading.Thread(target=next, args=(stopped,))  # the step a stop catches mid-way
    worker.start()
    in_step.wait(5)
    assert list(app_session._one_step_at_a_time(slow_stream("b", 2), lock)) == [0, 1]
    worker.join()
    assert events == ["a0 start", "a0 end", "a1 start", "a1 end", "b0 start", "b0 end", "b1 start", "b1 end"]
