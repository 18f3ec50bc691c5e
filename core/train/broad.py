"""A second, broader prompt set: coding, extraction, science, humanities and reasoning tasks.

The first set (``prompts.py``) is casual chat, documentation paraphrase, quotes and simple templates.
Chat users also ask for code, for facts pulled out of a text, for explanations of science and history,
and for small reasoning problems; these families cover them from local, installable text:
- coding: the function signatures and descriptions of the Python 3.11 library reference (Debian
  python3.11-doc), and algorithmic tasks in several languages;
- extraction: one-line descriptions of Debian packages (``apt-cache dumpavail``), as lists to filter,
  classify or turn into JSON/tables;
- stem / humanities: a hand-written list of concepts with explanation, comparison and essay tasks;
- reasoning: generated ordering, scheduling, counting and logic puzzles.
Spec-Bench (the benchmark) is never read here.
"""
from __future__ import annotations

import random
import re
import subprocess

from core.train.prompts import _rst_files

_CODE_DOC_TASKS = (
    "Show how to use `{sig}` from the Python `{module}` module with a short, complete example.\n\n"
    "Documentation: {desc}",
    "Write a Python function that uses `{module}.{name}` to solve a small practical problem. Explain each step.",
    "What does `{module}.{name}` do? Explain its parameters and give an example.\n\nDocumentation: {desc}",
    "I get unexpected results with `{module}.{name}`. What are common mistakes when using it?",
)
_ALGORITHMS = (
    "reverse a linked list", "check whether a string is a palindrome", "find the longest common prefix of a list of "
    "strings", "merge two sorted lists", "count word frequencies in a text", "implement binary search",
    "remove duplicates from a list while keeping the order", "compute the n-th Fibonacci number efficiently",
    "check whether parentheses in a string are balanced", "find the two numbers in a list that add up to a target",
    "rotate a matrix by 90 degrees", "flatten a nested list", "validate an email address", "implement a stack with "
    "a max() operation", "find the median of two sorted arrays", "convert a Roman numeral to an integer",
    "group anagrams together", "compute the edit distance between two strings", "implement an LRU cache",
    "parse a CSV line with quoted fields", "find all primes below n", "serialize a binary tree to a string",
    "detect a cycle in a directed graph", "find the k largest elements of a list", "implement quicksort",
    "compute the greatest common divisor of two numbers", "transpose a CSV file", "read a JSON file and print "
    "the keys", "find the first non-repeating character in a string", "compute a running average of a stream",
)
_LANGUAGES = ("Python", "Python", "Python", "JavaScript", "C", "C++", "Java", "Go", "Rust", "SQL")
_CODE_TASKS = (
    "Write a {lang} function to {task}.",
    "Write a {lang} function to {task}, and explain its time complexity.",
    "Here is my plan: {task} in {lang}. Write the code with comments and a small test.",
    "How would you {task}? Give an answer in {lang} and explain the idea first.",
)
_EXTRACTION_TASKS = (
    "Here are some software packages with their descriptions:\n{items}\n\nReturn a JSON list of objects with "
    "the fields \"name\" and \"category\".",
    "From the list below, extract the names of the packages that are libraries, and say why.\n{items}",
    "Turn the following list into a markdown table with the columns Name and Purpose:\n{items}",
    "Read the package descriptions below and group them by topic. Use one heading per topic.\n{items}",
    "Which of these packages would a web developer need? Answer with the names only, then one sentence "
    "each.\n{items}",
)
_STEM = (
    "photosynthesis", "the Pythagorean theorem", "Newton's second law", "entropy", "the water cycle", "DNA "
    "replication", "plate tectonics", "black holes", "the speed of light", "prime numbers", "derivatives in "
    "calculus", "vaccines", "the greenhouse effect", "electric circuits", "chemical bonds", "natural selection",
    "the periodic table", "probability", "the immune system", "quantum entanglement", "the Doppler effect",
    "supply and demand", "machine learning", "nuclear fission", "the human heart", "antibiotic resistance",
    "ocean tides", "magnetism", "the big bang", "vectors", "exponential growth", "climate models", "the brain's "
    "neurons", "semiconductors", "the Krebs cycle", "sound waves", "gravity", "matrices", "statistics and the "
    "mean", "renewable energy", "the cell membrane", "volcanoes", "encryption", "the internet's TCP/IP",
)
_HUMANITIES = (
    "the French Revolution", "the Renaissance", "the Industrial Revolution", "democracy in ancient Athens",
    "the Silk Road", "Shakespeare's Hamlet", "impressionist painting", "the Cold War", "utilitarianism", "Stoic "
    "philosophy", "the printing press", "the fall of the Roman Empire", "the civil rights movement", "the "
    "Enlightenment", "existentialism", "the Magna Carta", "Greek mythology", "the Ottoman Empire", "colonialism",
    "the Mongol Empire", "Romantic poetry", "the Meiji Restoration", "human rights", "social contract theory",
    "the history of jazz", "the Great Depression", "the invention of writing", "world religions", "globalization",
    "the Harlem Renaissance", "modern architecture", "the role of museums", "free speech", "the history of maps",
)
_CONCEPT_TASKS = (
    "Explain {c} in simple terms.",
    "Explain {c} to a high school student, with an example.",
    "What are the most common misconceptions about {c}?",
    "Write a short essay about {c}.",
    "Compare {c} and {d}. What do they have in common?",
    "Give me five questions, with answers, to test my understanding of {c}.",
    "Why does {c} matter today?",
)
_NAMES = ("Alice", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Leo")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _library_functions() -> list[tuple[str, str, str, str]]:
    """(module, name, signature, first description sentence) for the documented library functions."""
    out = []
    for path in _rst_files():
        if path.parent.name != "library":
            continue
        text = path.read_text(errors="ignore")
        module = re.search(r"^\.\. module:: ([\w.]+)", text, re.M)
        if module is None:
            continue
        for m in re.finditer(r"^\.\. function:: ((\w+)\(.*?\))\n\n((?:   .*\n)+)", text, re.M):
            desc = " ".join(line.strip() for line in m.group(3).splitlines())
            desc = re.sub(r":\w+:`~?([^`]+)`", r"\1", desc).split(". ")[0].strip()
            if 20 < len(desc) < 300:
                out.append((module.group(1), m.group(2), m.group(1), desc))
    return out


def _coding(rng: random.Random, count: int) -> list[dict]:
    functions = _library_functions()
    out = []
    for _ in range(count):
        if functions and rng.random() < 0.5:
            module, name, sig, desc = rng.choice(functions)
            prompt = rng.choice(_CODE_DOC_TASKS).format(module=module, name=name, sig=sig, desc=desc)
        else:
            prompt = rng.choice(_CODE_TASKS).format(lang=rng.choice(_LANGUAGES), task=rng.choice(_ALGORITHMS))
        out.append({"source": "coding", "prompt": prompt})
    return out


def _package_lines() -> list[str]:
    """``name: one-line description`` of the Debian packages apt knows (empty without apt)."""
    try:
        dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    lines, name = [], None
    for line in dump.splitlines():
        if line.startswith("Package: "):
            name = line[9:].strip()
        elif line.startswith("Description: ") and name:
            lines.append(f"{name}: {line[13:].strip()}")
            name = None
    return sorted(set(lines))


def _extraction(rng: random.Random, count: int) -> list[dict]:
    packages = _package_lines()
    if not packages:
        return []
    out = []
    for _ in range(count):
        items = "\n".join(f"- {p}" for p in rng.sample(packages, rng.randint(4, 9)))
        out.append({"source": "extraction", "prompt": rng.choice(_EXTRACTION_TASKS).format(items=items)})
    return out


def _concepts(rng: random.Random, count: int, concepts: tuple[str, ...], source: str) -> list[dict]:
    out = []
    for _ in range(count):
        c, d = rng.sample(concepts, 2)
        out.append({"source": source, "prompt": rng.choice(_CONCEPT_TASKS).format(c=c, d=d)})
    return out


def _puzzle(rng: random.Random) -> str:
    a, b, c, d = rng.sample(_NAMES, 4)
    n, k = rng.randint(3, 40), rng.randint(2, 9)
    day = rng.randrange(7)
    forms = (
        f"{a} is taller than {b}. {c} is shorter than {b} but taller than {d}. Who is the shortest? Explain.",
        f"Today is {_DAYS[day]}. What day of the week will it be in {n} days? Show your reasoning.",
        f"{a} finishes a race before {b} but after {c}. {d} finishes last. In what order did they finish?",
        "If all bloops are razzies and some razzies are lazzies, must some bloops be lazzies? Explain carefully.",
        f"A box has {n} red and {k} blue balls. You take two without looking. What is the probability both are "
        f"blue? Explain step by step.",
        f"{a} has twice as many coins as {b}, and together they have {3 * n} coins. How many does each have?",
        f"In a room of {n} people everyone shakes hands with everyone else once. How many handshakes are there?",
        f"{a} says: '{b} is lying.' {b} says: '{c} is lying.' {c} says: 'Both {a} and {b} are lying.' "
        f"Who is telling the truth?",
        f"A clock shows {k}:{rng.choice(('15', '30', '45', '20'))}. What is the angle between the hands?",
        f"I have {n} apples. I eat {k}, then buy twice as many as I have left. How many apples do I have?",
    )
    return rng.choice(forms)


def build_broad_prompts(total: int = 4000, seed: int = 1) -> list[dict]:
    """A shuffled, deterministic mix (any prefix is itself a balanced mix) of the five families."""
    rng = random.Random(seed)
    share = {"coding": 0.3, "extraction": 0.15, "stem": 0.2, "humanities": 0.15, "reasoning": 0.2}
    prompts = (_coding(rng, int(total * share["coding"])) + _extraction(rng, int(total * share["extraction"]))
               + _concepts(rng, int(total * share["stem"]), _STEM, "stem")
               + _concepts(rng, int(total * share["humanities"]), _HUMANITIES, "humanities")
               + [{"source": "reasoning", "prompt": _puzzle(rng)} for _ in range(int(total * share["reasoning"]))])
    rng.shuffle(prompts)
    unique = list({p["prompt"]: p for p in prompts}.values())  # the same prompt twice teaches nothing new
    return unique[:total]
