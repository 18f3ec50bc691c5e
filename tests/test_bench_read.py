"""Saved benchmark reports read back: every committed one, and malformed or hostile files refused by name."""
from __future__ import annotations

import copy
import re
import json
from pathlib import Path

import pytest

from core.bench_read import MAX_REPORT_BYTES, ReportError, is_report, parse_report, read_report
from core.bench_report import bench_figure, to_markdown

from app.views import bench

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
HEADLINE = RESULTS / bench.HEADLINE_REPORT
STORED_INTERVALS = RESULTS / "heldout-t1-ahead-bf16-s30.json"  # written by a bench that stored its intervals


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(HEADLINE.read_text(encoding="utf-8"))


def committed_reports() -> list[Path]:
    return [p for p in sorted(RESULTS.glob("*.json")) if is_report(json.loads(p.read_text(encoding="utf-8")))]


def test_every_committed_report_is_listed_newest_first():
    listed = bench.shipped_reports()
    assert len(committed_reports()) >= 90
    assert sorted(p.name for p in listed.values()) == sorted(p.name for p in committed_reports())
    dates = [label.split(" · ")[0] for label in listed]
    assert dates == sorted(dates, reverse=True)
    assert listed[bench.default_label(listed)] == HEADLINE


def test_recomputed_intervals_equal_the_ones_the_bench_stored():
    stored = json.loads(STORED_INTERVALS.read_text(encoding="utf-8"))["intervals"]
    assert stored is not None
    assert read_report(STORED_INTERVALS)["intervals"] == stored


def test_headline_view_gives_speedups_with_intervals(raw):
    markdown, figure, acceptance = bench.report_view(HEADLINE)
    jakiro = raw["results"]["jakiro"]
    assert f"**{jakiro['speedup']:.2f}x** (95% interval " in markdown
    assert f"tau {jakiro['tau']:.2f}" in markdown and "## How sure" in markdown
    assert f"{raw['results']['none']['tokens_per_s']:.1f} tokens/s" in markdown
    assert "neither is measurably faster in this run" in markdown  # Jakiro / EAGLE-2: 1.003 (0.954-1.053)
    speedups = [t for t in figure.data if t.yaxis == "y2"]
    assert {t.name for t in speedups} == set(raw["results"])
    assert all(t.error_y.array is not None for t in speedups if t.name != "none")
    alphas = {t.name: list(t.y) for t in acceptance.data}
    assert alphas["Jakiro (MoE)"] == jakiro["acceptance_by_depth"][:bench.SHOWN_DEPTHS]
    assert "plain decoding" not in alphas  # no cycles, no bars
    assert "| drafter fwd/cycle |" in markdown and f"| {jakiro['drafter_forwards_per_cycle']:.2f} |" in markdown


def test_a_report_without_per_prompt_rows_shows_no_intervals(raw):
    report = copy.deepcopy(raw)
    del report["per_prompt"]
    parsed = parse_report(json.dumps(report))
    assert parsed["intervals"] is None
    assert "How sure" not in to_markdown(parsed)
    assert "95% interval" not in bench.headline_markdown(parsed)
    bench_figure(parsed)


def _edited(raw: dict, edit) -> str:
    report = copy.deepcopy(raw)
    edit(report)
    return json.dumps(report)


BAD_EDITS = {
    "machine lacks date": (lambda r: r["machine"].pop("date"), "machine lacks date"),
    "tau is text": (lambda r: r["results"]["jakiro"].update(tau="fast"), "results.jakiro: tau must be"),
    "negative tokens/s": (lambda r: r["results"]["eagle"].update(tokens_per_s=-1.0), "tokens_per_s must be"),
    "a category misses a method": (lambda r: r["per_category"]["math"].pop("eagle"),
                                   "per_category.math must hold the methods of results"),
    "a method name with a pipe": (lambda r: r["results"].update({"a|b": r["results"]["none"]}),
                                  "must be a name of 1-300 characters"),
    "a prompt row misses a method": (lambda r: r["per_prompt"][3]["methods"].pop("jakiro"),
                                     "per_prompt[3].methods must hold"),
    "a prompt row's seconds are text": (lambda r: r["per_prompt"][0]["methods"]["none"].update(decode_s="1"),
                                        "per_prompt[0].methods.none: decode_s must be"),
    "results is a list": (lambda r: r.update(results=[1, 2]), "results must be an object of 1-16 methods"),
    "config.engine lacks its tree": (lambda r: r["config"]["engine"].pop("tree"), "config.engine lacks tree"),
    "a boolean count": (lambda r: r["results"]["none"].update(new_tokens=True), "new_tokens must be"),
    "too many methods": (lambda r: r["results"].update({f"m{i}": {} for i in range(20)}), "1-16 methods"),
    "too many prompt rows": (lambda r: r.update(per_prompt=r["per_prompt"] * 63), "at most 5000 objects"),
    "nested tree settings": (lambda r: r["config"]["engine"]["tree"].update(top_k={"a": 1}),
                             "config.engine: tree must be an object of at most 64 short"),
    "a megabyte of cpu name": (lambda r: r["machine"].update(cpu="x" * 1_000_000), "machine: cpu must be a string of"),
    "too many categories": (lambda r: r["config"].update(categories={f"c{i}": 1 for i in range(65)}),
                            "config.categories must be an object of at most 64"),
}


