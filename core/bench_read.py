"""Reading a saved benchmark report (``python -m core bench --json``) back: parsed as data only and checked field by
field, so a malformed or hostile file is refused with a message naming the field, and nothing the Markdown and the
figure compute from an accepted one can fail. The bootstrap intervals are computed again from the per-prompt rows
(``core.bench_stats``, seeded: the same numbers a new report stores), so reports written before session 30 get
them too and a file cannot claim intervals its prompts do not give."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from core.bench_stats import intervals, to_json
from core.checks import (
    AMOUNT, AMOUNT_OR_NULL, COUNT, FLAG, NUMBERS, OBJECT, Check, Fields, check_fields, is_int,
    is_number, or_null, refuse_constant, shown,
)

MAX_REPORT_BYTES = 16 * 1024 * 1024  # the largest committed report is 0.3 MB
MAX_METHODS = 16
MAX_CATEGORIES = 64
MAX_DEPTHS = 1024  # acceptance_by_depth entries
MAX_PROMPTS = 5000  # per-prompt rows (Spec-Bench has 480): the bootstrap holds a [2000, prompts] table
MAX_SETTINGS = 64  # keys of the tree and sampling settings, which the Markdown prints
REPORT_KEYS = ("machine", "config", "results", "per_category")  # what makes a JSON file a benchmark report


class ReportError(ValueError):
    """A benchmark report is not JSON, too large, or holds a field of the wrong type."""


NAME_PATTERN = re.compile(r"[^|`\x00-\x1f\x7f]{1,300}")  # a method or category name: one table cell's worth
NAME: Check = ("a name of 1-300 characters without |, ` or control characters",
               lambda v: isinstance(v, str) and NAME_PATTERN.fullmatch(v) is not None)
COUNT_OR_NULL: Check = ("an integer >= 0 or null", or_null(COUNT[1]))
DEPTHS: Check = (f"a list of at most {MAX_DEPTHS} numbers", lambda v: NUMBERS[1](v) and len(v) <= MAX_DEPTHS)


def _flat_settings(value: Any) -> bool:
    """A settings object the Markdown prints whole: few keys, short scalar values."""
    return (isinstance(value, dict) and len(value) <= MAX_SETTINGS
            and all(x is None or isinstance(x, (bool, str)) or is_number(x) for x in value.values())
            and all(len(str(x)) <= 300 for x in [*value, *value.values()]))


SETTINGS: Check = (f"an object of at most {MAX_SETTINGS} short numbers, strings, booleans or nulls", _flat_settings)
QUESTION_ID: Check = ("an integer or a string", lambda v: is_int(v) or isinstance(v, str))
SHORT_TEXT: Check = ("a string of at most 300 characters", lambda v: isinstance(v, str) and len(v) <= 300)
SHORT_TEXT_OR_NULL: Check = ("a string of at most 300 characters or null", or_null(SHORT_TEXT[1]))
COMMAND: Check = ("a string of at most 4,000 characters", lambda v: isinstance(v, str) and len(v) <= 4000)

MACHINE_FIELDS: Fields = {
    "date": (SHORT_TEXT, True), "cpu": (SHORT_TEXT, True), "cores": (COUNT, True), "torch_threads": (COUNT, True),
    "target": (SHORT_TEXT, True), "device": (SHORT_TEXT, True), "dtype": (SHORT_TEXT, True),
    "torch": (SHORT_TEXT, True), "transformers": (SHORT_TEXT, True), "python": (SHORT_TEXT, True),
    "gpu": (SHORT_TEXT_OR_NULL, False), "native_bf16": (FLAG, False), "layout": (SHORT_TEXT, False),
}
CONFIG_FIELDS: Fields = {"prompts": (COUNT, True), "categories": (OBJECT, True), "greedy": (FLAG, True),
                         "engine": (OBJECT, True), "command": (COMMAND, False)}
ENGINE_FIELDS: Fields = {"max_new_tokens": (COUNT, True), "sampling": (SETTINGS, True), "tree": (SETTINGS, True)}
METRIC_FIELDS: Fields = {  # one method's numbers overall or in a category (core.bench.aggregate)
    "prompts": (COUNT, True), "new_tokens": (COUNT, True), "target_forwards": (COUNT_OR_NULL, False),
    "tau": (AMOUNT_OR_NULL, True), "decode_s": (AMOUNT, False), "tokens_per_s": (AMOUNT, True),
    "speedup": (AMOUNT_OR_NULL, True), "match_rate": (AMOUNT_OR_NULL, True), "draft_ms": (AMOUNT_OR_NULL, True),
    "verify_ms": (AMOUNT_OR_NULL, True), "wall_s": (AMOUNT, True), "spec_cycles": (COUNT, False),
    "mean_accepted": (AMOUNT_OR_NULL, False), "acceptance_by_depth": (DEPTHS, False),
    "drafter_forwards_per_cycle": (AMOUNT_OR_NULL, False),
}
PROMPT_FIELDS: Fields = {"category": (NAME, True), "question_id": (QUESTION_ID, False), "methods": (OBJECT, True)}
PROMPT_METHOD_FIELDS: Fields = {"new_tokens": (COUNT, True), "decode_s": (AMOUNT, True),
                                "target_forwards": (COUNT_OR_NULL, True)}


def is_report(data: Any) -> bool:
    """Whether parsed JSON looks like a benchmark report (other result files sit next to them)."""
    return isinstance(data, dict) and all(k in data for k in REPORT_KEYS)


def read_report(path: str | Path, with_intervals: bool = True) -> dict[str, Any]:
    """Read, check and complete a report file (see ``parse_report``); raises ``ReportError``."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise ReportError(f"{path.name} is {size / 1e6:.1f} MB; a benchmark report may be at most "
                              f"{MAX_REPORT_BYTES / 1e6:.0f} MB")
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as err:
        raise ReportError(f"{path.name} is not UTF-8 text: {err.reason} at byte {err.start}") from None
    except OSError as err:
        raise ReportError(f"cannot read {path.name}: {err.strerror or err}") from None
    return parse_report(text, with_intervals)


