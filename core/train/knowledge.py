"""A fourth prompt set: knowledge questions, essays and worked math, across many subjects.

The other sets hold ~80 science and humanities concepts and simple arithmetic; chat users ask about far more
subjects, in more ways (explain, compare, argue, teach, plan a lesson), and ask for worked solutions to
algebra, geometry and probability problems. Families:
- explain: ~330 subjects in nine fields (physics, chemistry, biology, earth and space, mathematics, computing,
  history, society and economics, arts and ideas), each with many task phrasings;
- compare: two subjects of the same field;
- mechanism: how an everyday device or process works;
- debate: pros and cons, arguments for and against a policy or habit;
- math: worked problems with random numbers (equations, percentages, geometry, probability, rates,
  sequences, interest, units).
Only hand-written lists and a seeded random generator are used, so the list, and resuming it, is the same on
every machine. Spec-Bench (the benchmark) is never read here.
"""
from __future__ import annotations

import random

_FIELDS: dict[str, tuple[str, ...]] = {
    "physics": (
        "inertia", "friction", "momentum", "kinetic and potential energy", "the conservation of energy",
        "electric current", "Ohm's law", "electromagnetic induction", "the photoelectric effect", "refraction",
        "the wave-particle duality", "special relativity", "time dilation", "nuclear fusion", "radioactive decay",
        "half-life", "superconductivity", "thermal conduction", "pressure in fluids", "buoyancy",
        "Bernoulli's principle", "centripetal force", "orbital motion", "the Higgs boson", "lasers",
        "the uncertainty principle", "standing waves", "resonance", "heat engines", "absolute zero",
        "the second law of thermodynamics", "static electricity", "magnetic fields", "polarized light",
    ),
    "chemistry": (
        "acids and bases", "the pH scale", "oxidation and reduction", "catalysts", "chemical equilibrium",
        "isotopes", "covalent and ionic bonds", "polymers", "electrolysis", "combustion", "the mole",
        "reaction rates", "hydrogen bonds", "solubility", "crystals", "organic chemistry", "noble gases",
        "batteries", "the ozone layer", "rust", "fermentation", "alloys", "distillation", "enzymes as catalysts",
    ),
    "biology": (
        "cell division", "mitosis and meiosis", "evolution", "genes and chromosomes", "proteins", "the nervous system",
        "hormones", "the digestive system", "viruses", "bacteria", "ecosystems", "food chains", "biodiversity",
        "symbiosis", "CRISPR gene editing", "stem cells", "the circulatory system", "the lungs and breathing",
        "sleep and the brain", "memory", "muscles", "bones and the skeleton", "allergies", "blood types",
        "mutations", "pollination", "animal migration", "camouflage in animals", "coral reefs", "fungi",
        "the microbiome", "vaccination and herd immunity", "cancer", "aging",
    ),
    "earth and space": (
        "earthquakes", "hurricanes", "the seasons", "the phases of the moon", "solar eclipses", "the solar system",
        "exoplanets", "galaxies", "the life cycle of stars", "neutron stars", "comets and asteroids",
        "the atmosphere's layers", "weather fronts", "glaciers", "erosion", "the rock cycle", "ocean currents",
        "El Nino", "deserts", "rainforests", "the carbon cycle", "the northern lights", "tsunamis", "mars rovers",
        "the International Space Station", "dark matter", "the expansion of the universe", "sea level rise",
    ),
    "mathematics": (
        "fractions", "percentages", "negative numbers", "algebraic equations", "functions and graphs",
        "the quadratic formula", "logarithms", "trigonometry", "the area of a circle", "similar triangles",
        "the law of large numbers", "conditional probability", "Bayes' theorem", "standard deviation",
        "correlation and causation", "integrals", "limits", "infinite series", "complex numbers", "vectors",
        "set theory", "mathematical induction", "graph theory", "binary numbers", "modular arithmetic",
        "the golden ratio", "pi", "proofs by contradiction", "permutations and combinations", "geometric sequences",
    ),
    "computing": (
        "recursion", "hash tables", "sorting algorithms", "Big-O notation", "databases and SQL indexes",
        "operating systems", "compilers and interpreters", "memory management", "garbage collection",
        "object-oriented programming", "functional programming", "version control with git", "unit testing",
        "APIs", "REST and HTTP", "cloud computing", "containers", "public-key cryptography", "passwords and hashing",
        "computer viruses", "neural networks", "large language models", "computer vision", "search engines",
        "the domain name system", "Wi-Fi", "GPS", "blockchains", "open-source software", "parallel computing",
        "caching", "regular expressions", "data compression", "quantum computing",
    ),
    "history": (
        "the Roman Republic", "ancient Egypt's pyramids", "the Persian Empire", "the Han dynasty",
        "the Byzantine Empire", "the Vikings", "the Crusades", "the Black Death", "the Aztec Empire",
        "the Inca road system", "the age of exploration", "the Protestant Reformation", "the scientific revolution",
        "the American Revolution", "the abolition of slavery", "the unification of Germany", "World War I",
        "the Russian Revolution", "women's suffrage", "World War II", "the founding of the United Nations",
        "the independence of India", "the space race", "the fall of the Berlin Wall", "the end of apartheid",
        "the invention of the telephone", "the history of vaccines", "the history of the internet",
        "the transatlantic telegraph", "the Tang dynasty", "the Mali Empire", "the Edo period in Japan",
    ),
    "society and economics": (
        "inflation", "interest rates", "central banks", "taxes", "international trade", "unemployment",
        "the stock market", "cryptocurrency", "minimum wage", "universal basic income", "urbanization",
        "public transport", "immigration", "the welfare state", "labor unions", "monopolies", "opportunity cost",
        "compound interest", "budgeting", "entrepreneurship", "marketing", "supply chains", "the gig economy",
        "remote work", "social media's influence", "misinformation", "privacy laws", "voting systems",
        "the separation of powers", "local government", "public health campaigns", "sustainable cities",
        "renewable energy policy", "the aging population", "education systems", "the four-day work week",
    ),
    "arts and ideas": (
        "the Baroque period in music", "classical music", "the blues", "hip hop", "film noir", "the hero's journey",
        "Greek tragedy", "the sonnet", "magical realism", "science fiction literature", "modern art", "cubism",
        "photography as art", "architecture of Gothic cathedrals", "street art", "the novel", "opera",
        "ethics", "free will", "the trolley problem", "logic and fallacies", "Confucianism", "Buddhism",
        "the philosophy of Socrates", "Plato's cave", "Kant's categorical imperative", "nihilism",
        "the meaning of happiness", "critical thinking", "the scientific method", "the history of the alphabet",
        "how languages change", "translation", "storytelling in video games", "the role of art in society",
    ),
}

