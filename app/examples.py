"""The app's example prompts, read from ``assets/examples.json`` (data, not code) and checked once at start-up."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

EXAMPLES_FILE = Path(__file__).resolve().parent.parent / "assets" / "examples.json"
MAX_LABEL_CHARS = 40


@dataclass(frozen=True)
class Example:
    label: str  # what kind of answer the prompt asks for, shown on its button
    prompt: str


def load_examples(path: Path = EXAMPLES_FILE) -> list[Example]:
    """The examples in file order; ``ValueError`` naming the entry when one is not a short label and a prompt."""
    data = json.loads(path.read_text(encoding="utf-8"))
    items = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: 'examples' must be a non-empty list")
    examples = []
    for number, item in enumerate(items):
        label, prompt = (item.get("label"), item.get("prompt")) if isinstance(item, dict) else (None, None)
        if not isinstance(label, str) or not 0 < len(label) <= MAX_LABEL_CHARS:
            raise ValueError(f"{path}: example {number} needs a 'label' of 1..{MAX_LABEL_CHARS} characters")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{path}: example {number} needs a non-blank 'prompt'")
        examples.append(Example(label=label, prompt=prompt))
    return examples
