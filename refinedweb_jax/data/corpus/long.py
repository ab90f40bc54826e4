"""Summarization and extractive QA, the tasks with long variants that need the whole input."""

from __future__ import annotations

import collections
import random

# ---------------------------------------------------------------------------------------------
# Summarization.

_PEOPLE = ("Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack",
           "Laura", "Mark")
_ACTIONS = ("visited the museum", "bought a bike", "met a friend", "read a book", "painted a wall",
            "sold a car", "cooked dinner", "lost a key", "found a wallet", "planted a tree",
            "wrote a letter", "watched a film", "climbed a hill", "fixed a lamp", "baked bread",
            "sang a song", "called a doctor", "washed the car", "opened a shop", "rented a boat")
_CITIES = ("Paris", "Berlin", "Rome", "Madrid", "Vienna", "Lisbon", "Oslo", "Prague", "Dublin",
           "Athens", "Warsaw", "Zurich")


def summarize(rng: random.Random, long: bool) -> tuple[str, str]:
  """(document, summary) of a list of dated events; long documents have 250-800 events."""
  count = rng.randint(250, 800) if long else rng.randint(4, 15)
  cast = rng.sample(_PEOPLE, rng.randint(2, min(len(_PEOPLE), count // 2)))
  people = [rng.choice(cast) for _ in range(count)]
  tally = collections.Counter(people)
  top = max(tally.values())
  tied = sorted(p for p, c in tally.items() if c == top)
  if len(tied) > 1:
    # Moving one event between two tied names leaves a single most frequent name.
    winner, loser = rng.sample(tied, 2)
    people[rng.choice([i for i, p in enumerate(people) if p == loser])] = winner
  star = collections.Counter(people).most_common(1)[0][0]
  events, day = [], rng.randint(1, 5)
  for person in people:
    events.append((day, person, rng.choice(_ACTIONS), rng.choice(_CITIES)))
    day += rng.randint(0, 3)
  document = " ".join(f"On day {d}, {p} {a} in {c}." for d, p, a, c in events)
  first, last = events[0], events[-1]
  target = (f"{count} events. Most often: {star}. First: {first[1]} {first[2]}. "
            f"Last: {last[1]} {last[2]}.")
  return document, target


# ---------------------------------------------------------------------------------------------
# Extractive QA over invented names.

_SYLLABLES = ("ka", "lo", "ri", "ven", "ta", "mor", "el", "san", "di", "vel", "tor", "bri", "na",
              "ses", "qua", "dor", "mi", "pel", "ru", "zan", "ko", "fen", "li", "gar", "tes", "bo",
              "vi", "ran", "lu", "mes")
_ZH_SYLLABLES = "阿巴贝达德蒂多菲加格哈基卡科拉莉洛马米莫纳尼诺帕瑞萨斯塔托维沃扎尔恩伦索芙娜琳克"
_SUFFIXES = {"country": ("ia", "land", "ria", "stan"), "city": ("o", "an", "ton", "burg"),
             "person": ("a", "o", "en", ""), "place": ("", "a")}
_ZH_SUFFIXES = {"country": ("亚", "兰", "国"), "city": ("", "堡"), "person": ("",), "place": ("",)}
_JOBS = ("doctor", "teacher", "baker", "pilot", "farmer", "painter", "lawyer", "nurse", "driver",
         "writer", "engineer", "actor")
_ZH_JOBS = ("医生", "教师", "面包师", "飞行员", "农民", "画家", "律师", "护士", "司机", "作家", "工程师", "演员")
_COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "grey", "pink")
_ZH_COLOURS = ("红色", "蓝色", "绿色", "黄色", "紫色", "橙色", "黑色", "白色", "灰色", "粉色")
_PETS = ("cats", "dogs", "rabbits", "birds", "horses", "goats")
_ZH_PETS = ("猫", "狗", "兔子", "鸟", "羊")
_FIRMS = ("Bank", "Motors", "Foods", "Press", "Systems")


def _invent(rng: random.Random, used: set[str], kind: str, zh: bool) -> str:
  """A fresh invented name, so every question in a context has exactly one answer fact."""
  while True:
    if zh:
      name = "".join(rng.choice(_ZH_SYLLABLES) for _ in range(rng.randint(2, 3)))
      name += rng.choice(_ZH_SUFFIXES[kind])
    else:
      name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
      name = (name + rng.choice(_SUFFIXES[kind])).capitalize()
    if name not in used:
      used.add(name)
      return name


def _en_fact(rng: random.Random, used: set[str]) -> tuple[str, str, str]:
  """(fact sentence, question, answer span)."""
  kind = rng.randrange(9)
  person = _invent(rng, used, "person", False)
  if kind == 0:
    country, city = _invent(rng, used, "country", False), _invent(rng, used, "city", False)
    return f"The capital of {country} is {city}.", f"What is the capital of {country}?", city
  if kind == 1:
    year = str(rng.randint(1900, 2020))
    return f"{person} was born in {year}.", f"In which year was {person} born?", year
  if kind == 2:
    city = _invent(rng, used, "city", False)
    return f"{person} lives in {city}.", f"Where does {person} live?", city
  if kind == 3:
    job = rng.choice(_JOBS)
    article = "an" if job[0] in "aeiou" else "a"
    return f"{person} works as {article} {job}.", f"What is the job of {person}?", job
  if kind == 4:
    colour = rng.choice(_COLOURS)
    return (f"The favourite colour of {person} is {colour}.",
            f"What is the favourite colour of {person}?", colour)
  if kind == 5:
    river, length = _invent(rng, used, "place", False), f"{rng.randint(20, 3000)} kilometres"
    return f"The {river} river is {length} long.", f"How long is the {river} river?", length
  if kind == 6:
    mountain, height = _invent(rng, used, "place", False), f"{rng.randint(500, 8000)} metres"
    return f"Mount {mountain} is {height} high.", f"How high is Mount {mountain}?", height
  if kind == 7:
    count = f"{rng.randint(2, 12)} {rng.choice(_PETS)}"
    pets = count.split()[1]
    return f"{person} has {count}.", f"How many {pets} does {person} have?", count
  firm = f"{_invent(rng, used, 'place', False)} {rng.choice(_FIRMS)}"
  year = str(rng.randint(1850, 2020))
  fact = f"{firm} was founded by {person} in {year}."
  if rng.random() < 0.5:
    return fact, f"Who founded {firm}?", person
  return fact, f"In which year was {firm} founded?", year


def _zh_fact(rng: random.Random, used: set[str]) -> tuple[str, str, str]:
  """(fact sentence, question, answer span), in Chinese."""
  kind = rng.randrange(9)
  person = _invent(rng, used, "person", True)
  if kind == 0:
    country, city = _invent(rng, used, "country", True), _invent(rng, used, "city", True)
    return f"{country}的首都是{city}。", f"{country}的首都是哪里？", city
  if kind == 1:
    year = f"{rng.randint(1900, 2020)}年"
    return f"{person}出生于{year}。", f"{person}出生于哪一年？", year
  if kind == 2:
    city = _invent(rng, used, "city", True)
    return f"{person}住在{city}。", f"{person}住在哪里？", city
  if kind == 3:
    job = rng.choice(_ZH_JOBS)
    return f"{person}是一名{job}。", f"{person}的职业是什么？", job
  if kind == 4:
    colour = rng.choice(_ZH_COLOURS)
    return f"{person}最喜欢的颜色是{colour}。", f"{person}最喜欢什么颜色？", colour
  if kind == 5:
    river, length = _invent(rng, used, "place", True), f"{rng.randint(20, 3000)}公里"
    return f"{river}河长{length}。", f"{river}河有多长？", length
  if kind == 6:
    mountain, height = _invent(rng, used, "place", True), f"{rng.randint(500, 8000)}米"
    return f"{mountain}山高{height}。", f"{mountain}山有多高？", height
  if kind == 7:
    count, pet = f"{rng.randint(2, 12)}只", rng.choice(_ZH_PETS)
    return f"{person}有{count}{pet}。", f"{person}有几只{pet}？", count
  firm, year = _invent(rng, used, "place", True), f"{rng.randint(1850, 2020)}年"
  fact = f"{firm}公司由{person}于{year}创立。"
  if rng.random() < 0.5:
    return fact, f"谁创立了{firm}公司？", person
  return fact, f"{firm}公司是哪一年创立的？", year


def _size(text: str, zh: bool) -> int:
  # Two Chinese characters count as about one word (and one token).
  return len(text) // 2 if zh else text.count(" ") + 1


def qa(rng: random.Random, long: bool, max_context_words: int) -> tuple[str, str]:
  """((question, context), answer span): one question over a context of invented facts."""
  zh = not long and rng.random() < 0.25
  if long:
    budget = rng.randint(2000, 9000)
  else:
    low = min(50, max_context_words)
    # Skewed towards short contexts so most inputs fit a 256-token encoder.
    budget = int(low * (max_context_words / low) ** (rng.random() ** 3))
  make_fact = _zh_fact if zh else _en_fact
  used: set[str] = set()
  while True:
    answer_fact, question, answer = make_fact(rng, used)
    if answer not in question:  # an invented name can happen to contain the answer
      break
  facts, words = [], _size(answer_fact, zh)
  while words < budget:
    fact = make_fact(rng, used)[0]
    if answer in fact:
      continue  # keeps the answer span unique outside its own fact
    facts.append(fact)
    words += _size(fact, zh)
  facts.insert(rng.randint(0, len(facts)), answer_fact)
  context = ("" if zh else " ").join(facts)
  return (question, context), answer
