"""Training data around the loop: prompt sets, self-distilled answers (resumable), held-out prompts, counts."""
import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.train.loop import TrainConfig
from core.train.selfdistill import answer_prompts, done_count


def test_prompt_sets_are_deterministic_and_never_hold_benchmark_questions():
    from pathlib import Path

    from core.train.prompts import FORTUNES

    if not FORTUNES.is_dir() or importlib.util.find_spec("chitchat_dataset") is None:
        pytest.skip("the prompt sets' text sources are not installed here (`make train-setup`; a GPU machine has none)")

    from core.train.broad import build_broad_prompts
    from core.train.creative import build_creative_prompts
    from core.train.knowledge import build_knowledge_prompts
    from core.train.prompts import build_prompts
    from core.train.requests import build_request_prompts

    chat, broad, creative = build_prompts(600), build_broad_prompts(300), build_creative_prompts(400)
    knowledge, requests = build_knowledge_prompts(400), build_request_prompts(400)
    assert chat == build_prompts(600) and broad == build_broad_prompts(300) and creative == build_creative_prompts(400)
    assert knowledge == build_knowledge_prompts(400) and requests == build_request_prompts(400)
    for built in (broad, creative, knowledge, requests):
        assert len({p["prompt"] for p in built}) == len(built)
    assert {"coding", "stem", "humanities", "reasoning"} <= {p["source"] for p in broad}
    assert {"writing", "roleplay", "advice", "editing"} <= {p["source"] for p in creative}
    assert {"explain", "compare", "mechanism", "debate", "math"} <= {p["source"] for p in knowledge[:200]}
    families = {"letters", "posts", "plans", "roleplay", "extract", "analyze", "teach"}
    assert families <= {p["source"] for p in requests[:100]}
    bench = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "spec_bench_questions.jsonl"
    if bench.is_file():
        turns = {t.strip() for line in bench.open() for t in json.loads(line)["turns"]}
        assert not turns & {p["prompt"].strip() for p in chat + broad + creative + knowledge + requests}


def test_knowledge_math_problems_have_the_stated_solutions():
    """The generated equations are built from their solutions: parse them back and check."""
    import re

    from core.train.knowledge import build_knowledge_prompts

    math = [p["prompt"] for p in build_knowledge_prompts(3000) if p["source"] == "math"]
    linear = [re.match(r"Solve for x: (\d+)x ([+-]) (\d+) = (-?\d+)\.", p) for p in math]
    quadratic = [re.match(r"Find the roots of x\^2 ([+-]) (\d+)x ([+-]) (\d+) = 0", p) for p in math]
    linear, quadratic = [m for m in linear if m], [m for m in quadratic if m]
    assert len(linear) > 20 and len(quadratic) > 20
    for m in linear:
        a, b, c = int(m[1]), int(m[3]) * (-1 if m[2] == "-" else 1), int(m[4])
        assert (c - b) % a == 0, m[0]  # an integer solution
    for m in quadratic:
        s, p = int(m[2]) * (-1 if m[1] == "-" else 1), int(m[4]) * (-1 if m[3] == "-" else 1)
        disc = s * s - 4 * p
        assert disc >= 0 and int(disc ** 0.5) ** 2 == disc, m[0]  # integer roots


def _answer_folders(root: Path, sizes: dict[str, int]) -> list[Path]:
    """Answer folders with one shard each, whose prompts say their folder and line number."""
    for folder, n in sizes.items():
        (root / folder).mkdir()
        lines = [json.dumps({"prompt": f"{folder} {i}", "source": folder}) for i in range(n)]
        (root / folder / "shard-0000.jsonl").write_text("\n".join(lines) + "\n")
    return [root / folder for folder in sizes]


def test_heldout_prompts_count_over_all_folders_in_the_global_scheme(tmp_path):
    from core.train.heldout import heldout_prompts

    dirs = _answer_folders(tmp_path, {"answers": 7, "answers-broad": 8})
    glob = dict(every=5, per_folder=False)
    assert [p.prompt for p in heldout_prompts(dirs, **glob)] == ["answers 0", "answers 5", "answers-broad 3"]
    assert [p.prompt for p in heldout_prompts(dirs, folder="answers-broad", **glob)] == ["answers-broad 3"]
    assert [p.prompt for p in heldout_prompts(dirs, limit=1, **glob)] == ["answers 0"]


def test_per_folder_holdout_is_the_same_in_the_loop_and_the_prompts_and_survives_appended_answers(tmp_path):
    """The loop's split over a features file's recorded folders holds out exactly the prompts ``heldout_prompts``
    returns, and answers appended to the first folder change neither."""
    from core.train.data import FeatureSet, recorded_groups
    from core.train.heldout import heldout_prompts
    from core.train.loop import holdout_split

    sizes = {"answers": 7, "answers-broad": 8}
    path = tmp_path / "f.safetensors"
    save_file({"offsets": torch.zeros(17, dtype=torch.int64)}, str(path), metadata={"answer_counts": json.dumps(sizes)})
    groups = recorded_groups(path, 17)  # 15 answers, then 2 teacher-forced conversations
    assert groups == [7, 8, 2]
    data = FeatureSet(ids=torch.zeros(0), loss_mask=torch.zeros(0), hidden=torch.zeros(0), offsets=torch.zeros(18),
                      groups=tuple(groups))
    holdout, train_idx = holdout_split(data, TrainConfig(ffn="moe", holdout_every=5))
    assert holdout == [0, 5, 7, 12, 15] and sorted(holdout + train_idx) == list(range(17))
    names = [f"{folder} {i}" for folder, n in sizes.items() for i in range(n)]
    expected = [names[i] for i in holdout if i < 15]
    assert [p.prompt for p in heldout_prompts(_answer_folders(tmp_path, sizes), every=5)] == expected
    (tmp_path / "grown").mkdir()
    grown = _answer_folders(tmp_path / "grown", {"answers": 12, "answers-broad": 8})
    assert [p.prompt for p in heldout_prompts(grown, every=5) if p.prompt in names] == expected
    ungrouped = dataclasses.replace(data, groups=())  # built without saying where its sequences came from
    assert holdout_split(ungrouped, TrainConfig(ffn="moe", holdout_every=5))[0] == [0, 5, 10, 15]
    with pytest.raises(ValueError, match="groups hold 15 sequences but it has 17"):
        holdout_split(dataclasses.replace(data, groups=(7, 8)), TrainConfig(ffn="moe", holdout_every=5))
    glob = holdout_split(data, TrainConfig.from_saved({"ffn": "moe", "holdout_every": 5}))[0]
    assert glob == [0, 5, 10, 15]  # a checkpoint saved before the scheme existed held out globally
    with pytest.raises(ValueError, match="metadata counts 15 answers but it holds 9"):
        recorded_groups(path, 9)


