"""A fifth prompt set: longer, multi-part requests, the way people write to a chat assistant.

The other four sets ask one short question each ("Explain X in simple terms."). People mostly write more: who
they are or what they need it for, the task, and a constraint or two on length, format, tone or audience, and
often paste a text to work on. The target answers such requests differently (headings, lists, greetings,
copied names and numbers), and the drafter has seen little of it. Families:
- letters: emails and letters with concrete people, dates and amounts;
- posts: blog posts, speeches, newsletters, product pages, social posts for a stated audience;
- plans: trips, study plans, meal plans, workouts, events, budgets with stated numbers;
- roleplay: act as a character in a situation and answer a question in character;
- extract: a generated note, listing or report, and a request to pull out its facts as JSON, a table or a list
  (the answer copies names and numbers from the prompt);
- analyze: a generated product review or flawed claim, and a request to judge, rate or answer it;
- teach: a subject from the knowledge set explained for a stated reader and purpose.
Every prompt adds one or two constraints. Only hand-written lists and a seeded random generator are used, so the
list, and resuming it, is the same on every machine. Spec-Bench (the benchmark) is never read here.
"""
from __future__ import annotations

import random

from core.train.knowledge import all_subjects

_CONSTRAINTS = (
    "Use bullet points.", "Keep it under 150 words.", "Use exactly three paragraphs.", "Give it a title.",
    "End with a question for the reader.", "Write in a friendly, casual tone.", "Use a formal tone.",
    "Add a one-sentence summary at the end.", "Use simple words a ten-year-old would understand.",
    "Include one concrete example.", "Format it as a numbered list.", "Use a heading for each section.",
    "Avoid technical jargon.", "Make it persuasive.", "Add a touch of humor.", "Keep it short and to the point.",
    "Start with a catchy first sentence.", "Write it in the second person.", "Include a short table.",
    "Do not use more than five sentences.", "Finish with three practical tips.", "Mention one common mistake.",
)
_NAMES = ("Maria", "James", "Aisha", "Chen", "Olga", "Tom", "Priya", "Lucas", "Fatima", "Noah", "Elena", "Kenji",
          "Sofia", "Daniel", "Amara", "Pedro", "Hannah", "Omar", "Julia", "Ravi")
_SURNAMES = ("Smith", "Garcia", "Kim", "Novak", "Okafor", "Rossi", "Tanaka", "Müller")
_COMPANIES = ("Brightwave", "Northfield Foods", "Luma Labs", "Greenline Transit", "Atlas Books", "Harbor Health")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")

_RECIPIENTS = ("my landlord", "my manager", "a customer", "my child's teacher", "my team", "a hotel",
               "a supplier", "my new neighbor", "a job applicant", "a conference organizer", "my professor",
               "the city council", "a client", "our volunteers", "a former colleague", "the HR department")
_PURPOSES = (
    "asking to move our meeting from {day} to the following week",
    "requesting a refund of ${amount} for a cancelled order",
    "politely declining an invitation to speak on {month} {date}",
    "thanking them for their help with the {project} project",
    "announcing that the office will be closed on {month} {date}",
    "complaining that the heating has not worked for {n} days",
    "following up on a proposal I sent {n} weeks ago",
    "asking for a {n}-day extension on the {project} report",
    "introducing myself as the new coordinator of the {project} program",
    "explaining why the {project} launch is delayed by {n} weeks",
    "inviting them to a workshop on {month} {date} at {hour} pm",
    "asking for feedback on a draft of the {project} plan",
    "apologizing for missing the deadline of {month} {date}",
    "confirming a booking for {n} people on {month} {date}",
    "asking for a raise after {n} years in my role",
    "reminding them that the invoice of ${amount} is overdue",
)
_PROJECTS = ("community garden", "website redesign", "science fair", "fundraising", "recycling", "mentoring",
             "customer survey", "library renovation", "summer camp", "mobile app", "annual report", "charity run")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")

