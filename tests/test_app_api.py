"""The /generate endpoint through gradio_client, against the app launched on a tiny random target."""
from __future__ import annotations

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.helpers import tiny_app

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")  # gradio's queue analytics


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with tiny_app(tmp_path_factory.mktemp("tiny") / "model") as url:
        yield Client(url, verbose=False)


def test_only_generate_is_public_with_keyword_parameters(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/generate"]
    params = {p["parameter_name"]: p for p in api["named_endpoints"]["/generate"]["parameters"]}
    assert {"prompt", "max_new_tokens", "temperature", "top_p", "tree_top_k", "depth", "total_tokens"} <= set(params)
    assert all(p["parameter_has_default"] for name, p in params.items() if name != "prompt")


def test_generate_returns_the_json_summary(client):
    outputs = client.predict(prompt="Hello there", max_new_tokens=6, temperature=0, api_name="/generate")
    summary = outputs[4]
    assert set(summary) == {"jakiro", "eagle", "none"}
    for entry in summary.values():
        assert {"text", "tau", "tokens_per_s", "speedup"} <= set(entry)
        assert entry["new_tokens"] == 6 and entry["tokens_per_s"] > 0 and entry["speedup"] > 0
    assert summary["none"]["tau"] == 1.0 and summary["none"]["speedup"] == 1.0
    assert summary["jakiro"]["text"] == summary["none"]["text"]  # greedy speculative decoding is lossless
    assert "plain decoding" in outputs[3]  # the counters table
    tokens = outputs[0]["value"]
    assert len(tokens) == 6 and tokens[0]["class_or_confidence"] == "target"


def test_generate_streams_and_ends_with_the_complete_summary(client):
    job = client.submit(prompt="Hi", max_new_tokens=8, temperature=0.7, top_p=0.9, api_name="/generate")
    updates = list(job)
    assert len(updates) >= 3  # at least one refresh per method
    assert set(updates[-1][4]) == {"jakiro", "eagle", "none"}
    assert updates[-1][4] == job.outputs()[-1][4]


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 1}, "depth >= 2"),
    ({"max_new_tokens": 2.5}, "whole number"),
    ({"tree_top_k": 6, "depth": 4, "total_tokens": 600}, "greater than maximum"),
    ({"prompt": "   "}, "prompt is empty"),
    ({"lookup": 2.5}, "whole number"),
    ({"lookup": 99}, "greater than maximum"),
    ({"lookup_runs": 0}, "less than minimum"),
])
def test_invalid_settings_are_explained_not_crashed(client, kwargs, message):
    args = {"prompt": "Hi", "max_new_tokens": 4, "temperature": 0, **kwargs}
    try:
        outputs = client.predict(**args, api_name="/generate")
    except AppError as err:  # out of a slider's range: gradio refuses the input with a message
        assert message in str(err)
        return
    assert message in outputs[4]["error"]
    assert message in outputs[5]
