"""The benchmark command: prompt files, every method on a tiny target, the report and its outputs."""
import argparse
import json
from pathlib import Path

import pytest

from core.bench import add_parser, build_methods, load_prompts, run_bench, split_list
from core.variants import apply_variants, check_methods, split_variant
from core.bench_report import to_markdown, write_plot
from core.config import LOOKUP_TOKENS, EngineConfig, FallbackConfig, SamplingConfig
from core.drafter import save_drafter
from core.registry import random_drafter

SPEC_BENCH = Path("/work/shared/benchmarks/spec_bench_questions.jsonl")
METRICS = {"prompts", "new_tokens", "target_forwards", "tau", "decode_s", "tokens_per_s", "speedup", "match_rate",
           "draft_ms", "verify_ms", "wall_s", "spec_cycles", "mean_accepted", "acceptance_by_depth",
           "drafter_forwards_per_cycle"}


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    return write_lines(tmp_path_factory.mktemp("prompts") / "mixed.jsonl", [
        {"prompt": "Tell me a short story about a cat."},
        {"prompt": "What is two plus two?"},
        {"prompt": "List three colours."},
        {"question_id": 81, "category": "writing", "turns": ["Write a haiku about rain.", "Now in French."]},
        {"question_id": 111, "category": "math", "turns": ["What is 12 times 7?"]},
    ])


@pytest.fixture(scope="module")
def drafter_folder(tiny_target, tmp_path_factory):
    folder = tmp_path_factory.mktemp("drafters") / "tiny-moe"
    save_drafter(random_drafter(tiny_target, "moe"), folder)
    return folder


@pytest.fixture(scope="module")
def report(tiny_target, prompt_file, drafter_folder):
    methods = ["none", str(drafter_folder), "hf-generate", "hf-prompt-lookup"]
    return run_bench(tiny_target, methods, load_prompts(prompt_file), EngineConfig(max_new_tokens=12), progress=False)


def test_reads_both_formats(prompt_file):
    prompts = load_prompts(prompt_file)
    assert [p.category for p in prompts] == ["default"] * 3 + ["writing", "math"]
    assert prompts[3].text == "Write a haiku about rain." and prompts[3].question_id == 81
    assert prompts[0].question_id == 1  # plain lines are numbered by line


def test_spec_bench_file_selection():
    prompts = load_prompts(SPEC_BENCH, ["writing", "math"], limit_per_category=2)
    picked = [(p.category, p.question_id) for p in prompts]
    assert picked == [("writing", 81), ("writing", 82), ("math", 111), ("math", 112)]
    assert len(load_prompts(SPEC_BENCH)) == 480


def test_schema(report):
    assert set(report) >= {"machine", "config", "results", "per_category"}
    assert set(report["machine"]) >= {"cpu", "cores", "torch", "transformers", "device", "dtype", "date"}
    assert set(report["config"]) >= {"methods", "engine", "greedy", "prompts"}
    assert list(report["results"]) == ["none", "tiny-moe", "hf-generate", "hf-prompt-lookup"]
    for metrics in report["results"].values():
        assert set(metrics) == METRICS
    json.dumps(report, allow_nan=False)


def test_greedy_methods_match_plain_decoding(report):
    for name, metrics in report["results"].items():
        assert metrics["match_rate"] == 1.0, name
        assert metrics["new_tokens"] == report["results"]["none"]["new_tokens"], name
    assert report["results"]["none"]["speedup"] == 1.0
    assert report["results"]["none"]["tau"] == 1.0
    assert report["results"]["hf-generate"]["tau"] == 1.0
    assert report["results"]["hf-prompt-lookup"]["tau"] >= 1.0
    assert report["results"]["tiny-moe"]["draft_ms"] > 0 and report["results"]["hf-generate"]["draft_ms"] is None


def test_per_category(report):
    per_category = report["per_category"]
    assert list(per_category) == ["default", "writing", "math"]
    assert [per_category[c]["none"]["prompts"] for c in per_category] == [3, 1, 1]
    for by_method in per_category.values():
        assert by_method["none"]["speedup"] == 1.0
        assert set(by_method) == set(report["results"])
    total = sum(per_category[c]["tiny-moe"]["new_tokens"] for c in per_category)
    assert total == report["results"]["tiny-moe"]["new_tokens"]