_FORMS = ("blog post", "short speech", "newsletter article", "product description", "social media post",
          "opening paragraph for an essay", "press release", "short magazine article", "podcast introduction",
          "welcome message", "motivational talk", "letter to the editor")
_AUDIENCES = ("high-school students", "new employees", "busy parents", "retirees", "first-time home buyers",
              "small business owners", "university freshmen", "people who have never cooked", "dog owners",
              "amateur runners", "nurses", "software developers", "tourists", "volunteers", "young readers")
_TOPICS = ("saving money on groceries", "starting a vegetable garden", "the benefits of walking every day",
           "learning a second language", "staying focused while working from home", "reducing plastic waste",
           "getting better sleep", "preparing for a job interview", "a new public library opening",
           "the history of our town", "a reusable water bottle", "a local food festival", "online safety",
           "why reading matters", "making friends in a new city", "the importance of breakfast",
           "planning a budget", "volunteering", "a new bike-sharing service", "a handmade ceramic mug",
           "noise-cancelling headphones", "a smart thermostat", "time management", "public speaking",
           "a weekend coding workshop", "caring for houseplants", "our company's tenth anniversary")

_PLANS = (
    "Plan a {n}-day trip to {place} for {who} with a budget of ${amount}.",
    "Make a {n}-week study plan for someone preparing for {exam}.",
    "Create a {n}-day meal plan for {who} who want to eat more vegetables.",
    "Design a {n}-week workout routine for {who} with no gym equipment.",
    "Plan a birthday party for {n} children aged {age} with a budget of ${amount}.",
    "Suggest a monthly budget for {who} with an income of ${income} a month.",
    "Plan a one-day team-building event for {n} colleagues.",
    "Write a daily schedule for {who} who need to study, work and exercise.",
    "Plan a {n}-day cleaning and decluttering schedule for a small apartment.",
    "Create a reading plan to finish {n} books in {months} months.",
    "Plan a weekend camping trip for {who}.",
    "Make a {n}-step plan to start a small online business selling {goods}.",
)
_PLACES = ("Rome", "Tokyo", "Lisbon", "the Scottish Highlands", "New York City", "Mexico City", "Cape Town",
           "Vienna", "Bangkok", "Vancouver", "Istanbul", "Marrakech", "Sydney", "Prague", "Peru")
_WHO = ("a family of four", "two students", "a retired couple", "a busy professional", "a group of friends",
        "a single parent", "beginners", "a couple on a tight budget")
_EXAMS = ("a high-school chemistry exam", "a driving theory test", "a job interview in finance",
          "an English language exam", "a calculus final", "a history exam", "a coding interview")
_GOODS = ("handmade candles", "vintage clothes", "digital art prints", "homemade jam", "phone cases",
          "knitted scarves")

_ROLES = ("a ship's captain in the 1800s", "a detective in a small town", "a museum tour guide", "a wise old wizard",
          "a personal trainer", "a medieval innkeeper", "a travel agent", "an astronaut on the Moon",
          "a famous chef", "a customer support agent", "a park ranger", "a time traveler from the year 2300",
          "a kindergarten teacher", "a grumpy but kind librarian", "a fitness coach", "a career counselor",
          "a pirate", "a news reporter at a big event", "a robot that just learned about emotions")
_SITUATIONS = ("A visitor has just arrived and looks confused.", "It is your first day on the job.",
               "Something has gone badly wrong this morning.", "A child asks you a question.",
               "You are being interviewed for a documentary.", "A customer is unhappy.",
               "You are giving a short talk to a small crowd.", "An old friend visits you after many years.")
_ROLE_ASKS = ("Introduce yourself and describe your day.", "What advice would you give me?",
              "Tell me about the strangest thing that ever happened to you.", "How do you handle stress?",
              "What should I know before I start?", "Describe where you are right now.",
              "What is the most important lesson you have learned?", "Convince me to try what you do.")

