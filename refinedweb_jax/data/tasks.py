"""Tasks (data source, prefix, metrics, target language) and mixtures (tasks + sampling rates).

A Task is a named source of {"inputs", "targets", "task", ...} examples per split,
the prefix its inputs start with, the metrics its decoded outputs are scored with
and the language of its targets. What the built-in tasks are is one row per family in
FAMILIES (names, prefix, input format, metrics, main metric, language, corpus share):
the helpers below, the corpus generator, the public datasets and the applications API
all read it. Adding a built-in family: its row here and its generator in
corpus/__init__.py. Tasks come from the built-in corpus, from the user's own files
(config.own_tasks) and from public TFDS datasets (config.public_tasks), all named in
one place (registry.py); a mixture samples some of them at rates computed from their
sizes.
"""

import dataclasses
from typing import Callable

import numpy as np

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "zh": "Chinese"}
LANGUAGES = tuple(LANGUAGE_NAMES)
RATES = ("proportional", "temperature", "explicit")
METRICS = ("bleu", "chrf", "rouge", "squad", "pass@1", "exact_match")
# How a family's inputs are built (inputs()): its prefix then the text; qa_input(question,
# context) after the prefix; chat_prompt(messages), which starts with the prefix.
FORMATS = ("text", "qa", "chat")


@dataclasses.dataclass(frozen=True)
class Family:
  """A built-in task family, in one row: its tasks' names, prefix, format, metrics, language.

  pattern, prefix and language may name {source} and {target} (a translation pair: every
  ordered pair of different LANGUAGES), and prefix their English names {source_name} and
  {target_name}. share: the family's part of the built-in corpus (corpus/__init__.py
  holds its generator).
  """
  name: str
  pattern: str  # its tasks' names
  prefix: str  # what its inputs start with
  metrics: tuple  # of METRICS: how its decoded outputs are scored
  main_metric: str  # the headline metric, as its eval key names it (rouge's rougeL, squad's f1)
  share: float
  language: str = "en"  # of the targets
  format: str = "text"  # of FORMATS

  def __post_init__(self):
    for value, allowed in [(m, METRICS) for m in self.metrics] + [(self.format, FORMATS)]:
      if value not in allowed:
        raise ValueError(f"task family {self.name!r} (data/tasks.py) names {value!r}; "
                         f"allowed: {', '.join(allowed)}")

  def tasks(self) -> dict:
    """Its built-in task names -> their fields ({source}, {target}, their names)."""
    if "{" not in self.pattern:
      return {self.pattern: {}}
    pairs = [_pair(s, t) for s in LANGUAGES for t in LANGUAGES if s != t]
    return {self.pattern.format(**f): f for f in pairs}


def _pair(source: str, target: str) -> dict:
  """A translation pair's fields: the languages' codes and English names."""
  return dict(source=source, target=target, source_name=LANGUAGE_NAMES[source],
              target_name=LANGUAGE_NAMES[target])


FAMILIES = {f.name: f for f in (
    Family("translation", "translate_{source}_{target}",
           "translate {source_name} to {target_name}: ", ("bleu", "chrf", "exact_match"),
           "chrf", 0.5, language="{target}"),  # T5's wording
    Family("summarize", "summarize", "summarize: ", ("rouge", "exact_match"), "rougeL", 0.12),
    Family("qa", "qa", "", ("squad",), "f1", 0.16, format="qa"),
    Family("code", "code", "write python: ", ("pass@1",), "pass@1", 0.12),
    Family("chat", "chat", "chat: ", ("exact_match", "chrf"), "chrf", 0.10, format="chat"),
)}
# Every built-in task -> (its family, its fields), in the families' order.
_BUILTIN = {task: (f, task_fields) for f in FAMILIES.values()
            for task, task_fields in f.tasks().items()}
BUILTIN = tuple(_BUILTIN)
TRANSLATION_TASKS = tuple(FAMILIES["translation"].tasks())


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


def family(task: str) -> Family:
  """The family of a built-in task; another name is an error naming the built-in ones."""
  if task not in _BUILTIN:
    raise ValueError(f"unknown built-in task {task!r}; allowed: {', '.join(BUILTIN)}")
  return _BUILTIN[task][0]


def fields(task: str) -> dict:
  """A built-in task's fields: {source}, {target} and their names for translation, else {}."""
  family(task)
  return dict(_BUILTIN[task][1])


def translation_prefix(source: str, target: str) -> str:
  """'translate English to German: ' (the translation family's prefix for this pair)."""
  return FAMILIES["translation"].prefix.format(**_pair(source, target))


def prefix(task: str) -> str:
  """The inputs prefix of a built-in task (qa inputs are qa_input's, with no prefix)."""
  return family(task).prefix.format(**fields(task))


def own_prefix(task: str) -> str:
  """The default inputs prefix of an own-data task: 'TASK: '."""
  return f"{task}: "


def language(task: str) -> str:
  """The language of a built-in task's targets."""
  return family(task).language.format(**fields(task))


def metrics(task: str) -> tuple:
  """The metrics of a built-in task, by family."""
  return family(task).metrics


def main_metric(task: str) -> str | None:
  """A built-in task's headline metric, as its eval key names it; other tasks: None."""
  return family(task).main_metric if task in _BUILTIN else None


def inputs(task: str, content) -> str:
  """A built-in task's inputs in its family's format: content is the text (text), the
  (question, context) pair (qa) or the messages (chat)."""
  fmt = family(task).format
  if fmt == "text":
    return prefix(task) + content
  elif fmt == "qa":
    return prefix(task) + qa_input(*content)
  elif fmt == "chat":
    return chat_prompt(content)
  else:
    raise ValueError(f"unknown format {fmt!r} of task {task!r}; allowed: {', '.join(FORMATS)}")


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
