"""A third prompt set: writing, role-play, advice and editing requests, the kind of open-ended asks the
first two sets hold least of (their writing and role-play templates fill only ~1,500 distinct prompts).

- writing: a form (email, review, speech, story, ...) about a subject, with a tone, audience or length, and
  pitches, reviews and announcements of made-up products;
- roleplay: a persona kept through a question or a situation;
- advice: plans, decisions and how-to questions;
- editing: rewrite, shorten, correct or expand a given text (fortunes quotes and chitchat turns).
Only hand-written lists and the fixed texts of two packages (fortunes, chitchat-dataset) are used, not the
machine's ``apt-cache`` listing (which changes with the package mirror), so the list, and resuming it, is the
same on every machine. Spec-Bench (the benchmark) is never read here.
"""
from __future__ import annotations

import random

from core.train.prompts import _chitchat, _fortunes

_FORMS = (
    "blog post", "short story", "poem", "formal email", "cover letter", "product description", "restaurant review",
    "movie review", "speech", "newsletter", "social media post", "advertisement", "letter to a friend",
    "news article", "diary entry", "thank-you note", "complaint letter", "FAQ section", "press release",
    "slogan with a short explanation", "song chorus", "motivational message", "podcast introduction",
    "job posting", "event invitation",
)
_SUBJECTS = (
    "a new neighborhood bakery", "a rainy afternoon", "a lost cat that found its way home", "a school science fair",
    "a community garden", "the first day at a new job", "a solar-powered bicycle", "a weekend in the mountains",
    "a local library's reading club", "an old lighthouse", "a robot that learns to paint", "a city marathon",
    "a family recipe", "a smartphone app for language learning", "a charity bake sale", "a trip to Japan",
    "a forgotten attic", "a small bookshop", "a tech conference", "a winter festival", "a hiking accident",
    "a vintage car show", "a music teacher's retirement", "a noisy upstairs neighbor", "a late train",
    "a wildlife documentary", "a startup's first product", "a minimalist lifestyle", "a birthday surprise",
    "a coffee machine that broke", "a museum of everyday objects", "an unexpected friendship", "the last day of summer",
    "a volunteer firefighter", "a chess tournament", "a delayed package", "a new public swimming pool",
    "a time capsule", "a video game release", "an online cooking class", "a fishing village", "a desert road trip",
    "a power outage", "a childhood treehouse", "a dog training course", "a recycling campaign", "a farmers market",
    "a space station", "a wedding toast", "a theater premiere", "a sustainable clothing brand", "a snow day",
    "a high school reunion", "a haunted house", "a new electric bus line", "a handmade guitar",
    "a mentor's advice", "a kite festival", "a home office setup", "a hot air balloon ride", "a street musician",
)
_STYLES = (
    "", "", "", " Keep it under 150 words.", " Use a humorous tone.", " Write it for teenagers.",
    " Use vivid, sensory details.", " Use three short paragraphs.", " Make it sound professional.",
    " Give it a catchy title.", " End with a call to action.", " Write it in the second person.",
    " Keep the language simple.", " Include a surprising twist.",
)
_WRITING_TASKS = (
    "Write a {form} about {subject}.{style}",
    "Draft a {form} about {subject}.{style}",
    "Compose a {form} inspired by {subject}.{style}",
    "Can you write me a {form} about {subject}?{style}",
)
_PRODUCTS = (
    "a water bottle that reminds you to drink", "a note-taking app for students", "noise-cancelling headphones",
    "a folding electric scooter", "a plant-watering sensor", "a budgeting spreadsheet template", "a smart doorbell",
    "a language-exchange website", "a reusable shopping bag", "a standing desk", "a recipe-planning app",
    "a children's coding kit", "a solar phone charger", "an online yoga course", "a password manager",
    "a board game about trains", "a travel pillow", "a photo-editing app", "a compost bin for apartments",
    "a weather station for gardeners",
)
_PRODUCT_TASKS = (
    "Write a product description of {item} for a non-technical reader.",
    "Write a short, enthusiastic review of {item}.",
    "Write a tweet announcing {item}.",
    "Write a one-paragraph pitch of {item} to a busy manager.",
)
_PERSONAS = (
    "a 19th-century sea captain", "a grumpy wizard", "the AI computer of a spaceship", "a sports commentator",
    "a Shakespearean actor", "a noir detective", "a kindergarten teacher", "a startup founder pitching investors",
    "a park ranger", "a food critic", "a medieval blacksmith", "a time traveler from the year 3000",
    "a nervous job applicant", "a cheerful barista", "a retired astronaut", "a fitness coach", "a librarian",
    "a mountain guide", "a fashion designer", "a cat who can talk", "a tour guide in ancient Egypt",
    "a radio DJ", "a scientist who just made a discovery", "a village elder", "a superhero on vacation",
    "a customer service robot", "a travel vlogger", "a famous chef", "a ship's cook", "a dragon guarding a library",
)
_PERSONA_ASKS = (
    "Introduce yourself to a new visitor.", "What is the best advice you ever received?",
    "Describe the most exciting day of your life.", "How do you deal with a difficult customer?",
    "What would you change about the modern world?", "Tell me about your favorite place.",
    "Explain your job to a child.", "What do you do on a day off?", "Give a short toast at a friend's party.",
    "Describe what you see from your window right now.", "What are you most afraid of, and why?",
    "Convince me to join your next adventure.",
)
_ROLE_FRAMES = (
    "Pretend you are {persona}. {ask}",
    "You are {persona}. Stay in character. {ask}",
    "Act as {persona} and answer: {ask}",
    "Imagine you are {persona}. {ask} Answer in the first person.",
)
_GOALS = (
    "learn to play the guitar", "get better sleep", "save money for a trip", "start running", "learn to cook",
    "prepare for a job interview", "speak in public with confidence", "read more books", "organize my home",
    "learn a new language", "start a small online shop", "make new friends in a new city", "reduce my screen time",
    "write a novel", "grow vegetables on a balcony", "improve my handwriting", "study for an exam",
    "train for a 10 km race", "become more productive at work", "learn to draw", "plan a wedding on a budget",
    "adopt a dog", "move to another country", "switch careers into programming", "eat more healthily",
)
_ADVICE_TASKS = (
    "How can I {goal}? Give practical steps.",
    "Make me a plan to {goal} in {n} weeks.",
    "What mistakes do beginners make when they try to {goal}?",
    "I want to {goal}, but I have little time. What do you suggest?",
    "What should I consider before I decide to {goal}?",
)
_EDIT_TASKS = (
    "Rewrite the following in a formal tone:\n\n{text}",
    "Make this text shorter and clearer:\n\n{text}",
    "Correct any grammar mistakes and improve the style:\n\n{text}",
    "Turn this into a friendly social media post:\n\n{text}",
    "Expand this into a full paragraph:\n\n{text}",
    "Rewrite this as if a pirate said it:\n\n{text}",
)