_EXTRACT_ASKS = (
    "Extract every name, date and amount from the text above and return them as JSON.",
    "List the facts in the text above as a table with one row per item.",
    "Turn the text above into a bulleted list of action items, each with its owner and due date.",
    "From the text above, extract the key numbers and say what each one means.",
    "Summarize the text above in two sentences, keeping every number.",
    "Return the items in the text above as a JSON list of objects with their names and prices.",
)
_REVIEW_ASPECTS = ("the battery life", "the price", "the delivery", "the customer service", "the sound quality",
                   "the design", "the instructions", "the size", "the screen", "the taste")
_PRODUCTS = ("wireless earbuds", "a coffee grinder", "a hiking backpack", "a desk lamp", "a cookbook",
             "a pair of running shoes", "an electric kettle", "a board game", "a phone stand", "a blender")
_LIKES = ("is excellent", "works better than I expected", "is fine", "is disappointing", "is terrible",
          "could be better")
_CLAIMS = (
    "Since ice cream sales and drownings both rise in summer, eating ice cream must cause drowning.",
    "Everyone I know likes this phone, so it must be the best phone on the market.",
    "If we allow students to use calculators, they will never learn any math at all.",
    "This diet worked for my uncle, so it will work for everyone.",
    "Our sales went up after we changed the logo, so the new logo caused the increase.",
    "Most successful people wake up early, so waking up early makes you successful.",
    "The new road was built and traffic got worse, so roads make traffic worse.",
    "A famous actor recommends this vitamin, so it must be healthy.",
    "We have always done it this way, so there is no reason to change.",
    "Crime fell after the city hired more police, so more police always means less crime.",
)
_ANALYZE_ASKS = (
    "Is the review above positive, negative or mixed? Explain your answer with quotes from it.",
    "Rate the review above from 1 to 5 stars and justify the rating.",
    "Write a polite reply from the company to the review above.",
    "What does the reviewer like and dislike? Answer in two short lists.",
)
_CLAIM_ASKS = (
    "What is wrong with the reasoning in the statement above? Name the fallacy and explain it.",
    "Is the argument above convincing? Explain what evidence would be needed.",
    "Rewrite the statement above as a careful, well-supported claim.",
)

_READERS = ("I am a nurse", "I am a high-school student", "I run a small bakery", "I am a retired engineer",
            "I teach primary school", "I am learning English", "I work in marketing", "I am a new parent",
            "I am a history teacher", "I am studying for a university exam", "I write science fiction",
            "I am a journalist")
_READER_NEEDS = ("and I need to explain it to my colleagues tomorrow", "and I keep getting confused by it",
                 "and I want to write a short article about it", "and my child asked me about it",
                 "and I need it for a presentation", "and I want to understand the basics quickly")
_TEACH = ("Explain {c} to me.", "Can you help me understand {c}?", "What do I need to know about {c}?",
          "Give me a clear overview of {c}.")


def _constraints(rng: random.Random) -> str:
    return " ".join(rng.sample(_CONSTRAINTS, rng.choice((1, 1, 2))))


def _numbers(rng: random.Random) -> dict[str, object]:
    r = rng.randint
    return {"n": r(2, 9), "amount": r(2, 60) * 25, "income": r(15, 80) * 100, "date": r(1, 28), "hour": r(1, 7),
            "age": r(4, 12), "months": r(2, 12), "month": rng.choice(_MONTHS), "day": rng.choice(_DAYS),
            "project": rng.choice(_PROJECTS)}


def _letter(rng: random.Random) -> str:
    purpose = rng.choice(_PURPOSES).format(**_numbers(rng))
    sign = rng.choice(_NAMES)
    return f"Write an email to {rng.choice(_RECIPIENTS)} {purpose}. Sign it as {sign}. {_constraints(rng)}"


def _post(rng: random.Random) -> str:
    return (f"Write a {rng.choice(_FORMS)} for {rng.choice(_AUDIENCES)} about {rng.choice(_TOPICS)}. "
            f"{_constraints(rng)}")


