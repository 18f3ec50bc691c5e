"""Bootstrap intervals of benchmark ratios, and the rotating order the benchmark runs its methods in."""
import numpy as np
import pytest

from core.bench import load_prompts, run_bench, run_order
from core.bench_report import interval_tables, to_markdown
from core.bench_stats import bootstrap_weights, intervals, ratio_interval, to_json
from core.config import EngineConfig
from core.drafter import save_drafter
from core.registry import random_drafter


@pytest.fixture(scope="module")
def report(tiny_target, tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    (root / "p.jsonl").write_text("".join(f'{{"category": "{c}", "turns": ["{t}"]}}\n' for c, t in [
        ("a", "Tell me a short story."), ("a", "What is two plus two?"), ("b", "List three colours.")]))
    save_drafter(random_drafter(tiny_target, "moe"), root / "tiny-moe")
    return run_bench(tiny_target, ["none", str(root / "tiny-moe"), "hf-generate"], load_prompts(root / "p.jsonl"),
                     EngineConfig(max_new_tokens=8), progress=False, warmup=False)


def test_redraws_stay_inside_each_category():
    categories = ["a"] * 3 + ["b"] * 5 + ["a"] * 2
    weights = bootstrap_weights(categories, draws=500, seed=1)  # [D, P]
    assert weights.shape == (500, 10)
    a = np.array([c == "a" for c in categories])
    assert (weights[:, a].sum(axis=1) == 5).all() and (weights[:, ~a].sum(axis=1) == 5).all()
    assert (weights >= 0).all() and weights.std(axis=0).min() > 0  # every prompt is redrawn, not fixed


def test_one_prompt_per_category_still_has_an_interval():
    """A run of one prompt per category (--limit-per-category 1): those categories are redrawn together, so the
    interval says how much the choice of prompts moves the ratio instead of claiming zero width."""
    categories = ["a", "b", "c", "d", "e", "f", "g", "g"]
    weights = bootstrap_weights(categories, draws=500, seed=3)  # [D, P]
    assert (weights[:, :6].sum(axis=1) == 6).all() and (weights[:, 6:].sum(axis=1) == 2).all()
    assert weights.std(axis=0).min() > 0
    rng = np.random.default_rng(0)
    tokens, base = np.full(8, 100.0), rng.uniform(4, 6, 8)
    interval = ratio_interval(tokens, base * rng.uniform(0.4, 0.7, 8), tokens, base, weights)
    assert interval.high - interval.low > 0.05


def test_constant_per_prompt_ratio_has_no_spread():
    tokens = np.array([100.0, 128.0, 64.0, 90.0])
    seconds = np.array([2.0, 3.0, 1.0, 2.5])
    interval = ratio_interval(tokens, seconds / 2, tokens, seconds, bootstrap_weights(["x"] * 4, 300))
    assert interval.value == pytest.approx(2.0)
    assert interval.low == pytest.approx(2.0) and interval.high == pytest.approx(2.0)


def test_interval_brackets_the_ratio_and_narrows_with_more_prompts():
    rng = np.random.default_rng(0)

    def width(prompts: int) -> float:
        tokens = rng.integers(60, 129, prompts).astype(float)
        base = tokens / rng.uniform(15, 25, prompts)
        fast = base / rng.normal(2.0, 0.3, prompts)
        interval = ratio_interval(tokens, fast, tokens, base, bootstrap_weights(["x"] * prompts, 1000, 2))
        assert interval.low < interval.value < interval.high
        return interval.high - interval.low

    assert width(400) < width(25) / 2


def test_intervals_cover_the_true_speedup_about_as_often_as_they_claim():
    """Prompts drawn from a known population of speedups: the 95% interval holds the population's ratio of sums in
    about 95% of 300 simulated benchmarks (binomial 99.9% band for 300 tries at p = 0.95: 0.91-0.98)."""
    rng = np.random.default_rng(7)
    population = 20000
    tokens_all = rng.integers(40, 129, population).astype(float)
    base_all = tokens_all / rng.uniform(15, 25, population)
    spec_all = base_all / rng.lognormal(np.log(2.0), 0.25, population)
    truth = (tokens_all.sum() / spec_all.sum()) / (tokens_all.sum() / base_all.sum())
    hits, tries = 0, 300
    for t in range(tries):
        idx = rng.integers(0, population, 60)
        interval = ratio_interval(tokens_all[idx], spec_all[idx], tokens_all[idx], base_all[idx],
                                  bootstrap_weights(["x"] * 60, 1000, seed=t))
        hits += interval.low <= truth <= interval.high
    assert 0.91 <= hits / tries <= 0.98


def _report(rows):
    return {"per_prompt": [{"category": c, "methods": m} for c, m in rows]}


def test_intervals_agree_with_the_report_and_pair_every_method(report):
    stats = intervals(report)
    results = report["results"]
    assert set(stats["speedup"]) == set(results) - {"none"}
    for method, interval in stats["speedup"].items():
        assert interval.value == pytest.approx(results[method]["speedup"])
        assert interval.low <= interval.value <= interval.high
    for method, interval in stats["tau"].items():
        assert interval.value == pytest.approx(results[method]["tau"])
    assert list(stats["speedup_by_category"]) == ["a", "b"]
    for category, by_method in stats["speedup_by_category"].items():
        for method, interval in by_method.items():
            assert interval.value == pytest.approx(report["per_category"][category][method]["speedup"])
            assert interval.low <= interval.value <= interval.high
    assert stats["speedup_by_category"]["b"]["hf-generate"].low == stats["speedup_by_category"]["b"]["hf-generate"].high
    others = [m for m in results if m != "none"]
    assert [(a, b) for a, b, _ in stats["paired"]] == [(a, b) for i, a in enumerate(others) for b in others[i + 1:]]
    assert report["intervals"] == to_json(stats)  # run_bench stores them with the report


def test_uncounted_forwards_and_missing_baseline():
    rows = [("x", {"a": {"new_tokens": 10, "decode_s": 1.0, "target_forwards": None},
                   "b": {"new_tokens": 10, "decode_s": 2.0, "target_forwards": 5}})] * 3
    stats = intervals(_report(rows))
    assert stats["speedup"] == {} and list(stats["tau"]) == ["b"] and stats["tau"]["b"].value == 2.0
    assert stats["paired"][0][2].value == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no per-prompt rows"):
        intervals(_report([]))


def test_markdown_shows_the_intervals(report):
    markdown = to_markdown(report)
    assert "## How sure" in markdown and "| `tiny-moe` / `hf-generate` |" in markdown
    assert "## How sure" not in to_markdown({**report, "intervals": None})  # older reports still render
    assert interval_tables(to_json(intervals(report))) in markdown


@pytest.mark.parametrize("methods", [1, 3, 5])
def test_run_order_rotates_every_method_through_every_position(methods):
    orders = [run_order(methods, k) for k in range(methods)]
    for order in orders:
        assert sorted(order) == list(range(methods))
    for position in range(methods):
        assert sorted(order[position] for order in orders) == list(range(methods))
    assert run_order(methods, methods) == run_order(methods, 0)


def test_intervals_script_reads_saved_reports(report, tmp_path, capsys):
    """benchmarks/bench_intervals.py on a saved report prints the tables the Markdown shows; a bad file is refused."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_intervals", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_intervals.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps({k: v for k, v in report.items() if k != "intervals"}))
    assert script.main([str(saved)]) == 0
    assert interval_tables(to_json(intervals(report))) in capsys.readouterr().out
    (tmp_path / "bad.json").write_text('{"results": {}}')
    assert script.main([str(tmp_path / "bad.json")]) == 2
    assert "not a benchmark report" in capsys.readouterr().err


def test_sampled_runs_do_not_depend_on_the_order_methods_run_in(tiny_target, tmp_path):
    """Each generation seeds its own sampling, so rotating the order (or listing the methods otherwise) changes
    no method's tokens: the same target forwards per prompt either way, at temperature 1."""
    from core.config import SamplingConfig

    (tmp_path / "p.jsonl").write_text('{"prompt": "Once upon a time"}\n{"prompt": "Name a fruit."}\n'
                                      '{"prompt": "Count to five."}\n')
    save_drafter(random_drafter(tiny_target, "moe"), tmp_path / "moe")
    cfg = EngineConfig(max_new_tokens=10, sampling=SamplingConfig(temperature=1.0))
    methods = ["none", str(tmp_path / "moe"), "hf-generate"]
    runs = [run_bench(tiny_target, order, load_prompts(tmp_path / "p.jsonl"), cfg, progress=False, warmup=False)
            for order in (methods, methods[::-1])]
    for method in ("moe", "none", "hf-generate"):
        per_prompt = [[(p["methods"][method]["new_tokens"], p["methods"][method]["target_forwards"])
                       for p in r["per_prompt"]] for r in runs]
        assert per_prompt[0] == per_prompt[1], method


def test_plot_draws_the_overall_speedup_interval(report):
    from core.bench_report import bench_figure

    bars = {t.name: t for t in bench_figure(report).data if t.yaxis == "y2"}  # the speedup row
    low, high = report["intervals"]["speedup"]["tiny-moe"]
    speedup = report["results"]["tiny-moe"]["speedup"]
    error = bars["tiny-moe"].error_y
    assert list(bars["tiny-moe"].x)[-1] == "overall" and bars["tiny-moe"].y[-1] == pytest.approx(speedup)
    assert error.array[-1] == pytest.approx(high - speedup) and error.arrayminus[-1] == pytest.approx(speedup - low)
    by_category = report["intervals"]["speedup_by_category"]
    for k, category in enumerate(list(bars["tiny-moe"].x)[:-1]):
        low, high = by_category[category]["tiny-moe"]
        value = report["per_category"][category]["tiny-moe"]["speedup"]
        assert error.array[k] == pytest.approx(high - value) and error.arrayminus[k] == pytest.approx(value - low)
    assert bars["none"].error_y.array is None  # the baseline has none
    plain = bench_figure({**report, "intervals": None}).data
    assert all(t.error_y.array is None for t in plain)


def test_a_ratio_without_a_finite_value_stays_valid_json():
    """A method whose seconds sum to zero (nothing it could be timed on) gives no finite ratio: the report's JSON,
    written with allow_nan=False, gets None there and the Markdown a dash, instead of the run dying at its end."""
    import json

    rows = [("x", {"none": {"new_tokens": 4, "decode_s": 1.0, "target_forwards": 4},
                   "odd": {"new_tokens": 4, "decode_s": 0.0, "target_forwards": 2}})] * 3
    stats = to_json(intervals(_report(rows)))
    json.dumps(stats, allow_nan=False)
    assert stats["speedup"]["odd"] == [None, None]
    assert "| `odd` | - | 2.00 - 2.00 |" in interval_tables(stats)