_EXPLAIN = (
    "Explain {c}.",
    "Explain {c} in simple terms.",
    "Explain {c} to a curious ten-year-old.",
    "Explain {c} to a university student, with the key details.",
    "What is {c}, and why is it important?",
    "Give a clear, short introduction to {c}.",
    "Write a short essay on {c}.",
    "Write a three-paragraph article about {c} for a general audience.",
    "Summarize what everyone should know about {c}.",
    "What are common misconceptions about {c}?",
    "Describe {c} and give two real-world examples.",
    "How would you teach {c} in a 30-minute lesson? Outline the plan.",
    "Write five quiz questions about {c}, with answers.",
    "What are the main open questions or debates about {c}?",
    "Give me an analogy that makes {c} easy to understand.",
    "I have an exam tomorrow on {c}. What are the key points?",
    "How has our understanding of {c} changed over time?",
    "Write a short dialogue between a teacher and a student about {c}.",
)
_COMPARE = (
    "Compare {c} and {d}.",
    "What is the difference between {c} and {d}?",
    "Explain how {c} relates to {d}.",
    "Write a short essay comparing {c} with {d}.",
)
_DEVICES = (
    "a refrigerator", "a microwave oven", "a touchscreen", "a jet engine", "a heat pump", "a solar panel",
    "a wind turbine", "an electric motor", "a nuclear power plant", "a vaccine", "a credit card payment",
    "a 3D printer", "noise-cancelling headphones", "a smoke detector", "an elevator", "a bicycle gear system",
    "a camera lens", "an MRI scanner", "a hydroelectric dam", "a thermostat", "a search engine ranking",
    "a recommendation system", "a hybrid car", "a water treatment plant", "an airplane wing", "a compass",
    "a barcode scanner", "a lithium-ion battery", "a fiber-optic cable", "a pacemaker", "a submarine",
    "a mobile phone network", "a spam filter", "an induction cooktop", "a suspension bridge", "a parachute",
)
_MECHANISM = (
    "How does {x} work?",
    "Explain step by step how {x} works.",
    "How does {x} work? Keep it simple and use an everyday comparison.",
    "What are the main parts of {x}, and what does each do?",
)
_ISSUES = (
    "banning single-use plastics", "making public transport free", "a four-day work week", "homework for young "
    "children", "self-driving cars", "nuclear power", "raising the minimum wage", "school uniforms",
    "social media age limits", "working from home", "a tax on sugary drinks", "space exploration funding",
    "online learning", "standardized tests", "universal basic income", "electric scooters in cities",
    "genetically modified crops", "a meat-free diet", "facial recognition in public places", "daylight saving time",
    "year-round schooling", "video games in education", "cash-free payments", "artificial intelligence in medicine",
    "city car bans", "tourism in fragile places", "learning Latin at school", "open-plan offices",
)
_DEBATE = (
    "What are the pros and cons of {i}?",
    "Give the strongest arguments for and against {i}.",
    "Write a persuasive paragraph in favor of {i}.",
    "Write a persuasive paragraph against {i}.",
    "Is {i} a good idea? Give a balanced answer.",
    "Write a short debate speech about {i}.",
)


