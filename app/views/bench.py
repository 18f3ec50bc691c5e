"""The "Benchmarks" tab: saved ``python -m core bench`` reports (the committed ones, or a user's own file) as the
headline, the report's tables and its figure. A single prompt's live speedup swings with the prompt and with the
machine; these are whole runs over many prompts, with bootstrap intervals."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from core.bench import BASELINE
from core.bench_read import ReportError, read_report
from core.bench_report import bench_figure, to_markdown

from app.views.stats import bar_figure
from app.views.style import method_color, method_label

SHOWN_DEPTHS = 6  # the tree's own depths (5 by default) and the first beyond it, where looked-up chains thin out
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
HEADLINE_REPORT = "mtbench80-r15-bf16-s32.json"  # the run README's "Where it stands" quotes

NOTE = (
    "<small>Each report is one run of <code>python -m core bench</code>: every method on every prompt, interleaved, "
    "in one process. Speedup = tokens/s over plain decoding (<code>none</code>) of the same target in the same run; "
    "the intervals hold the middle 95% of 2,000 redraws of the prompts within their categories, so they show how "
    "much the choice of prompts moves a ratio, not a whole run's drift (~0.08x between runs on this project's "
    "CPUs). The committed runs and what was learnt from them: <code>benchmarks/RESULTS.md</code>. Load your own "
    "run's <code>--json</code> file to see it the same way.</small>"
)


@functools.lru_cache(maxsize=4)
def shipped_reports(folder: Path = SHIPPED_DIR) -> dict[str, Path]:
    """label -> file, for every benchmark report in ``folder``, newest first (other result files are skipped)."""
    found = []
    for path in folder.glob("*.json"):
        try:
            report = read_report(path, with_intervals=False)
        except ReportError:
            continue
        found.append((report["machine"]["date"], path.name, report_label(report, path.stem), path))
    return {label: path for _, _, label, path in sorted(found, key=lambda f: (f[0], f[1]), reverse=True)}


def default_label(choices: dict[str, Path]) -> str | None:
    """The headline report's label, else the newest."""
    named = [label for label, path in choices.items() if path.name == HEADLINE_REPORT]
    return (named or list(choices) or [None])[0]


def report_label(report: dict[str, Any], name: str) -> str:
    """``2026-12-07 · name · 80 prompts · greedy · bfloat16``."""
    config, machine = report["config"], report["machine"]
    sampling = "greedy" if config["greedy"] else f"temperature {config['engine']['sampling'].get('temperature', '?')}"
    return f"{machine['date'][:10]} · {name} · {config['prompts']} prompts · {sampling} · {machine['dtype']}"


def headline_markdown(report: dict[str, Any]) -> str:
    """One line per method: speedup over plain decoding with its interval, and tau."""
    results, stats = report["results"], report.get("intervals") or {}
    lines = []
    for method, metrics in results.items():
        shown = method_label(method)
        name = f"**{shown}**" + (f" (`{method}`)" if shown != method else "")
        if method == BASELINE:
            lines.append(f"- {name}: {metrics['tokens_per_s']:.1f} tokens/s")
            continue
        span = stats.get("speedup", {}).get(method)
        within = f" (95% interval {span[0]:.2f}-{span[1]:.2f})" if span and None not in span else ""
        speed = f"**{metrics['speedup']:.2f}x**{within}" if metrics["speedup"] is not None else "no baseline"
        tau = f", tau {metrics['tau']:.2f}" if metrics["tau"] is not None else ""
        lines.append(f"- {name}: {speed}{tau}")
    verdict = pair_verdict(stats)
    return "\n".join(lines + ([f"\n{verdict}"] if verdict else []))


def pair_verdict(stats: dict[str, Any], pair: tuple[str, str] = ("jakiro", "eagle")) -> str | None:
    """The app's question, Jakiro against EAGLE-2 in tokens/s on the same prompts, answered from the paired ratio
    and its interval; None when the report did not run both (or has no per-prompt rows)."""
    for row in stats.get("paired", []):
        if {row["a"], row["b"]} != set(pair) or row["ratio"] is None or None in row["interval"]:
            continue
        ratio, (low, high) = row["ratio"], row["interval"]
        if row["a"] != pair[0]:  # the report paired them the other way round
            ratio, low, high = 1 / ratio, 1 / high, 1 / low
        first, second = method_label(pair[0]), method_label(pair[1])
        if low > 1:
            said = f"{first} is faster than {second} in this run"
        elif high < 1:
            said = f"{second} is faster than {first} in this run"
        else:
            said = "the interval holds 1: neither is measurably faster in this run"
        return (f"**{first} / {second}**, tokens/s on the same prompts: **{ratio:.3f}** (95% interval "
                f"{low:.3f}-{high:.3f}): {said}.")
    return None


def report_markdown(report: dict[str, Any], source: str) -> str:
    """The headline, then the report's own Markdown (machine, command, tables, intervals, definitions)."""
    body = to_markdown(report).replace("# Benchmark\n", "## How it ran\n", 1)
    return f"### {source}\n\n{headline_markdown(report)}\n\n{body}"


def acceptance_figure(report: dict[str, Any]) -> Any:
    """alpha_d over the whole run, one bar group per drafter, the first ``SHOWN_DEPTHS`` depths."""
    drafters = {m: r["acceptance_by_depth"][:SHOWN_DEPTHS] for m, r in report["results"].items()
                if r.get("acceptance_by_depth")}
    series = {method_label(m): (list(range(1, len(alphas) + 1)), alphas) for m, alphas in drafters.items()}
    colors = {method_label(m): method_color(m, i) for i, m in enumerate(drafters)}
    return bar_figure(series, colors, "tree depth d", "acceptance α_d", rate=True,
                      empty="no speculative cycles in this report")


def report_view(path: str | Path, source: str | None = None) -> tuple[str, Any, Any]:
    """A report file -> (Markdown, speed figure, acceptance figure); raises ``ReportError`` naming what is wrong
    with the file."""
    report = read_report(path)
    colors = {m: method_color(m, i) for i, m in enumerate(report["results"])}
    return report_markdown(report, source or Path(path).name), bench_figure(report, colors), acceptance_figure(report)