def parse_report(text: str, with_intervals: bool = True) -> dict[str, Any]:
    """A report's JSON text -> the report, its ``intervals`` computed again from its per-prompt rows (None when it
    has none, or without ``with_intervals``). Raises ``ReportError`` naming the field that is missing or of the
    wrong type."""
    try:
        data = json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as err:
        raise ReportError(f"not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    except RecursionError:
        raise ReportError("nested too deeply to be a benchmark report") from None
    except ValueError as err:  # NaN/Infinity, integers of thousands of digits
        raise ReportError(f"not valid report JSON: {err}") from None
    if not is_report(data):
        raise ReportError("not a benchmark report: it needs machine, config, results and per_category "
                          "(the file `python -m core bench --json` writes)")
    check_report(data)
    rows = data.get("per_prompt") or []
    data["intervals"] = to_json(intervals(data)) if with_intervals and rows else None
    return data


def check_report(report: dict[str, Any]) -> None:
    """Raises ``ReportError`` unless every field the Markdown, the figure and the intervals read has its type."""
    _check_object(report["machine"], MACHINE_FIELDS, "machine")
    _check_object(report["config"], CONFIG_FIELDS, "config")
    _check_object(report["config"]["engine"], ENGINE_FIELDS, "config.engine")
    if len(report["config"]["categories"]) > MAX_CATEGORIES:
        _refuse("config.categories", f"an object of at most {MAX_CATEGORIES} categories",
                report["config"]["categories"])
    for name, count in report["config"]["categories"].items():
        _check_name(name, "config.categories")
        if not COUNT[1](count):
            _refuse(f"config.categories.{name}", COUNT[0], count)
    methods = _check_metrics(report["results"], "results")
    per_category = report["per_category"]
    if not isinstance(per_category, dict) or len(per_category) > MAX_CATEGORIES:
        _refuse("per_category", f"an object of at most {MAX_CATEGORIES} categories", per_category)
    for category, by_method in per_category.items():
        _check_name(category, "per_category")
        if sorted(_check_metrics(by_method, f"per_category.{category}")) != sorted(methods):
            raise ReportError(f"per_category.{category} must hold the methods of results ({', '.join(methods)})")
    _check_prompts(report.get("per_prompt", []), methods)


def _check_metrics(by_method: Any, where: str) -> list[str]:
    if not isinstance(by_method, dict) or not 1 <= len(by_method) <= MAX_METHODS:
        _refuse(where, f"an object of 1-{MAX_METHODS} methods", by_method)
    for method, metrics in by_method.items():
        _check_name(method, where)
        _check_object(metrics, METRIC_FIELDS, f"{where}.{method}")
    return list(by_method)


def _check_prompts(rows: Any, methods: list[str]) -> None:
    if not isinstance(rows, list) or len(rows) > MAX_PROMPTS:
        _refuse("per_prompt", f"a list of at most {MAX_PROMPTS} objects", rows)
    for i, row in enumerate(rows):
        where = f"per_prompt[{i}]"
        _check_object(row, PROMPT_FIELDS, where)
        if sorted(row["methods"]) != sorted(methods):
            raise ReportError(f"{where}.methods must hold the methods of results ({', '.join(methods)})")
        for method, numbers in row["methods"].items():
            _check_object(numbers, PROMPT_METHOD_FIELDS, f"{where}.methods.{method}")


def _check_object(value: Any, fields: Fields, where: str) -> None:
    if not isinstance(value, dict):
        _refuse(where, "an object", value)
    check_fields(value, fields, where, ReportError)


def _check_name(name: str, where: str) -> None:
    if not NAME[1](name):
        raise ReportError(f"{where}: {shown(name)} must be {NAME[0]}")


def _refuse(where: str, what: str, value: Any) -> None:
    raise ReportError(f"{where} must be {what}, got {shown(value)}")
