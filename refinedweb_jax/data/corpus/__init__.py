"""Deterministic synthetic multilingual text-to-text corpus: translation, summaries, QA, code, chat.

Every target is computed exactly from the input, so a small model can learn real
skills from it. Summarization and QA live in corpus_long, code generation in corpus_code.
"""

from __future__ import annotations

import datetime
import hashlib
import random
from typing import Iterable, Iterator

from refinedweb_jax.data import tasks
from refinedweb_jax.data.corpus import code as corpus_code
from refinedweb_jax.data.corpus import long as corpus_long
from refinedweb_jax.data.corpus import verbalize
from refinedweb_jax.data.tasks import BUILTIN, LANGUAGES

LONG_TASKS = ("summarize", "qa")
_CONTEXT_WORDS = 400  # upper end of a normal QA context
SPLITS = ("train", "validation", "test")


def _default_weights() -> dict[str, float]:
  # Each family's share of the mix (tasks.FAMILIES), split among its tasks: translation
  # pairs with English get twice the weight of the others.
  weights = {}
  for family in tasks.FAMILIES.values():
    within = {t: 2.0 if "en" in (f.get("source"), f.get("target")) else 1.0
              for t, f in family.tasks().items()}
    weights.update({t: family.share * w / sum(within.values()) for t, w in within.items()})
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


TRANSLATION_KINDS = ("number", "date", "time", "quantity", "sentence")


def _translation(src: str, tgt: str, rng: random.Random) -> tuple[str, str, str]:
  """(source text, target text, kind): one of TRANSLATION_KINDS."""
  kind = rng.choices(TRANSLATION_KINDS, weights=(30, 10, 10, 15, 35))[0]
  return (*_translation_of_kind(kind, src, tgt, rng), kind)


def _translation_of_kind(kind: str, src: str, tgt: str, rng: random.Random) -> tuple[str, str]:
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
_NAMES_IN = {"en": tasks.LANGUAGE_NAMES,
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


def _chat(rng: random.Random) -> tuple[list, str]:
  """(turns: earlier user/assistant turns and the question, the reply)."""
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
  return turns + [question], reply


# ---------------------------------------------------------------------------------------------
# Public API.


def _check_task(task: str) -> None:
  if task not in BUILTIN:
    raise ValueError(f"unknown task {task!r}; expected one of: {', '.join(BUILTIN)}")


def _translate(task: str, rng: random.Random, long: bool, words: int) -> tuple:
  del long, words  # translations are short
  pair = tasks.fields(task)
  text, targets, kind = _translation(pair["source"], pair["target"], rng)
  return text, targets, "", kind


# Each built-in family's generator (tasks.FAMILIES): (task, rng, long, max context words) ->
# (content in the family's format: tasks.inputs, targets, tests, kind).
GENERATORS = {
    "translation": _translate,
    "summarize": lambda task, rng, long, words: (*corpus_long.summarize(rng, long), "", task),
    "qa": lambda task, rng, long, words: (*corpus_long.qa(rng, long, words), "", task),
    "code": lambda task, rng, long, words: (*corpus_code.code(rng), task),
    "chat": lambda task, rng, long, words: (*_chat(rng), "", task),
}


def _build(task: str, rng: random.Random, max_context_words: int, long: bool) -> dict:
  _check_task(task)
  if max_context_words < 20:
    raise ValueError(f"max_context_words must be >= 20, got {max_context_words}")
  generate = GENERATORS[tasks.family(task).name]
  content, targets, tests, kind = generate(task, rng, long, max_context_words)
  return {"inputs": tasks.inputs(task, content), "targets": targets, "task": task,
          "tests": tests, "kind": kind}


def generate_example(task: str, rng: random.Random, *,
                     max_context_words: int = _CONTEXT_WORDS) -> dict:
  """One example {"inputs", "targets", "task", "tests", "kind"} of the task, drawn with rng.

  kind: a translation's TRANSLATION_KINDS entry, else the task's name (it is not stored in
  the built-in dataset; regenerate a split to group its examples by kind).
  """
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
  names = BUILTIN if tasks is None else (tasks,) if isinstance(tasks, str) else tuple(tasks)
  if not names:
    raise ValueError(f"tasks must name at least one of: {', '.join(BUILTIN)}")
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