def test_answers_resume_after_a_kill_mid_line(tiny_target, tmp_path):
    """A job killed while writing leaves half a line; the rerun drops it and answers that prompt again."""
    prompts = [{"prompt": f"Say {word}.", "source": "test"} for word in ("one", "two", "three", "four")]
    answer_prompts(tiny_target, prompts[:2], tmp_path, batch_size=2, max_new_tokens=4)
    shard = tmp_path / "shard-0000.jsonl"
    whole = shard.read_text()
    shard.write_text(whole + whole.splitlines()[0][:25])  # the third line, cut off
    assert done_count(tmp_path) == 3
    answer_prompts(tiny_target, prompts, tmp_path, batch_size=2, max_new_tokens=4)
    rows = [json.loads(line) for line in shard.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [p["prompt"] for p in prompts]
    assert all(r["answer_ids"] for r in rows)


def test_answers_refuse_to_resume_on_another_prompt_list(tiny_target, tmp_path):
    """A prompt list built without a text source that was there when the answers were made differs from the
    answered prefix: resuming would append answers to the wrong prompts, so it stops with a clear message."""
    prompts = [{"prompt": f"Say {word}.", "source": "test"} for word in ("one", "two", "three")]
    answer_prompts(tiny_target, prompts[:2], tmp_path, batch_size=2, max_new_tokens=4)
    before = (tmp_path / "shard-0000.jsonl").read_text()
    with pytest.raises(ValueError, match="answer 1 was made for another prompt.*make train-setup"):
        answer_prompts(tiny_target, [prompts[0], prompts[2]], tmp_path, batch_size=2, max_new_tokens=4)
    with pytest.raises(ValueError, match="holds 2 answers but only 1 prompts"):
        answer_prompts(tiny_target, prompts[:1], tmp_path, batch_size=2, max_new_tokens=4)
    assert (tmp_path / "shard-0000.jsonl").read_text() == before


def test_sampled_answers_are_seeded_and_never_mix_with_greedy_ones(tiny_target, tmp_path):
    """Sampled answers: the same seed draws the same answers, they differ from the greedy ones, each line says
    its temperature, and a folder of one temperature refuses answers of another."""
    prompts = [{"prompt": f"Say {word}.", "source": "test"} for word in ("one", "two", "three", "four")]
    runs = {}
    for name, temperature in (("greedy", 0.0), ("a", 1.5), ("b", 1.5)):
        answer_prompts(tiny_target, prompts, tmp_path / name, batch_size=2, max_new_tokens=12, temperature=temperature)
        runs[name] = [json.loads(line) for line in (tmp_path / name / "shard-0000.jsonl").open()]
    answers = {name: [r["answer_ids"] for r in rows] for name, rows in runs.items()}
    assert answers["a"] == answers["b"]
    assert answers["a"] != answers["greedy"]
    assert all(r["temperature"] == 1.5 for r in runs["a"]) and all("temperature" not in r for r in runs["greedy"])
    with pytest.raises(ValueError, match="made at temperature 1.5, not 0"):
        answer_prompts(tiny_target, prompts, tmp_path / "a", batch_size=2, max_new_tokens=12)
    with pytest.raises(ValueError, match="made at temperature 0, not 0.7"):
        answer_prompts(tiny_target, prompts, tmp_path / "greedy", batch_size=2, max_new_tokens=12, temperature=0.7)


def test_heldout_prompts_keep_the_training_indexing_after_more_answers(tmp_path):
    """Answers appended after the features were recorded must not shift which prompts count as held out."""
    from core.train.heldout import heldout_prompts

    dirs = _answer_folders(tmp_path, {"answers": 9, "answers-broad": 8})  # "answers" had 7 at recording time
    counts = {"answers": 7, "answers-broad": 8}
    assert [p.prompt for p in heldout_prompts(dirs, every=5, counts=counts, per_folder=False)] == [
        "answers 0", "answers 5", "answers-broad 3"]
    shifted = [p.prompt for p in heldout_prompts(dirs, every=5, per_folder=False)]  # the appended answers count
    assert shifted == ["answers 0", "answers 5", "answers-broad 1", "answers-broad 6"]


@pytest.mark.parametrize("text", ["answers", "answers=", "answers=12,broad=x", "=3", "answers=-1"])
def test_bad_counts_are_refused_clearly(text):
    from core.train.heldout import parse_counts

    with pytest.raises(ValueError, match="is not FOLDER=N"):
        parse_counts(text)


