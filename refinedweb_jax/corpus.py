"""Deterministic synthetic multilingual text-to-text corpus: translation, summaries, QA, code, chat.

Every target is computed exactly from the input, so a small model can learn real
skills from it; long QA and summarization examples need the whole input.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import math
import random
from typing import Callable, Iterable, Iterator

from refinedweb_jax import verbalize
from refinedweb_jax.verbalize import LANGUAGES

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "zh": "Chinese"}
TRANSLATION_TASKS = tuple(f"translate_{src}_{tgt}" for src in LANGUAGES for tgt in LANGUAGES
                          if src != tgt)
TASKS = TRANSLATION_TASKS + ("summarize", "qa", "code", "chat")
LONG_TASKS = ("summarize", "qa")
_CONTEXT_WORDS = 400  # upper end of a normal QA context
SPLITS = ("train", "validation", "test")


def _default_weights() -> dict[str, float]:
  # Pairs with English get twice the weight of the others; translation is half the mix.
  pairs = {t: 2.0 if "en" in t.split("_")[1:] else 1.0 for t in TRANSLATION_TASKS}
  weights = {t: 0.5 * w / sum(pairs.values()) for t, w in pairs.items()}
  weights.update(summarize=0.12, qa=0.16, code=0.12, chat=0.10)
  total = sum(weights.values())
  return {t: w / total for t, w in weights.items()}


TASK_WEIGHTS = _default_weights()

# ---------------------------------------------------------------------------------------------
# Translation.

_FIRST_DAY = datetime.date(1900, 1, 1)
_NUM_DAYS = (datetime.date(2100, 1, 1) - _FIRST_DAY).days


def _sample_number(rng: random.Random) -> int:
  low, high = rng.choices(((0, 20), (21, 99), (100, 999), (1000, 9999), (10**4, 10**6 - 1),
                           (10**6, verbalize.MAX_NUMBER)), weights=(15, 25, 25, 15, 12, 8))[0]
  n = rng.randint(low, high)
  if n >= 1000 and rng.random() < 0.4:
    # Round numbers ("1,200,000") are frequent in real text and test the zero rules.
    scale = 10 ** (len(str(n)) - rng.randint(1, 2))
    n = n // scale * scale
  return n


def _sample_quantity(rng: random.Random) -> int:
  while True:
    n = rng.choice((rng.randint(1, 20), rng.randint(21, 99), rng.randint(100, 999)))
    if n < 100 or n % 100 != 1:  # quantity_text leaves out 101, 201, ...
      return n


def _translation(src: str, tgt: str, rng: random.Random) -> tuple[str, str]:
  kind = rng.choices(("number", "date", "time", "quantity", "sentence"),
                     weights=(30, 10, 10, 15, 35))[0]
  if kind == "number":
    n = _sample_number(rng)
    digits = rng.random() < 0.5
    source = verbalize.format_digits(n, src) if digits else verbalize.number_words(n, src)
    return source, verbalize.number_words(n, tgt)
  if kind == "date":
    date = _FIRST_DAY + datetime.timedelta(days=rng.randrange(_NUM_DAYS))
    weekday = rng.random() < 0.3
    return verbalize.date_text(date, src, weekday), verbalize.date_text(date, tgt, weekday)
  if kind == "time":
    hour = rng.randrange(24)
    minute = rng.choice((0, 15, 30, 45)) if rng.random() < 0.5 else rng.randrange(60)
    return verbalize.time_text(hour, minute, src), verbalize.time_text(hour, minute, tgt)
  if kind == "quantity":
    n, unit = _sample_quantity(rng), rng.choice(tuple(verbalize.UNITS))
    words = rng.random() < 0.5
    return verbalize.quantity_text(n, unit, src, words), verbalize.quantity_text(n, unit, tgt)
  texts = verbalize.sentence(rng)
  return texts[src], texts[tgt]


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


def _summarize(rng: random.Random, long: bool) -> tuple[str, str]:
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


def _qa(rng: random.Random, long: bool, max_context_words: int) -> tuple[str, str]:
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
  return f"question: {question} context: {context}", answer


# ---------------------------------------------------------------------------------------------
# Code generation. A family returns (name, English, Chinese, code, reference, argument sampler).

_CodeSpec = tuple[str, str, str, str, Callable, Callable[[random.Random], tuple]]
_WORDS = ("apple", "banana", "level", "kayak", "robot", "python", "garden", "noon", "data",
          "radar", "river", "stats", "table", "moon", "bread", "civic")


def _an_int(rng: random.Random) -> tuple:
  return (rng.randint(-30, 30),)


def _two_ints(rng: random.Random) -> tuple:
  return (rng.randint(-30, 30), rng.randint(-30, 30))


def _small_int(rng: random.Random) -> tuple:
  return (rng.randint(0, 10),)


def _signed_int(rng: random.Random) -> tuple:
  return (rng.choice((rng.randint(-30, -1), 0, rng.randint(1, 30))),)


def _a_list(rng: random.Random) -> tuple:
  return ([rng.randint(-9, 30) for _ in range(rng.randint(3, 7))],)


def _digit_list(rng: random.Random) -> tuple:
  return ([rng.randint(0, 5) for _ in range(rng.randint(3, 8))],)


def _a_word(rng: random.Random) -> tuple:
  return (rng.choice(_WORDS),)


def _mixed_case_word(rng: random.Random) -> tuple:
  return ("".join(c.upper() if rng.random() < 0.4 else c for c in rng.choice(_WORDS)),)


def _word_list(rng: random.Random) -> tuple:
  return (rng.sample(_WORDS, rng.randint(2, 5)),)


def _lines(*lines: str) -> str:
  """Function source from its lines; body lines carry their own 4-space indents."""
  return "\n".join(lines)


def _code_arith(rng: random.Random) -> _CodeSpec:
  k = rng.randint(1, 50)
  op, en_op, zh, stem, ref = rng.choice((
      ("+", "plus", f"x 加 {k}", "add", lambda x: x + k),
      ("-", "minus", f"x 减 {k}", "subtract", lambda x: x - k),
      ("*", "times", f"x 乘以 {k}", "multiply_by", lambda x: x * k)))
  if rng.random() < 0.25:
    k = rng.randint(2, 4)
    op, en_op, zh, stem, ref = "**", "to the power of", f"x 的 {k} 次方", "power", lambda x: x**k
  name = f"{stem}_{k}"
  return (name, f"returns x {en_op} {k}", f"返回 {zh}",
          _lines(f"def {name}(x):", f"    return x {op} {k}"), ref, _an_int)


def _code_divisible(rng: random.Random) -> _CodeSpec:
  k = rng.randint(2, 12)
  name = f"is_divisible_by_{k}"
  return (name, f"returns True if x is divisible by {k} and False otherwise",
          f"如果 x 能被 {k} 整除就返回 True，否则返回 False",
          _lines(f"def {name}(x):", f"    return x % {k} == 0"), lambda x: x % k == 0, _an_int)


def _code_filter(rng: random.Random) -> _CodeSpec:
  k = rng.randint(0, 20)
  greater = rng.random() < 0.5
  word, en, zh, op = ("greater", "greater than", "大于", ">") if greater else (
      "less", "less than", "小于", "<")
  name = f"{word}_than_{k}"
  return (name, f"takes a list nums and returns the numbers in nums {en} {k}",
          f"接收列表 nums，返回 nums 中{zh} {k} 的数",
          _lines(f"def {name}(nums):", f"    return [n for n in nums if n {op} {k}]"),
          lambda nums: [n for n in nums if (n > k if greater else n < k)], _a_list)


def _code_parity(rng: random.Random) -> _CodeSpec:
  even = rng.random() < 0.5
  word, zh, rest = ("even", "偶数", 0) if even else ("odd", "奇数", 1)
  name = f"keep_{word}"
  return (name, f"returns the {word} numbers in the list nums", f"返回列表 nums 中的{zh}",
          _lines(f"def {name}(nums):", f"    return [n for n in nums if n % 2 == {rest}]"),
          lambda nums: [n for n in nums if n % 2 == rest], _a_list)


def _code_map(rng: random.Random) -> _CodeSpec:
  k = rng.randint(2, 20)
  choice = rng.randrange(3)
  if choice == 0:
    name = f"multiply_each_by_{k}"
    return (name, f"returns a list with each number in nums multiplied by {k}",
            f"返回一个列表，把 nums 中的每个数乘以 {k}",
            _lines(f"def {name}(nums):", f"    return [n * {k} for n in nums]"),
            lambda nums: [n * k for n in nums], _a_list)
  if choice == 1:
    name = f"add_{k}_to_each"
    return (name, f"returns a list with {k} added to each number in nums",
            f"返回一个列表，把 nums 中的每个数加上 {k}",
            _lines(f"def {name}(nums):", f"    return [n + {k} for n in nums]"),
            lambda nums: [n + k for n in nums], _a_list)
  return ("square_list", "returns the square of each number in the list nums",
          "返回列表 nums 中每个数的平方",
          _lines("def square_list(nums):", "    return [n * n for n in nums]"),
          lambda nums: [n * n for n in nums], _a_list)


def _code_aggregate(rng: random.Random) -> _CodeSpec:
  name, en, zh, fn = rng.choice((
      ("list_sum", "the sum of the numbers", "所有数的和", sum),
      ("list_max", "the largest number", "最大的数", max),
      ("list_min", "the smallest number", "最小的数", min),
      ("list_length", "the number of items", "元素的个数", len)))
  return (name, f"returns {en} in the list nums", f"返回列表 nums 中{zh}",
          _lines(f"def {name}(nums):", f"    return {fn.__name__}(nums)"), fn, _a_list)


def _code_count(rng: random.Random) -> _CodeSpec:
  if rng.random() < 0.5:
    k = rng.randint(0, 5)
    return (f"count_{k}", f"returns how many times {k} appears in the list nums",
            f"返回 {k} 在列表 nums 中出现的次数",
            _lines(f"def count_{k}(nums):", f"    return nums.count({k})"),
            lambda nums: nums.count(k), _digit_list)
  k = rng.randint(0, 15)
  return (f"count_above_{k}", f"returns how many numbers in the list nums are greater than {k}",
          f"返回列表 nums 中大于 {k} 的数的个数",
          _lines(f"def count_above_{k}(nums):", "    count = 0", "    for n in nums:",
                 f"        if n > {k}:", "            count += 1", "    return count"),
          lambda nums: sum(1 for n in nums if n > k), _a_list)


def _code_strings(rng: random.Random) -> _CodeSpec:
  choice = rng.randrange(6)
  if choice == 0:
    return ("reverse_string", "returns the string s reversed", "返回字符串 s 反转后的结果",
            _lines("def reverse_string(s):", "    return s[::-1]"), lambda s: s[::-1], _a_word)
  if choice == 1:
    return ("is_palindrome", "returns True if the string s reads the same backwards",
            "如果字符串 s 正读和反读都一样就返回 True",
            _lines("def is_palindrome(s):", "    return s == s[::-1]"), lambda s: s == s[::-1],
            _a_word)
  if choice == 2:
    k = rng.randint(2, 5)
    return (f"repeat_{k}", f"returns the string s repeated {k} times",
            f"返回把字符串 s 重复 {k} 次的结果",
            _lines(f"def repeat_{k}(s):", f"    return s * {k}"), lambda s: s * k, _a_word)
  if choice == 3:
    upper = rng.random() < 0.5
    case, zh = ("upper", "大写") if upper else ("lower", "小写")
    return (f"to_{case}", f"returns the string s in {case} case", f"返回字符串 s 的{zh}形式",
            _lines(f"def to_{case}(s):", f"    return s.{case}()"),
            lambda s: s.upper() if upper else s.lower(), _mixed_case_word)
  if choice == 4:
    return ("count_vowels", "returns the number of vowels in the string s",
            "返回字符串 s 中元音字母的个数",
            _lines("def count_vowels(s):", "    count = 0", "    for c in s:",
                   '        if c in "aeiou":', "            count += 1", "    return count"),
            lambda s: sum(c in "aeiou" for c in s), _a_word)
  letter = rng.choice("abenrt")
  return (f"count_letter_{letter}", f"returns how many times the letter '{letter}' appears in s",
          f"返回字母 '{letter}' 在字符串 s 中出现的次数",
          _lines(f"def count_letter_{letter}(s):", f'    return s.count("{letter}")'),
          lambda s: s.count(letter), _a_word)


def _code_fizzbuzz(rng: random.Random) -> _CodeSpec:
  a, b = sorted(rng.sample(range(2, 8), 2))
  name = f"fizzbuzz_{a}_{b}"
  code = _lines(f"def {name}(n):", f"    if n % {a} == 0 and n % {b} == 0:",
                '        return "FizzBuzz"', f"    if n % {a} == 0:", '        return "Fizz"',
                f"    if n % {b} == 0:", '        return "Buzz"', "    return str(n)")

  def ref(n):
    return ("Fizz" if n % a == 0 else "") + ("Buzz" if n % b == 0 else "") or str(n)

  return (name, f"returns 'FizzBuzz' if n is divisible by {a} and {b}, 'Fizz' if only by {a}, "
          f"'Buzz' if only by {b}, otherwise n as a string",
          f"如果 n 能同时被 {a} 和 {b} 整除返回 'FizzBuzz'，只能被 {a} 整除返回 'Fizz'，"
          f"只能被 {b} 整除返回 'Buzz'，否则返回 n 的字符串", code, ref,
          lambda r: (r.randint(1, 60),))


def _code_loop(rng: random.Random) -> _CodeSpec:
  choice = rng.randrange(3)
  if choice == 0:
    return ("factorial", "returns the factorial of n", "返回 n 的阶乘",
            _lines("def factorial(n):", "    result = 1", "    for i in range(2, n + 1):",
                   "        result *= i", "    return result"),
            math.factorial, _small_int)
  if choice == 1:
    return ("sum_to_n", "returns the sum of the numbers from 1 to n", "返回从 1 到 n 的所有整数的和",
            _lines("def sum_to_n(n):", "    total = 0", "    for i in range(1, n + 1):",
                   "        total += i", "    return total"),
            lambda n: n * (n + 1) // 2, _small_int)
  return ("sum_of_squares", "returns the sum of the squares of the numbers from 1 to n",
          "返回从 1 到 n 的所有整数的平方和",
          _lines("def sum_of_squares(n):", "    total = 0", "    for i in range(1, n + 1):",
                 "        total += i * i", "    return total"),
          lambda n: n * (n + 1) * (2 * n + 1) // 6, _small_int)


def _code_branch(rng: random.Random) -> _CodeSpec:
  choice = rng.randrange(4)
  if choice == 0:
    lo = rng.randint(-20, 20)
    hi = lo + rng.randint(5, 30)
    name = f"clamp_{lo}_{hi}".replace("-", "minus_")
    return (name, f"returns x limited to the range from {lo} to {hi}",
            f"把 x 限制在 {lo} 到 {hi} 之间并返回",
            _lines(f"def {name}(x):", f"    if x < {lo}:", f"        return {lo}",
                   f"    if x > {hi}:", f"        return {hi}", "    return x"),
            lambda x: min(max(x, lo), hi), _an_int)
  if choice == 1:
    larger = rng.random() < 0.5
    name, zh, op = ("larger", "较大", ">") if larger else ("smaller", "较小", "<")
    return (name, f"returns the {name} of a and b", f"返回 a 和 b 中{zh}的那个数",
            _lines(f"def {name}(a, b):", f"    if a {op} b:", "        return a", "    return b"),
            max if larger else min, _two_ints)
  if choice == 2:
    return ("abs_diff", "returns the absolute difference between a and b",
            "返回 a 和 b 之差的绝对值", _lines("def abs_diff(a, b):", "    return abs(a - b)"),
            lambda a, b: abs(a - b), _two_ints)
  return ("sign", "returns 1 if x is positive, -1 if x is negative and 0 otherwise",
          "x 为正数返回 1，为负数返回 -1，否则返回 0",
          _lines("def sign(x):", "    if x > 0:", "        return 1", "    if x < 0:",
                 "        return -1", "    return 0"),
          lambda x: (x > 0) - (x < 0), _signed_int)


def _code_lists(rng: random.Random) -> _CodeSpec:
  choice = rng.randrange(5)
  if choice == 0:
    return ("reverse_list", "returns the list items in reverse order", "返回把列表 items 倒序后的结果",
            _lines("def reverse_list(items):", "    return items[::-1]"),
            lambda items: items[::-1], _a_list)
  if choice == 1:
    first = rng.random() < 0.5
    word, zh, index = ("first", "第一个", 0) if first else ("last", "最后一个", -1)
    return (f"{word}_item", f"returns the {word} item of the list items", f"返回列表 items 的{zh}元素",
            _lines(f"def {word}_item(items):", f"    return items[{index}]"),
            lambda items: items[index], _a_list)
  if choice == 2:
    return ("average", "returns the average of the numbers in the list nums",
            "返回列表 nums 中所有数的平均值",
            _lines("def average(nums):", "    return sum(nums) / len(nums)"),
            lambda nums: sum(nums) / len(nums), _a_list)
  if choice == 3:
    sep, word = rng.choice(((" ", "space"), ("-", "dash"), ("_", "underscore"), (",", "comma")))
    return (f"join_with_{word}", f"returns the strings in the list words joined by '{sep}'",
            f"返回用 '{sep}' 连接列表 words 中所有字符串的结果",
            _lines(f"def join_with_{word}(words):", f'    return "{sep}".join(words)'),
            lambda words: sep.join(words), _word_list)
  k = rng.randint(2, 6)
  return (f"longer_than_{k}", f"returns the words in the list words with more than {k} letters",
          f"返回列表 words 中字母数多于 {k} 的单词",
          _lines(f"def longer_than_{k}(words):", f"    return [w for w in words if len(w) > {k}]"),
          lambda words: [w for w in words if len(w) > k], _word_list)


_CODE_FAMILIES = (_code_arith, _code_divisible, _code_filter, _code_parity, _code_map,
                  _code_aggregate, _code_count, _code_strings, _code_fizzbuzz, _code_loop,
                  _code_branch, _code_lists)


def _code(rng: random.Random) -> tuple[str, str, str]:
  name, en, zh, code, ref, sample = rng.choice(_CODE_FAMILIES)(rng)
  description = f"写一个函数 {name}，{zh}" if rng.random() < 0.3 else f"a function {name} that {en}"
  calls: list[tuple] = []
  for _ in range(30):  # distinct calls where the argument space allows
    args = sample(rng)
    if args not in calls:
      calls.append(args)
    if len(calls) == 3:
      break
  while len(calls) < 3:
    calls.append(calls[-1])
  tests = "\n".join(f"assert {name}({', '.join(map(repr, args))}) == {ref(*args)!r}"
                    for args in calls)
  return description, code, tests


# ---------------------------------------------------------------------------------------------
# Chat.

_GREETINGS = {
    "en": (("hello", "Hello! How can I help you?"), ("hi", "Hi! How can I help you?"),
           ("good morning", "Good morning! How can I help you?"),
           ("good evening", "Good evening! How can I help you?"),
           ("how are you?", "I am fine, thank you. How can I help you?"),
           ("thank you", "You are welcome!"), ("thanks", "You are welcome!"),
           ("goodbye", "Goodbye!")),
    "de": (("hallo", "Hallo! Wie kann ich helfen?"),
           ("guten Morgen", "Guten Morgen! Wie kann ich helfen?"),
           ("guten Abend", "Guten Abend! Wie kann ich helfen?"),
           ("wie geht es dir?", "Mir geht es gut, danke. Wie kann ich helfen?"),
           ("danke", "Gern geschehen!"), ("tschüss", "Tschüss!"),
           ("auf Wiedersehen", "Auf Wiedersehen!")),
    "fr": (("bonjour", "Bonjour ! Comment puis-je vous aider ?"),
           ("salut", "Salut ! Comment puis-je vous aider ?"),
           ("bonsoir", "Bonsoir ! Comment puis-je vous aider ?"),
           ("comment allez-vous ?", "Je vais bien, merci. Comment puis-je vous aider ?"),
           ("merci", "De rien !"), ("au revoir", "Au revoir !")),
    "zh": (("你好", "你好！有什么可以帮你的吗？"), ("早上好", "早上好！有什么可以帮你的吗？"),
           ("晚上好", "晚上好！有什么可以帮你的吗？"), ("你好吗？", "我很好，谢谢。有什么可以帮你的吗？"),
           ("谢谢", "不客气！"), ("再见", "再见！")),
}
# Each language's name for each language, as used after "in" / "auf" / "en" / "用".
_NAMES_IN = {"en": LANGUAGE_NAMES,
             "de": {"en": "Englisch", "de": "Deutsch", "fr": "Französisch", "zh": "Chinesisch"},
             "fr": {"en": "anglais", "de": "allemand", "fr": "français", "zh": "chinois"},
             "zh": {"en": "英语", "de": "德语", "fr": "法语", "zh": "中文"}}
_SAY = {"en": "how do you say {n} in {lang}?", "de": "wie sagt man {n} auf {lang}?",
        "fr": "comment dit-on {n} en {lang} ?", "zh": "{n}用{lang}怎么说？"}
_SAY_AGAIN = {"en": "and in {lang}?", "de": "und auf {lang}?", "fr": "et en {lang} ?",
              "zh": "那用{lang}怎么说？"}
_OPS = {"en": ("plus", "minus", "times"), "de": ("plus", "minus", "mal"),
        "fr": ("plus", "moins", "fois"), "zh": ("加", "减", "乘以")}
_ASK = {"en": "what is {a} {op} {b}?", "de": "was ist {a} {op} {b}?",
        "fr": "combien font {a} {op} {b} ?", "zh": "{a}{op}{b}等于多少？"}
_ANSWER = {"en": "{a} {op} {b} is {c}.", "de": "{a} {op} {b} ist {c}.",
           "fr": "{a} {op} {b} font {c}.", "zh": "{a}{op}{b}等于{c}。"}
_ASK_AGAIN = {"en": "and {op} {b}?", "de": "und {op} {b}?", "fr": "et {op} {b} ?",
              "zh": "再{op}{b}呢？"}


def _arithmetic(rng: random.Random, a: int | None = None) -> tuple[int, int, int, int]:
  """(operator index, a, b, result) with a non-negative result."""
  op = rng.randrange(3)
  if a is None:
    a = rng.randint(0, 12) if op == 2 else rng.randint(0, 100)
  b = rng.randint(0, 12) if op == 2 else rng.randint(0, a if op == 1 else 100)
  return op, a, b, (a + b, a - b, a * b)[op]


def _chat(rng: random.Random) -> tuple[str, str]:
  lang = rng.choice(LANGUAGES)
  kind = rng.choices(("greet", "math", "say", "math_again", "say_again"),
                     weights=(3, 3, 3, 1, 1))[0]
  turns: list[str] = []
  if kind != "greet" and rng.random() < 0.2:
    turns += rng.choice(_GREETINGS[lang][:3])
  if kind == "greet":
    question, reply = rng.choice(_GREETINGS[lang])
  elif kind.startswith("math"):
    op, a, b, c = _arithmetic(rng)
    question = _ASK[lang].format(a=a, op=_OPS[lang][op], b=b)
    reply = _ANSWER[lang].format(a=a, op=_OPS[lang][op], b=b, c=c)
    if kind == "math_again":
      turns += [question, reply]
      op, a, b, c = _arithmetic(rng, a=c)
      question = _ASK_AGAIN[lang].format(op=_OPS[lang][op], b=b)
      reply = _ANSWER[lang].format(a=a, op=_OPS[lang][op], b=b, c=c)
  else:
    n = rng.randint(0, 100) if rng.random() < 0.6 else rng.randint(100, 99_999)
    target = rng.choice([t for t in LANGUAGES if t != lang])
    question = _SAY[lang].format(n=n, lang=_NAMES_IN[lang][target])
    reply = verbalize.number_words(n, target)
    if kind == "say_again":
      turns += [question, reply]
      target = rng.choice([t for t in LANGUAGES if t != target])
      question = _SAY_AGAIN[lang].format(lang=_NAMES_IN[lang][target])
      reply = verbalize.number_words(n, target)
  if not turns:
    return question, reply
  history = " ".join(f"user: {turns[i]} assistant: {turns[i + 1]}" for i in range(0, len(turns), 2))
  return f"{history} user: {question}", reply


# ---------------------------------------------------------------------------------------------
# Public API.


def _check_task(task: str) -> None:
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")


def _build(task: str, rng: random.Random, max_context_words: int, long: bool) -> dict:
  _check_task(task)
  if max_context_words < 20:
    raise ValueError(f"max_context_words must be >= 20, got {max_context_words}")
  tests = ""
  if task in TRANSLATION_TASKS:
    src, tgt = task.split("_")[1:]
    text, targets = _translation(src, tgt, rng)
    inputs = f"translate {LANGUAGE_NAMES[src]} to {LANGUAGE_NAMES[tgt]}: {text}"
  elif task == "summarize":
    document, targets = _summarize(rng, long)
    inputs = f"summarize: {document}"
  elif task == "qa":
    inputs, targets = _qa(rng, long, max_context_words)
  elif task == "code":
    description, targets, tests = _code(rng)
    inputs = f"write python: {description}"
  else:
    text, targets = _chat(rng)
    inputs = f"chat: {text}"
  return {"inputs": inputs, "targets": targets, "task": task, "tests": tests}


def generate_example(task: str, rng: random.Random, *,
                     max_context_words: int = _CONTEXT_WORDS) -> dict:
  """One example {"inputs", "targets", "task", "tests"} of the task, drawn with rng."""
  return _build(task, rng, max_context_words, long=False)


def _split_seed(split: str, seed: int) -> int:
  # sha256 rather than hash(): str hashes change from process to process.
  return int.from_bytes(hashlib.sha256(f"{split}/{seed}".encode()).digest()[:8], "big")


def generate_split(split: str, num_examples: int, seed: int = 0, *, long_fraction: float = 0.05,
                   tasks: Iterable[str] | None = None) -> Iterator[dict]:
  """Deterministic examples of a split, tasks mixed by TASK_WEIGHTS, with ids "{split}-{index}"."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
  if num_examples < 0:
    raise ValueError(f"num_examples must be >= 0, got {num_examples}")
  if not 0.0 <= long_fraction <= 1.0:
    raise ValueError(f"long_fraction must be in [0, 1], got {long_fraction}")
  names = TASKS if tasks is None else (tasks,) if isinstance(tasks, str) else tuple(tasks)
  if not names:
    raise ValueError(f"tasks must name at least one of: {', '.join(TASKS)}")
  for task in names:
    _check_task(task)
  weights = [TASK_WEIGHTS[t] for t in names]
  base = _split_seed(split, seed)
  return _examples(split, num_examples, base, names, weights, long_fraction)


def _examples(split: str, num_examples: int, base: int, names: tuple[str, ...],
              weights: list[float], long_fraction: float) -> Iterator[dict]:
  for index in range(num_examples):
    # One generator per example: example i does not depend on how long earlier ones were.
    rng = random.Random(base * 1_000_003 + index)
    task = rng.choices(names, weights=weights)[0]
    long = rng.random() < long_fraction and task in LONG_TASKS
    example = _build(task, rng, _CONTEXT_WORDS, long)
    example["id"] = f"{split}-{index}"
    yield example
