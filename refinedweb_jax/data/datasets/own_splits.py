"""Validation and test splits carved from an own task's train files (own_data's `carve`).

Of the n good train examples, each carved split gets round(fraction * n) (halves round
up), at least 1; train keeps the rest, at least 1 (with fractions summing near 1 on a
small file, the largest carved split gives one back). Which examples go where follows
from their ids ("<file basename>:<line>") and the seed alone, ranked by SHA-256, so the
same files and seed give the same splits on any machine and another seed another carve.
Fewer than (carved splits + 1) good examples cannot be carved: the build fails, saying so.
"""

from __future__ import annotations

import hashlib
import math
from typing import Mapping

import numpy as np

CARVED = ("validation", "test")
EXAMPLE = "validation=0.05,test=0.05"


def fractions(value, name: str = "carve") -> dict:
  """{"validation": 0.05, "test": 0.05} from a mapping or "validation=0.05,test=0.05",
  checked: each fraction in (0, 1), their sum below 1; errors name `name`."""
  if isinstance(value, str):
    pairs = []
    for part in filter(None, (p.strip() for p in value.split(","))):
      split, eq, number = part.partition("=")
      if not eq:
        raise ValueError(f"bad {name} entry {part!r}; use SPLIT=FRACTION, e.g. {EXAMPLE}")
      pairs.append((split.strip(), number.strip()))
  elif isinstance(value, Mapping):
    pairs = list(value.items())
  else:
    raise ValueError(f"{name} must be SPLIT=FRACTION pairs, e.g. {EXAMPLE}, got {value!r}")
  out = {}
  for split, number in pairs:
    if split not in CARVED:
      raise ValueError(f"{name} carves {' and '.join(CARVED)} only, got split {split!r}")
    if split in out:
      raise ValueError(f"{name} gives {split} twice; give each split once, e.g. {EXAMPLE}")
    try:
      fraction = math.nan if isinstance(number, bool) else float(number)
    except (TypeError, ValueError):
      fraction = math.nan
    if not 0 < fraction < 1:
      raise ValueError(f"{name} fraction of {split} must be in (0, 1), got {number!r}")
    out[split] = fraction
  if not out:
    raise ValueError(f"{name} needs SPLIT=FRACTION pairs, e.g. {EXAMPLE}, got {value!r}")
  if sum(out.values()) >= 1:
    raise ValueError(f"{name} fractions must sum to less than 1 (train keeps the rest), got "
                     f"{' + '.join(f'{f:g}' for f in out.values())} = {sum(out.values()):g}")
  return {split: out[split] for split in CARVED if split in out}


def sizes(n: int, fractions: dict) -> dict:
  """Examples per split (train last) when `fractions` are carved from n examples."""
  if n < len(fractions) + 1:
    raise ValueError(f"{n} good train example(s) cannot be carved into "
                     f"{', '.join(fractions)} and train: that needs at least "
                     f"{len(fractions) + 1} (one for each split)")
  out = {split: max(1, math.floor(f * n + 0.5)) for split, f in fractions.items()}
  while sum(out.values()) >= n:  # train keeps at least one
    largest = max(out, key=out.get)
    out[largest] -= 1
  return dict(out, train=n - sum(out.values()))


def assign(ids: list, fractions: dict, seed: int) -> dict:
  """Position among the good train examples -> carved split; those not in it stay in train."""
  counts = sizes(len(ids), fractions)
  keys = np.fromiter((int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big")
                      for i in ids), dtype=np.uint64, count=len(ids))
  order = np.argsort(keys, kind="stable")  # ties (repeated ids): file order
  out, start = {}, 0
  for split in fractions:
    out.update(dict.fromkeys(order[start:start + counts[split]].tolist(), split))
    start += counts[split]
  return out
