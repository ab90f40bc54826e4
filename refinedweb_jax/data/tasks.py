"""Tasks (data source, prefix, metrics, target language) and mixtures (tasks + sampling rates).

A Task is a named source of {"inputs", "targets", "task", ...} examples per split,
the prefix its inputs start with, the metrics its decoded outputs are scored with
and the language of its targets. What the built-in tasks are (names, prefixes, the
QA and chat input formats, languages, metrics) is defined here once: the corpus
generator, the datasets and the applications API all read it. Tasks come from the
built-in corpus, from the user's own files (config.own_tasks) and from public TFDS
datasets (config.public_tasks); a mixture samples some of them at rates computed
from their sizes.
"""

import dataclasses
import json
import os
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


def builtin_tasks(source_fn) -> dict:
  """One Task per built-in task; source_fn(split) is the whole built-in split."""
  cache = {}

  def split_index(split):
    if split not in cache:
      source = source_fn(split)
      names = np.asarray([source[i]["task"] for i in range(len(source))])
      cache[split] = (source, names)
    return cache[split]

  def make(name):
    def source(split):
      whole, names = split_index(split)
      return Subset(whole, np.flatnonzero(names == name))
    return Task(name, source, metrics(name), language(name), prefix(name))

  return {name: make(name) for name in BUILTIN}


def own_tasks(specs, data_dir: str) -> dict:
  """Tasks from the user's files: config.own_tasks entries (own_data.build arguments)."""
  from refinedweb_jax.data.datasets import own_data
  out = {}
  for spec in specs or []:
    spec = dict(spec)
    name = spec["task"]
    task_metrics = tuple(spec.pop("metrics", None) or default_metrics(spec["format"]))
    task_language = spec.pop("language", "en")
    for metric in task_metrics:
      if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} for own task {name!r}; allowed: "
                         f"{', '.join(METRICS)}")
    source = lambda split, spec=spec: own_data.data_source(data_dir, split, **spec)
    out[name] = Task(name, source, task_metrics, task_language,
                     spec.get("prefix", own_prefix(name)))
  return out


def default_metrics(format: str) -> tuple:
  """An own task's metrics when none are given: SQuAD's for squad files, else BLEU and chrF."""
  return ("squad",) if format == "squad" else ("bleu", "chrf")


# In data.data_dir: the own tasks `refinedweb prepare --task` built, by name (their
# config.own_tasks entries), so a mixture can name them without an experiment file.
REGISTRY = "own_tasks.json"


def registered_tasks(data_dir: str) -> dict:
  """Name -> config.own_tasks entry of every own task prepared in data_dir."""
  from etils import epath
  path = epath.Path(data_dir) / REGISTRY
  if not path.exists():
    return {}
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); remove it and prepare the own tasks "
                     "again with: refinedweb prepare --task NAME ...") from None


def register_task(data_dir: str, spec: dict):
  """Records a prepared own task (its config.own_tasks entry) in data_dir's registry."""
  from etils import epath
  entries = registered_tasks(data_dir)
  entries[spec["task"]] = spec
  path = epath.Path(data_dir) / REGISTRY
  text = json.dumps(entries, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
  if "://" in str(path):
    path.write_text(text, encoding="utf-8")
    return
  tmp = f"{path}.tmp{os.getpid()}"  # renamed into place: a reader never sees half a file
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def public_tasks(names, data_dir: str) -> dict:
  """Public TFDS datasets by name (datasets.public.PUBLIC), read from data_dir."""
  from refinedweb_jax.data.datasets import public
  out = {}
  for name in names:
    if name not in public.PUBLIC:
      raise ValueError(f"unknown public task {name!r} in config.public_tasks; allowed: "
                       f"{', '.join(public.PUBLIC)}")
    spec = public.PUBLIC[name]
    source = lambda split, name=name: public.data_source(name, split, data_dir)
    out[name] = Task(name, source, spec.metrics, spec.language, spec.prefix)
  return out


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