def _plan(rng: random.Random) -> str:
    plan = rng.choice(_PLANS).format(place=rng.choice(_PLACES), who=rng.choice(_WHO), exam=rng.choice(_EXAMS),
                                     goods=rng.choice(_GOODS), **_numbers(rng))
    return f"{plan} {_constraints(rng)}"


def _roleplay(rng: random.Random) -> str:
    return (f"Pretend you are {rng.choice(_ROLES)}. {rng.choice(_SITUATIONS)} Stay in character. "
            f"{rng.choice(_ROLE_ASKS)}")


def _record_text(rng: random.Random) -> str:
    """A short made-up text full of names, dates and amounts: meeting notes, an order list or a report."""
    kind, r = rng.randint(0, 2), rng.randint
    if kind == 0:
        people = rng.sample(_NAMES, 3)
        tasks = rng.sample(_PROJECTS, 3)
        lines = [f"Meeting notes, {rng.choice(_MONTHS)} {r(1, 28)}. Present: {', '.join(people)}."]
        lines += [f"{p} will finish the {t} update by {rng.choice(_MONTHS)} {r(1, 28)}; budget ${r(2, 90) * 50}."
                  for p, t in zip(people, tasks)]
        return " ".join(lines)
    if kind == 1:
        items = rng.sample(_PRODUCTS, 4)
        lines = [f"{item}, {r(2, 9)} units at ${r(5, 200)}.{r(0, 9)}9 each" for item in items]
        return "Order list: " + "; ".join(lines) + "."
    company, city = rng.choice(_COMPANIES), rng.choice(_PLACES)
    chief = f"{rng.choice(_NAMES)} {rng.choice(_SURNAMES)}"
    return (f"{company} reported revenue of ${r(2, 90)}.{r(0, 9)} million for {rng.choice(_MONTHS)}, up {r(2, 30)}% "
            f"from last year. The company opened {r(2, 9)} new offices, including one in {city}, and hired "
            f"{r(20, 400)} people. Its chief executive, {chief}, expects growth of {r(3, 15)}% next year.")


def _extract(rng: random.Random) -> str:
    return f"{_record_text(rng)}\n\n{rng.choice(_EXTRACT_ASKS)}"


def _analyze(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"\"{rng.choice(_CLAIMS)}\"\n\n{rng.choice(_CLAIM_ASKS)}"
    a, b = rng.sample(_REVIEW_ASPECTS, 2)
    review = (f"I bought {rng.choice(_PRODUCTS)} {rng.randint(2, 11)} weeks ago. {a.capitalize()} "
              f"{rng.choice(_LIKES)}, but {b} {rng.choice(_LIKES)}. I would give it {rng.randint(1, 5)} stars.")
    return f"Review: \"{review}\"\n\n{rng.choice(_ANALYZE_ASKS)}"


def _teach(rng: random.Random, subjects: list[str]) -> str:
    ask = rng.choice(_TEACH).format(c=rng.choice(subjects))
    return f"{rng.choice(_READERS)} {rng.choice(_READER_NEEDS)}. {ask} {_constraints(rng)}"


def build_request_prompts(total: int = 6000, seed: int = 4) -> list[dict]:
    """A shuffled, deterministic mix (any prefix is itself a balanced mix) of the seven families, no prompt twice."""
    rng = random.Random(seed)
    subjects = all_subjects()
    makers = {"letters": _letter, "posts": _post, "plans": _plan, "roleplay": _roleplay, "extract": _extract,
              "analyze": _analyze, "teach": lambda g: _teach(g, subjects)}
    share = {"letters": 0.16, "posts": 0.18, "plans": 0.14, "roleplay": 0.12, "extract": 0.14, "analyze": 0.1,
             "teach": 0.16}
    prompts = [{"source": family, "prompt": makers[family](rng)}
               for family in makers for _ in range(int(total * share[family] * 1.1))]  # 10% spare for duplicates
    rng.shuffle(prompts)
    unique = list({p["prompt"]: p for p in prompts}.values())  # the same prompt twice teaches nothing new
    return unique[:total]
