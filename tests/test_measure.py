"""Measuring on the user's own prompts in the app: the same report as the bench, refusals before any generation."""
from __future__ import annotations

import json

import pytest

from app.measure import CATEGORY, MAX_PROMPTS, measure, parse_prompts, save_report
from app.session import Session, Settings
from app.views import bench
from core.bench_read import read_report
from core.config import ConfigError
from core.target import PromptError
from tests.helpers import tiny_engines

SETTINGS = Settings(max_new_tokens=6)


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    return tiny_engines(tmp_path_factory.mktemp("tiny") / "model")


def test_every_method_runs_every_prompt_into_a_bench_report(engines, tmp_path):
    steps = list(measure(engines, "Hello there\n\n  Name a colour.  \nCount to three", SETTINGS))
    progress = [p for p, _ in steps]
    assert [p.done for p in progress] == list(range(1, 10)) and {p.total for p in progress} == {9}
    assert [p.prompt for p in progress] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [p.method for p in progress[:6]] == ["jakiro", "eagle", "none", "eagle", "none", "jakiro"]  # rotated
    assert all(r is None for _, r in steps[:-1])
    report = steps[-1][1]
    assert report["config"]["categories"] == {CATEGORY: 3} and report["config"]["greedy"]
    assert list(report["results"]) == ["jakiro", "eagle", "none"]
    assert report["config"]["methods"]["jakiro"]["engine"]["tree"]["schedule"] == SETTINGS.schedule
    assert report["config"]["methods"]["eagle"]["engine"]["tree"]["schedule"] == "standard"
    # greedy decoding is lossless: every drafter emitted plain decoding's tokens on every prompt (float32)
    assert all(report["results"][m]["match_rate"] == 1.0 for m in ("jakiro", "eagle"))
    assert all(report["results"][m]["new_tokens"] == 18 for m in report["results"])

    session = Session()
    path = save_report(report, session)
    assert path.parent == session.export_folder() and json.loads(path.read_text())["results"]
    shown = read_report(path)  # what the Benchmarks tab shows: read back and checked like any other report
    assert shown["intervals"]["paired"][0]["a"] == "jakiro"
    markdown, _, _ = bench.report_view(path, "your prompts")
    assert "app.py: Benchmarks tab" in markdown and f"{CATEGORY} 3" in markdown


def test_stopping_between_generations_leaves_the_decoders_usable(engines):
    stream = measure(engines, "Hello there\nCount to three", SETTINGS)
    next(stream)
    stream.close()  # what a Stop does: the generator is not resumed
    assert not engines.lock.locked()
    assert list(measure(engines, "Hello there", SETTINGS))[-1][1] is not None


@pytest.mark.parametrize("text, error, message", [
    ("", ValueError, "one per line"),
    ("\n  \n", ValueError, "one per line"),
    ("\n".join(f"prompt {i}" for i in range(MAX_PROMPTS + 1)), ValueError, f"at most {MAX_PROMPTS} prompts"),
    ("fine\n" + "word " * 5000, PromptError, "prompt 2:"),
    ("fine\nbad \ud800 text", PromptError, "prompt 2:"),
])
def test_unusable_prompts_are_refused_before_any_generation(engines, text, error, message):
    with pytest.raises(error, match=message):
        parse_prompts(text, engines)
    with pytest.raises(error, match=message):
        next(measure(engines, text, SETTINGS))


def test_invalid_settings_are_refused_before_any_generation(engines):
    with pytest.raises(ConfigError):
        next(measure(engines, "Hello there", Settings(max_new_tokens=0)))


def test_peers_join_the_measurement_on_request(engines):
    report = list(measure(engines, "Hello there", SETTINGS, peers=True))[-1][1]
    assert list(report["results"]) == ["jakiro", "eagle", "none", "hf-generate", "hf-prompt-lookup"]
    assert report["results"]["hf-generate"]["match_rate"] == 1.0  # transformers' greedy decoding: the same tokens
    assert report["config"]["methods"]["hf-generate"]["kind"] == "transformers.generate"