def test_markdown_and_plot(report, tmp_path):
    markdown = to_markdown(report)
    for name in report["results"]:
        assert f"`{name}`" in markdown
    for category in report["per_category"]:
        assert f"| {category} |" in markdown
    write_plot(report, tmp_path / "bench.html", include_plotlyjs="cdn")
    html = (tmp_path / "bench.html").read_text()
    assert "plotly" in html and "hf-prompt-lookup" in html


def test_sampling_has_no_match_rate(tiny_target, prompt_file):
    cfg = EngineConfig(sampling=SamplingConfig(temperature=1.0), max_new_tokens=4)
    result = run_bench(tiny_target, ["none", "hf-generate"], load_prompts(prompt_file)[:1], cfg, progress=False,
                       warmup=False)
    assert result["results"]["hf-generate"]["match_rate"] is None
    assert result["results"]["none"]["speedup"] == 1.0


def test_command_writes_every_output(tiny_target, prompt_file, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    out = {"json": tmp_path / "r.json", "markdown": tmp_path / "r.md", "plot": tmp_path / "r.html"}
    args = parser.parse_args([
        "bench", "--prompts", str(prompt_file), "--categories", "math,writing", "--drafters", "hf-generate",
        "--target", tiny_target.model_id, "--device", "cpu", "--max-new-tokens", "4", "--no-progress",
        "--json", str(out["json"]), "--markdown", str(out["markdown"]), "--plot", str(out["plot"]),
    ])
    assert args.func(args) == 0
    saved = json.loads(out["json"].read_text())
    assert list(saved["results"]) == ["none", "hf-generate"]  # the baseline is added
    assert list(saved["per_category"]) == ["writing", "math"]
    assert saved["config"]["args"]["max_new_tokens"] == 4
    assert "`hf-generate`" in out["markdown"].read_text() and out["plot"].stat().st_size > 0
    assert "note: added 'none'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "lines, message",
    [
        (["{not json"], "line 1 .* not valid JSON"),
        (["[1, 2]"], "not a JSON object"),
        ([{"text": "hi"}], "needs 'prompt'"),
        ([{"turns": []}], "needs 'prompt'"),
        ([{"prompt": "  "}], "empty prompt"),
        ([{"prompt": "hi", "category": 3}], "category"),
        (["", "  "], "holds no prompts"),
    ],
)
def test_malformed_prompt_file(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        load_prompts(write_lines(tmp_path / "bad.jsonl", lines))


def test_missing_file_and_bad_selection(tmp_path, prompt_file):
    with pytest.raises(ValueError, match="does not exist"):
        load_prompts(tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="unknown category 'poetry'.*default, writing, math"):
        load_prompts(prompt_file, ["writing", "poetry"])
    with pytest.raises(ValueError, match="at least 1"):
        load_prompts(prompt_file, limit_per_category=0)


@pytest.mark.parametrize(
    "methods, message",
    [(["none", "medusa"], "unknown method 'medusa'"), ([], "no methods"), (["none", "none"], "more than once"),
     (["jakiro@huge"], "must be one of fixed, adaptive, layerstop, nolayerstop, standard, hybrid"), (["none@adaptive"], "only drafters"),
     (["jakiro@fixed+adaptive"], "at most one of fixed, adaptive"),
     (["jakiro@standard+hybrid"], "at most one of standard, hybrid"),
     (["jakiro@decoupled+coupled"], "at most one of decoupled, coupled"),
     (["hf-generate@fixed"], "only drafters"),
     (["jakiro@lookup12+nolookup"], "at most one of lookup, nolookup, lookupalone, lookup<N>"),
     (["jakiro@runs2+runs3"], "at most one of runs<N>"), (["jakiro@lookup99"], "lookup must be an integer in 0..64"),
     (["jakiro@lookupmax16+lookupmax8"], "at most one of lookupmax<N>"),
     (["jakiro@runs0"], "lookup_runs must be an integer in 1..8"), (["jakiro@runs"], "must be one of"),
     (["jakiro@curve5"], "lookup_curve must be an integer in 0..4"), (["jakiro@curve0+curve1"], "at most one of curve<N>"),
     (["jakiro@topk0"], "top_k must be an integer in 1..64"), (["jakiro@depth3+depth4"], "at most one of depth<N>"),
     (["jakiro@costcurve+costline"], "at most one of costcurve, costline"),
     (["jakiro@fallback+nofallback"], "at most one of fallback, nofallback"),
     (["jakiro@window0"], "fallback window must be an integer >= 1"), (["jakiro@window4+window8"], "at most one of window<N>"),
     (["jakiro@z5+z10"], "at most one of z<N>"), (["jakiro@ahead12+ahead15"], "at most one of ahead<N>"),
     (["jakiro@margin0"], "fallback margin must be a positive number"),
     (["jakiro@plainverify+plainmeasured"], "at most one of plainmeasured, plainverify")],
)
def test_bad_methods(methods, message):
    with pytest.raises(ValueError, match=message):
        check_methods(methods)


def test_fallback_variants_set_the_policy_in_tenths():
    variants = split_variant("eagle@z15+ahead12+window8+margin90")[1]
    fallback = apply_variants(EngineConfig(), variants, moe=False).fallback
    assert (fallback.confidence, fallback.ahead, fallback.window) == (pytest.approx(1.5), pytest.approx(1.2), 8)
    assert fallback.margin == pytest.approx(0.9)
    assert apply_variants(EngineConfig(), (), moe=False).fallback == FallbackConfig()
    assert apply_variants(EngineConfig(), ("plainverify",), moe=False).fallback.plain_from_verify is True


def test_tree_size_variants_run_side_by_side(tiny_target, prompt_file):
    specs = ["eagle@fixed", "eagle@adaptive", "eagle@adaptive+nolayerstop", "eagle@adaptive+costcurve",
             "eagle@adaptive+nofallback", "eagle@adaptive+nobackoff", "eagle@adaptive+window7", "none"]
    report = run_bench(tiny_target, specs, load_prompts(prompt_file)[:2],
                       EngineConfig(max_new_tokens=8), progress=False, warmup=False)
    methods = report["config"]["methods"]
    assert methods["eagle@adaptive+costcurve"]["engine"]["tree"]["cost_curve"] is True
    assert methods["eagle@adaptive"]["engine"]["tree"]["cost_curve"] is False
    assert report["results"]["eagle@adaptive+costcurve"]["match_rate"] == 1.0
    assert methods["eagle@adaptive+nofallback"]["engine"]["fallback"]["enabled"] is False
    assert methods["eagle@adaptive"]["engine"]["fallback"]["enabled"] is True
    assert methods["eagle@adaptive+window7"]["engine"]["fallback"]["window"] == 7
    backoff = methods["eagle@adaptive+nobackoff"]["engine"]["fallback"]
    assert backoff["max_cooldown"] == backoff["cooldown"] < methods["eagle@adaptive"]["engine"]["fallback"]["max_cooldown"]
    assert methods["eagle@fixed"]["engine"]["tree"]["adaptive"] is False
    assert methods["eagle@adaptive"]["engine"]["tree"]["adaptive"] is True
    assert methods["eagle@adaptive"]["engine"]["tree"]["layer_stop"] is True
    assert methods["eagle@adaptive+nolayerstop"]["engine"]["tree"]["layer_stop"] is False
    assert report["results"]["eagle@adaptive"]["match_rate"] == 1.0
    assert report["results"]["eagle@adaptive+nolayerstop"]["match_rate"] == 1.0


def test_lookup_variants_set_the_run_length_and_count(tiny_target, prompt_file):
    specs = ["eagle@nolookup", "eagle@lookup16+runs3", "eagle@runs2+lookupmax24", "eagle@curve0", "none"]
    report = run_bench(tiny_target, specs, load_prompts(prompt_file)[:2], EngineConfig(max_new_tokens=8),
                       progress=False, warmup=False)
    trees = {name: m["engine"]["tree"] for name, m in report["config"]["methods"].items() if name != "none"}
    assert ([(t["lookup"], t["lookup_runs"], t["lookup_max"], t["lookup_curve"]) for t in trees.values()]
            == [(0, 1, 0, 2), (16, 3, 0, 2), (LOOKUP_TOKENS, 2, 24, 2), (LOOKUP_TOKENS, 1, 0, 0)])
    assert all(report["results"][name]["match_rate"] == 1.0 for name in trees)


def test_shape_variants_set_the_tree_and_leave_lookup_alone(tiny_target, prompt_file):
    specs = ["eagle@nolookup+topk6", "eagle@nolookup+depth3+total12", "none"]
    report = run_bench(tiny_target, specs, load_prompts(prompt_file)[:1], EngineConfig(max_new_tokens=8),
                       progress=False, warmup=False)
    trees = [m["engine"]["tree"] for name, m in report["config"]["methods"].items() if name != "none"]
    assert [(t["top_k"], t["depth"], t["total_tokens"], t["lookup"]) for t in trees] == [(6, 5, 24, 0), (4, 3, 12, 0)]
    assert all(report["results"][name]["match_rate"] == 1.0 for name in report["results"])


def test_schedule_variants_run_side_by_side(tiny_target, prompt_file, drafter_folder):
    """Jakiro with and without the contrastive last layer in one run; the standard schedule drafts every layer
    with the MoE branch, so it makes more drafter forwards per cycle, and both stay lossless."""
    specs = [f"{drafter_folder}@fixed+standard", f"{drafter_folder}@fixed+hybrid", "none"]
    report = run_bench(tiny_target, specs, load_prompts(prompt_file)[:2],
                       EngineConfig(max_new_tokens=8), progress=False, warmup=False)
    name = drafter_folder.name
    methods, results = report["config"]["methods"], report["results"]
    assert methods[f"{name}@fixed+standard"]["engine"]["tree"]["schedule"] == "standard"
    assert methods[f"{name}@fixed+hybrid"]["engine"]["tree"]["schedule"] == "hybrid"
    assert results[f"{name}@fixed+standard"]["match_rate"] == results[f"{name}@fixed+hybrid"]["match_rate"] == 1.0
    assert (results[f"{name}@fixed+standard"]["drafter_forwards_per_cycle"]
            > results[f"{name}@fixed+hybrid"]["drafter_forwards_per_cycle"])


def test_decoupled_variant_runs_side_by_side(tiny_target, prompt_file, drafter_folder):
    """Jakiro's siblings from either expert's own distribution against the mix, in one run, both lossless."""
    specs = [f"{drafter_folder}@fixed+decoupled", f"{drafter_folder}@fixed+coupled", "none"]
    report = run_bench(tiny_target, specs, load_prompts(prompt_file)[:2],
                       EngineConfig(max_new_tokens=8), progress=False, warmup=False)
    name = drafter_folder.name
    methods, results = report["config"]["methods"], report["results"]
    assert methods[f"{name}@fixed+decoupled"]["engine"]["tree"]["decoupled"] is True
    assert methods[f"{name}@fixed+coupled"]["engine"]["tree"]["decoupled"] is False
    assert results[f"{name}@fixed+decoupled"]["match_rate"] == results[f"{name}@fixed+coupled"]["match_rate"] == 1.0


@pytest.mark.parametrize("variant", ["standard", "decoupled"])
def test_dense_drafter_has_no_schedule_or_experts(tiny_target, variant):
    with pytest.raises(ValueError, match="only a MoE"):
        build_methods([f"eagle@{variant}"], tiny_target, EngineConfig(max_new_tokens=2))


def test_no_prompts(tiny_target):
    with pytest.raises(ValueError, match="no prompts"):
        run_bench(tiny_target, ["none"], [], EngineConfig(max_new_tokens=2), progress=False)


def test_split_list():
    assert split_list(" a, b,,c ") == ["a", "b", "c"] and split_list(None) == []
