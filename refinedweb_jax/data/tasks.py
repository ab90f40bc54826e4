"""Tasks (data source, prefix, metrics, target language) and mixtures (tasks + sampling rates).

A Task is a named source of {"inputs", "targets", "task", ...} examples per split,
the prefix its inputs start with, the metrics its decoded outputs are scored with
and the language of its targets. What the built-in tasks are (names, prefixes, the
QA and chat input formats, languages, metrics) is defined here once: the corpus
generator, the datasets and the applications API all read it. Tasks come from the
built-in corpus, from the user's own files (config.own_tasks) and from public TFDS
datasets (config.public_tasks), all named in one place (registry.py); a mixture samples
some of them at rates computed from their sizes.
"""

import dataclasses
from typing import Callable

import numpy as np

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "zh": "Chinese"}
LANGUAGES = tuple(LANGUAGE_NAMES)
TRANSLATION_TASKS = tuple(f"translate_{src}_{tgt}" for src in LANGUAGES for tgt in LANGUAGES
                          if src != tgt)
BUILTIN = TRANSLATION_TASKS + ("summarize", "qa", "code", "chat")
RATES = ("proportional", "temperature", "explicit")
METRICS = ("bleu", "chrf", "rouge", "squad", "pass@1", "exact_match")


@dataclasses.dataclass(frozen=True)
class Task:
  """A named text-to-text task: split -> source, its inputs' prefix, how outputs are scored."""
  name: str
  source_fn: Callable
  metrics: tuple = ()
  language: str = "en"
  prefix: str = ""

  def source(self, split: str):
    return self.source_fn(split)


def translation_prefix(source: str, target: str) -> str:
  """'translate English to German: ' (T5's wording)."""
  return f"translate {LANGUAGE_NAMES[source]} to {LANGUAGE_NAMES[target]}: "


def prefix(task: str) -> str:
  """The inputs prefix of a built-in task (qa inputs are qa_input's, with no prefix)."""
  if task.startswith("translate_"):
    _, src, tgt = task.split("_")
    return translation_prefix(src, tgt)
  return {"summarize": "summarize: ", "qa": "", "code": "write python: ", "chat": "chat: "}[task]


def own_prefix(task: str) -> str:
  """The default inputs prefix of an own-data task: 'TASK: '."""
  return f"{task}: "


def language(task: str) -> str:
  """The language of a built-in task's targets."""
  return task.split("_")[2] if task.startswith("translate_") else "en"


def metrics(task: str) -> tuple:
  """The metrics of a built-in task, by family."""
  if task.startswith("translate_"):
    return ("bleu", "chrf", "exact_match")
  return {"summarize": ("rouge", "exact_match"), "qa": ("squad",), "code": ("pass@1",),
          "chat": ("exact_match", "chrf")}[task]


def main_metric(task: str) -> str | None:
  """A built-in task's headline metric, as its eval key names it; other tasks: None."""
  if task.startswith("translate_"):
    return "chrf"
  return {"summarize": "rougeL", "qa": "f1", "code": "pass@1", "chat": "chrf"}.get(task)


def qa_input(question: str, context: str) -> str:
  """The QA task's input (T5's SQuAD format)."""
  return f"question: {question} context: {context}"


def chat_prompt(messages) -> str:
  """A conversation -> the chat task's input: 'chat: user: .. assistant: .. user: ..'.

  messages: one string (a single user turn), or a list of {"role", "content"} dicts
  or of strings alternating user / assistant, ending with the user's turn.
  """
  if isinstance(messages, str):
    messages = [messages]
  turns = []
  for i, m in enumerate(messages):
    role, content = (m.get("role"), m.get("content")) if isinstance(m, dict) else (
        ("user", "assistant")[i % 2], m)
    if role != ("user", "assistant")[i % 2]:
      raise ValueError(f"chat message {i} has role {role!r}; roles must alternate user, "
                       "assistant, ... starting with user")
    if not isinstance(content, str) or not content.strip():
      raise ValueError(f"chat message {i} is empty; give non-empty text")
    turns.append(content.strip())
  if not turns or len(turns) % 2 == 0:
    raise ValueError("a chat must end with a user message")
  if len(turns) == 1:
    return prefix("chat") + turns[0]
  history = " ".join(f"user: {turns[i]} assistant: {turns[i + 1]}"
                     for i in range(0, len(turns) - 1, 2))
  return f"{prefix('chat')}{history} user: {turns[-1]}"


class Subset:
  """Random-access view of some indices of a source (one task of the built-in corpus)."""

  def __init__(self, source, indices):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[int(self.indices[i])]


def default_metrics(format: str) -> tuple:
  """An own task's metrics when none are given: SQuAD's for squad files, else BLEU and chrF."""
  return ("squad",) if format == "squad" else ("bleu", "chrf")


def mixture_rates(sizes: dict, *, method: str = "proportional", cap: int = 0,
                  temperature: float = 1.0, weights: dict | None = None) -> dict:
  """Sampling rates that sum to 1.

  proportional: r_i ∝ min(n_i, cap) (T5's examples-proportional mixing, cap K;
  cap 0 = no cap); temperature: r_i ∝ min(n_i, cap)^(1/T); explicit: the given
  weights, normalised.
  """
  if not sizes:
    raise ValueError("a mixture needs at least one task")
  names = list(sizes)
  if method == "explicit":
    weights = weights or {}
    missing = [n for n in names if n not in weights]
    if missing:
      raise ValueError(f"explicit mixture weights missing for tasks {missing}")
    raw = np.asarray([float(weights[n]) for n in names])
  elif method in ("proportional", "temperature"):
    if cap < 0:
      raise ValueError(f"mixture cap must be >= 0 (0 = no cap), got {cap}")
    raw = np.asarray([min(sizes[n], cap) if cap else sizes[n] for n in names], float)
    if method == "temperature":
      if temperature <= 0:
        raise ValueError(f"mixture temperature must be > 0, got {temperature}")
      raw = raw ** (1.0 / temperature)
  else:
    raise ValueError(f"unknown mixture rate {method!r}; allowed: {', '.join(RATES)}")
  if np.any(raw < 0) or raw.sum() <= 0:
    raise ValueError(f"mixture weights must be >= 0 with a positive sum, got "
                     f"{dict(zip(names, raw.tolist()))}")
  return dict(zip(names, (raw / raw.sum()).tolist()))


def parse_weights(text: str) -> dict:
  """'a=2,b=1' -> {'a': 2.0, 'b': 1.0} (config.mixture.weights)."""
  out = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, eq, value = part.partition("=")
    try:
      out[name.strip()] = float(value)
    except ValueError:
      raise ValueError(f"bad config.mixture.weights entry {part!r}; use task=weight") from None
    if not eq:
      raise ValueError(f"bad config.mixture.weights entry {part!r}; use task=weight")
  return out