def _writing(rng: random.Random, count: int) -> list[dict]:
    out = []
    for _ in range(count):
        if rng.random() < 0.15:
            prompt = rng.choice(_PRODUCT_TASKS).format(item=rng.choice(_PRODUCTS))
        else:
            prompt = rng.choice(_WRITING_TASKS).format(form=rng.choice(_FORMS), subject=rng.choice(_SUBJECTS),
                                                      style=rng.choice(_STYLES))
        out.append({"source": "writing", "prompt": prompt})
    return out


def _roleplay(rng: random.Random, count: int) -> list[dict]:
    return [{"source": "roleplay", "prompt": rng.choice(_ROLE_FRAMES).format(persona=rng.choice(_PERSONAS),
                                                                             ask=rng.choice(_PERSONA_ASKS))}
            for _ in range(count)]


def _advice(rng: random.Random, count: int) -> list[dict]:
    return [{"source": "advice", "prompt": rng.choice(_ADVICE_TASKS).format(goal=rng.choice(_GOALS),
                                                                           n=rng.randint(2, 12))}
            for _ in range(count)]


def _editing(rng: random.Random, count: int) -> list[dict]:
    texts = [p["prompt"] for p in _chitchat(rng, count)]
    texts += [p["prompt"].split("\n\n", 1)[-1] for p in _fortunes(rng, count)]  # the quote, without its task
    rng.shuffle(texts)
    return [{"source": "editing", "prompt": rng.choice(_EDIT_TASKS).format(text=t)} for t in texts[:count]]


def build_creative_prompts(total: int = 6000, seed: int = 2) -> list[dict]:
    """A shuffled, deterministic mix (any prefix is itself a balanced mix) of the four families, no prompt twice."""
    rng = random.Random(seed)
    share = {"writing": 0.4, "roleplay": 0.25, "advice": 0.15, "editing": 0.2}
    prompts = (_writing(rng, int(total * share["writing"]))
               + _roleplay(rng, int(total * share["roleplay"])) + _advice(rng, int(total * share["advice"]))
               + _editing(rng, int(total * share["editing"])))
    rng.shuffle(prompts)
    unique = list({p["prompt"]: p for p in prompts}.values())  # the same prompt twice teaches nothing new
    return unique[:total]