@pytest.mark.parametrize("name", BAD_EDITS)
def test_malformed_reports_are_refused_naming_the_field(raw, name):
    edit, message = BAD_EDITS[name]
    with pytest.raises(ReportError, match=re.escape(message)):
        parse_report(_edited(raw, edit))


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ('{"machine": NaN}', "NaN is not a number"),
    ("[1, 2]", "not a benchmark report"),
    ('{"tau": 2.5}', "not a benchmark report"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply|not valid JSON"),
])
def test_files_that_are_not_reports_are_refused(text, message):
    with pytest.raises(ReportError, match=message):
        parse_report(text)


def test_oversized_and_binary_files_are_refused(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(MAX_REPORT_BYTES + 1)
    with pytest.raises(ReportError, match="may be at most"):
        read_report(big)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b'{"machine": "\xff"}')
    with pytest.raises(ReportError, match="not UTF-8"):
        read_report(binary)
    with pytest.raises(ReportError, match="cannot read"):
        read_report(tmp_path / "missing.json")


@pytest.mark.parametrize("a, b, ratio, interval, said", [
    ("jakiro", "eagle", 1.10, [1.02, 1.19], "Jakiro (MoE) is faster than EAGLE-2 (single head)"),
    ("jakiro", "eagle", 0.90, [0.85, 0.95], "EAGLE-2 (single head) is faster than Jakiro (MoE)"),
    ("jakiro", "eagle", 0.97, [0.92, 1.02], "neither is measurably faster"),
    ("eagle", "jakiro", 0.80, [0.75, 0.85], "Jakiro (MoE) is faster"),  # paired the other way round: 1.25
])
def test_pair_verdict_reads_the_paired_interval(a, b, ratio, interval, said):
    verdict = bench.pair_verdict({"paired": [{"a": "jakiro", "b": "none", "ratio": 2.0, "interval": [1.9, 2.1]},
                                             {"a": a, "b": b, "ratio": ratio, "interval": interval}]})
    assert said in verdict
    if a == "eagle":
        assert "**1.250** (95% interval 1.176-1.333)" in verdict


def test_pair_verdict_needs_both_drafters():
    assert bench.pair_verdict({"paired": [{"a": "jakiro", "b": "jakiro@nofallback", "ratio": 1.0,
                                           "interval": [0.9, 1.1]}]}) is None
    assert bench.pair_verdict({}) is None
    assert bench.pair_verdict({"paired": [{"a": "jakiro", "b": "eagle", "ratio": 1.0, "interval": [None, 1.1]}]}) is None


def test_a_report_without_plain_decoding_still_gets_tau_intervals(raw):
    report = copy.deepcopy(raw)
    for by_method in [report["results"], *report["per_category"].values(),
                      *(row["methods"] for row in report["per_prompt"])]:
        del by_method["none"]
    for by_method in [report["results"], *report["per_category"].values()]:
        for metrics in by_method.values():
            metrics["speedup"] = None
    parsed = parse_report(json.dumps(report))
    assert parsed["intervals"]["speedup"] == {} and set(parsed["intervals"]["tau"]) == set(report["results"])
    markdown = bench.report_markdown(parsed, "no baseline")
    assert "**Jakiro (MoE)** (`jakiro`): no baseline, tau 2.72" in markdown
    bench_figure(parsed)
    bench.acceptance_figure(parsed)