def all_subjects() -> list[str]:
    """Every subject of the explain family, field by field (the requests set teaches them too)."""
    return [c for topics in _FIELDS.values() for c in topics]


def _one_slot(rng: random.Random, count: int, source: str, templates: tuple[str, ...], slot: str,
              values: list[str] | tuple[str, ...]) -> list[dict]:
    """``count`` prompts: a random template with its one ``{slot}`` filled by a random value."""
    return [{"source": source, "prompt": rng.choice(templates).format(**{slot: rng.choice(values)})}
            for _ in range(count)]


def _compare(rng: random.Random, count: int) -> list[dict]:
    fields = list(_FIELDS.values())
    out = []
    for _ in range(count):
        c, d = rng.sample(rng.choice(fields), 2)
        out.append({"source": "compare", "prompt": rng.choice(_COMPARE).format(c=c, d=d)})
    return out


def _signed(n: int) -> str:
    return f"- {-n}" if n < 0 else f"+ {n}"


def _math_problem(rng: random.Random) -> str:
    """One worked-solution request with random numbers, from one of twelve kinds of problem."""
    r = rng.randint
    kind = r(0, 11)
    if kind == 0:
        a, x, b = r(2, 12), r(-9, 15), r(-30, 30)
        return f"Solve for x: {a}x {_signed(b)} = {a * x + b}. Show each step."
    if kind == 1:
        x, y = r(-6, 9), r(-6, 9)
        a, b, c, d = r(2, 6), r(1, 6), r(2, 6), r(-6, -1)
        return (f"Solve the system of equations: {a}x + {b}y = {a * x + b * y} and "
                f"{c}x {_signed(d)}y = {c * x + d * y}. Explain your method.")
    if kind == 2:
        p, q = r(-8, 8), r(-8, 8)
        return f"Find the roots of x^2 {_signed(-(p + q))}x {_signed(p * q)} = 0 and check them."
    if kind == 3:
        price, pct = r(20, 400), rng.choice((5, 10, 15, 20, 25, 30, 40))
        return (f"A jacket costs ${price}. It is discounted by {pct}% and then a {r(5, 10)}% sales tax is added. "
                "What is the final price?")
    if kind == 4:
        a, b = r(3, 20), r(3, 20)
        return f"A right triangle has legs of {a} cm and {b} cm. Find its hypotenuse, area and perimeter."
    if kind == 5:
        rad = r(2, 15)
        return (f"A circle has a radius of {rad} m. What are its area and circumference? Then find the area of a "
                "square with the same perimeter.")
    if kind == 6:
        n = r(2, 3)
        return (f"If you roll {n} fair six-sided dice, what is the probability that the sum is {r(n + 2, 6 * n - 2)}? "
                "Explain how you count the outcomes.")
    if kind == 7:
        red, blue = r(2, 9), r(2, 9)
        return (f"A bag holds {red} red and {blue} blue marbles. Two are drawn without replacement. What is the "
                "probability that both are the same color?")
    if kind == 8:
        v1, v2, d = r(40, 90), r(40, 90), r(100, 600)
        return (f"Two trains start {d} km apart and travel toward each other at {v1} km/h and {v2} km/h. "
                "When and where do they meet?")
    if kind == 9:
        a, step, n = r(1, 20), r(2, 9), r(10, 40)
        return (f"What is the sum of the first {n} terms of the arithmetic sequence {a}, {a + step}, "
                f"{a + 2 * step}, ...? Derive the formula you use.")
    if kind == 10:
        money, rate, years = r(5, 50) * 100, rng.choice((2, 3, 4, 5, 6, 8)), r(2, 15)
        return (f"${money} is invested at {rate}% interest compounded yearly. How much is it worth after {years} "
                "years, and how much of that is interest?")
    workers, days = r(2, 9), r(3, 20)
    return (f"{workers} workers build a wall in {days} days. How long would {workers + r(1, 6)} workers take, "
            "working at the same rate? Explain the reasoning.")


def build_knowledge_prompts(total: int = 6000, seed: int = 3) -> list[dict]:
    """A shuffled, deterministic mix (any prefix is itself a balanced mix) of the five families, no prompt twice."""
    rng = random.Random(seed)
    share = {"explain": 0.45, "compare": 0.1, "mechanism": 0.1, "debate": 0.1, "math": 0.25}
    subjects = all_subjects()
    prompts = (_one_slot(rng, int(total * share["explain"]), "explain", _EXPLAIN, "c", subjects)
               + _compare(rng, int(total * share["compare"]))
               + _one_slot(rng, int(total * share["mechanism"]), "mechanism", _MECHANISM, "x", _DEVICES)
               + _one_slot(rng, int(total * share["debate"]), "debate", _DEBATE, "i", _ISSUES)
               + [{"source": "math", "prompt": _math_problem(rng)} for _ in range(int(total * share["math"]))])
    rng.shuffle(prompts)
    unique = list({p["prompt"]: p for p in prompts}.values())  # the same prompt twice teaches nothing new
    return unique[:total]
