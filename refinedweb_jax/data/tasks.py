"""Tasks (data source + metrics) and mixtures (tasks + sampling rates).

A Task is a named source of {"inputs", "targets", "task", ...} examples per
split, the metrics its decoded outputs are scored with, and the language of
its targets. Tasks come from the built-in corpus, from the user's own files
(config.own_tasks) and from public TFDS datasets (config.public_tasks); a
mixture picks some of them and samples them at rates computed from their sizes.
"""

import dataclasses
from typing import Callable

import numpy as np

from refinedweb_jax.data import corpus

RATES = ("proportional", "temperature", "explicit")
METRICS = ("bleu", "chrf", "rouge", "squad", "pass@1", "exact_match")


@dataclasses.dataclass(frozen=True)
class Task:
  """A named text-to-text task: split -> source, plus how its outputs are scored."""
  name: str
  source_fn: Callable
  metrics: tuple = ()
  language: str = "en"

  def source(self, split: str):
    return self.source_fn(split)


class Subset:
  """Random-access view of some indices of a source (one task of the built-in corpus)."""

  def __init__(self, source, indices):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[int(self.indices[i])]


def corpus_metrics(task: str) -> tuple:
  """Metrics of a built-in corpus task by family."""
  if task.startswith("translate_"):
    return ("bleu", "chrf", "exact_match")
  return {"summarize": ("rouge", "exact_match"), "qa": ("squad",), "code": ("pass@1",),
          "chat": ("exact_match", "chrf")}[task]


def builtin_tasks(source_fn) -> dict:
  """One Task per corpus task; source_fn(split) is the whole built-in split."""
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
    language = name.split("_")[2] if name.startswith("translate_") else "en"
    return Task(name, source, corpus_metrics(name), language)

  return {name: make(name) for name in corpus.TASKS}


def own_tasks(config) -> dict:
  """Tasks from the user's files, declared in config.own_tasks (a list of dicts)."""
  from refinedweb_jax.data.datasets import own_data
  out = {}
  for spec in config.get("own_tasks", []) or []:
    spec = dict(spec)
    name = spec["task"]
    metrics = tuple(spec.pop("metrics", ("bleu", "chrf")))
    language = spec.pop("language", "en")
    for metric in metrics:
      if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} for own task {name!r}; allowed: "
                         f"{', '.join(METRICS)}")
    data_dir = config.data.data_dir
    source = lambda split, spec=spec: own_data.data_source(data_dir, split, **spec)
    out[name] = Task(name, source, metrics, language)
  return out


def public_metrics(name: str) -> tuple:
  """Metrics of a public dataset task by family."""
  if name.startswith("wmt"):
    return ("bleu", "chrf")
  return {"cnn_dailymail": ("rouge",), "xsum": ("rouge",), "squad": ("squad",),
          "mbpp": ("pass@1",)}[name]


def public_tasks(config) -> dict:
  """Public TFDS datasets named in config.public_tasks, read from config.data.public_data_dir."""
  from refinedweb_jax.data.datasets import public
  out = {}
  for name in filter(None, (n.strip() for n in config.public_tasks.split(","))):
    if name not in public.PUBLIC:
      raise ValueError(f"unknown public task {name!r} in config.public_tasks; allowed: "
                       f"{', '.join(public.PUBLIC)}")
    data_dir = config.data.public_data_dir
    source = lambda split, name=name: public.data_source(name, split, data_dir)
    out[name] = Task(name, source, public_metrics(name), public.PUBLIC[name].language)
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
