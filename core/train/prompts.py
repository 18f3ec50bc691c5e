"""Training prompts built from real text that installs from the package registries.

Sources (each optional; missing ones are skipped with a note):
- chitchat-dataset (PyPI, MIT): turns of casual human conversations;
- Python 3.11 documentation (Debian python3.11-doc, PSF): FAQ questions, glossary terms and prose
  paragraphs, wrapped in explain / summarise / example instructions;
- fortunes (Debian): quotations, wrapped in interpret / write instructions;
- templated writing, role-play and arithmetic word problems with random fillers.
Spec-Bench (the benchmark) is never read here.
"""
from __future__ import annotations

import importlib.util
import json
import random
import re
from pathlib import Path

PY_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
FORTUNES = Path("/usr/share/games/fortunes")

_PARAGRAPH_TASKS = (
    "Explain this passage from the Python documentation in simple terms:\n\n{}",
    "Summarize the following text in a few sentences:\n\n{}",
    "Write a short Python example that illustrates this:\n\n{}",
    "Rewrite this paragraph so a beginner can understand it:\n\n{}",
    "List the key points of this text as bullet points:\n\n{}",
)
_QUOTE_TASKS = (
    "What does this saying mean?\n\n{}",
    "Write a short story inspired by this quote:\n\n{}",
    "Do you agree with this? Explain why or why not.\n\n{}",
    "Write a short poem based on this idea:\n\n{}",
)
_WRITING = (
    "Write a {form} about {topic}.",
    "Give me three tips about {topic}.",
    "Explain {topic} to a ten-year-old.",
    "What are the pros and cons of {topic}?",
    "Write a {form} that mentions {topic} and ends with a question.",
)
_FORMS = ("short poem", "blog post introduction", "product description", "short story", "persuasive paragraph",
          "formal email", "limerick", "travel diary entry", "speech opening", "haiku")
_TOPICS = ("learning a new language", "remote work", "electric cars", "gardening", "the ocean", "space travel",
           "healthy breakfast", "public libraries", "video games", "climate change", "recycling", "coffee",
           "mountain hiking", "online privacy", "ancient Rome", "jazz music", "volunteering", "time management",
           "solar energy", "friendship", "city parks", "artificial intelligence", "cooking pasta", "chess",
           "photography", "saving money", "sleep", "honey bees", "museums", "winter sports")
_ROLES = ("a pirate captain", "a museum guide", "a detective", "a personal trainer", "a medieval knight",
          "a travel agent", "a chef", "a science teacher", "a customer support agent", "a tour guide on Mars")
_ROLE_ASKS = ("Introduce yourself and describe your day.", "Give me advice about {topic}.",
              "Tell me about your biggest challenge.", "Convince me to try {topic}.")


def _chitchat(rng: random.Random, limit: int) -> list[dict]:
    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        return []
    data = json.loads((Path(list(spec.submodule_search_locations)[0]) / "dataset.json").read_text())
    turns = []
    for convo in data.values():
        for turn in convo["messages"]:
            text = " ".join(m["text"].strip() for m in turn).strip()
            if 25 <= len(text) <= 400:
                turns.append(text)
    rng.shuffle(turns)
    return [{"source": "chitchat", "prompt": t} for t in turns[:limit]]


def _rst_files() -> list[Path]:
    return sorted(PY_DOCS.rglob("*.txt")) if PY_DOCS.is_dir() else []


def _python_docs(rng: random.Random, limit: int) -> list[dict]:
    paragraphs, questions = [], []
    for path in _rst_files():
        text = path.read_text(errors="ignore")
        for block in re.split(r"\n\s*\n", text):
            lines = block.strip().splitlines()
            if not lines:
                continue
            first = lines[0].strip()
            if path.parent.name == "faq" and first.endswith("?") and len(lines) <= 2 and 15 < len(first) < 150:
                questions.append(first)
            elif (not block.startswith((" ", "\t", "..", ":")) and len(block) > 200 and len(block) < 900
                  and not re.search(r"^[=\-~*^]{3,}$", block, re.M)):
                paragraphs.append(" ".join(l.strip() for l in lines))
    rng.shuffle(paragraphs)
    out = [{"source": "pydocs-faq", "prompt": q} for q in questions]
    out += [{"source": "pydocs", "prompt": rng.choice(_PARAGRAPH_TASKS).format(p)} for p in paragraphs]
    return out[:limit]


def _fortunes(rng: random.Random, limit: int) -> list[dict]:
    quotes = []
    if FORTUNES.is_dir():
        for path in sorted(FORTUNES.iterdir()):
            if path.suffix or not path.is_file():
                continue
            for quote in path.read_text(errors="ignore").split("\n%\n"):
                quote = quote.strip()
                if 40 <= len(quote) <= 400:
                    quotes.append(quote)
    rng.shuffle(quotes)
    return [{"source": "fortunes", "prompt": rng.choice(_QUOTE_TASKS).format(q)} for q in quotes[:limit]]


def _templated(rng: random.Random, count: int) -> list[dict]:
    out = []
    for _ in range(count):
        kind = rng.random()
        topic = rng.choice(_TOPICS)
        if kind < 0.4:
            prompt = rng.choice(_WRITING).format(form=rng.choice(_FORMS), topic=topic)
            out.append({"source": "writing", "prompt": prompt})
        elif kind < 0.65:
            ask = rng.choice(_ROLE_ASKS).format(topic=topic)
            out.append({"source": "roleplay", "prompt": f"Pretend you are {rng.choice(_ROLES)}. {ask}"})
        else:
            out.append({"source": "math", "prompt": _word_problem(rng)})
    return out


def _word_problem(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 60), rng.randint(2, 30), rng.randint(2, 12)
    item = rng.choice(("apples", "books", "tickets", "marbles", "cookies", "pencils"))
    name = rng.choice(("Maya", "Tom", "Aisha", "Lucas", "Mei", "Omar"))
    forms = (
        f"{name} has {a} {item} and buys {b} more, then gives away {c}. How many {item} does {name} have now? Explain step by step.",
        f"A shop sells {item} for ${c} each. {name} buys {b} of them and pays with ${b * c + a}. How much change does {name} get?",
        f"What is {a} times {b}, minus {c}? Show your work.",
        f"A train travels at {a} km/h for {c} hours. How far does it go?",
        f"If {b} workers build a wall in {c} days, how long would {b * 2} workers take? Explain.",
        f"Solve for x: {c}x + {a} = {c * b + a}.",
    )
    return rng.choice(forms)


def build_prompts(total: int = 4000, seed: int = 0) -> list[dict]:
    """A shuffled, deterministic mix of prompts (any prefix is itself a balanced mix)."""
    rng = random.Random(seed)
    parts = [
        _chitchat(rng, int(total * 0.30)),
        _python_docs(rng, int(total * 0.25)),
        _fortunes(rng, int(total * 0.15)),
        _templated(rng, int(total * 0.30)),
    ]
    prompts = [p for part in parts for p in part]
    short = total - len(prompts)
    if short > 0:
        prompts += _templated(rng, short)
    rng.shuffle(prompts)
    return prompts[:total]
