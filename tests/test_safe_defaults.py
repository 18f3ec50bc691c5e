"""Safe defaults: the app listens on localhost without a public link; model code from a checkpoint runs only when
asked for; pickled weights are never loaded; a session's exports and gradio's file cache are cleaned up."""
from __future__ import annotations

import inspect
import json
import pickle
import runpy
import shutil
from pathlib import Path

import gradio as gr
import pytest

from app.session import delete_session
from app.ui import build_demo
from core.cli import build_parser
from core.target import TargetLoadError, TargetModel

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")  # gradio's queue analytics


@pytest.fixture(scope="module")
def app_module() -> dict:
    """app.py's globals (the script cannot be imported as ``app``: that name is the package)."""
    return runpy.run_path(str(ROOT / "app.py"), run_name="app_script")


def test_the_app_serves_on_localhost_without_a_share_link_by_default(app_module, monkeypatch):
    """app.py's own start-up (viewer mode: no model), launched for real and stopped again."""
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    launch, served = gr.Blocks.launch, {}

    def launch_and_return(demo, **kwargs):
        served.update(kwargs, demo=demo)
        return launch(demo, **kwargs, prevent_thread_lock=True, quiet=True)

    monkeypatch.setattr(gr.Blocks, "launch", launch_and_return)
    app_module["main"](["--viewer"])
    demo = served["demo"]
    try:
        assert served["server_name"] is None and served["share"] is False  # None: gradio's default, localhost
        assert demo.local_url.startswith("http://127.0.0.1:")
        assert not demo.share and demo.share_url is None
    finally:
        demo.close()
    args = app_module["parse_args"]([])
    assert args.host is None and args.share is False and args.trust_remote_code is False


def test_trust_remote_code_is_off_unless_a_flag_asks(app_module, monkeypatch):
    assert inspect.signature(TargetModel.load).parameters["trust_remote_code"].default is False
    assert build_parser().parse_args(["generate", "--prompt", "hi"]).trust_remote_code is False
    import app.session

    seen: dict = {}
    real = inspect.signature(app.session.load_engines)

    def load_engines(*args, **kwargs):
        real.bind(*args, **kwargs)  # the real loader takes what app.py passes
        seen.update(kwargs)
        return "engines"

    monkeypatch.setattr(app.session, "load_engines", load_engines)
    app_module["load_models"](app_module["parse_args"](["--no-warm-up"]))
    assert seen.get("trust_remote_code", False) is False
    app_module["load_models"](app_module["parse_args"](["--no-warm-up", "--trust-remote-code"]))
    assert seen["trust_remote_code"] is True


def test_model_code_in_a_checkpoint_folder_never_runs_by_default(tiny_target, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_target.model.name_or_path, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="jakiro_remote", auto_map={"AutoConfig": "remote.RemoteConfig",
                                                        "AutoModelForCausalLM": "remote.RemoteModel"})
    (folder / "config.json").write_text(json.dumps(config))
    ran = tmp_path / "ran"
    (folder / "remote.py").write_text(
        f"open({str(ran)!r}, 'w').close()\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class RemoteConfig(LlamaConfig):\n    model_type = 'jakiro_remote'\n"
        "class RemoteModel(LlamaForCausalLM):\n    config_class = RemoteConfig\n"
    )
    with pytest.raises(TargetLoadError, match="--trust-remote-code only if you trust the code"):
        TargetModel.load(str(folder), device="cpu")
    assert not ran.exists()


class _Payload:
    """Unpickling this creates a file: what a hostile checkpoint could do instead."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickled_weights_are_never_loaded(tiny_target, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_target.model.name_or_path, folder)
    (folder / "model.safetensors").unlink()
    ran = tmp_path / "ran"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(ran)))
    with pytest.raises(TargetLoadError, match=r"only pickle weights \(pytorch_model.bin\).*safetensors"):
        TargetModel.load(str(folder), device="cpu")
    assert not ran.exists()


def test_exports_and_gradio_files_are_cleaned_up():
    """Exported files live in a per-session folder deleted with the session (tests/test_load.py checks the deletion
    on the launched app); gradio deletes its own copies of served files after an hour."""
    demo = build_demo(None)
    assert demo.delete_cache == (3600, 3600)
    state = next(block for block in demo.blocks.values() if isinstance(block, gr.State))
    assert state.delete_callback is delete_session and state.time_to_live > 0
