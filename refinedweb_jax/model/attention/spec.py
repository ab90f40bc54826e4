"""What an attention kind defines: its sizes (Size) and its pattern and kernel (Kind)."""

import dataclasses
import functools
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Size:
  """One size option of the sparse kinds: an AttentionConfig field, a --flag of attention-mask.

  `minimum` bounds ints from below, `choices` lists the allowed strings; `pattern` is
  False for options that change how the kernel runs, not which pairs attend.
  """
  name: str
  default: Any
  help: str
  minimum: int | None = None
  choices: tuple = ()
  pattern: bool = True
  parse: Callable | None = None  # (text, where) -> value, raising on a malformed one

  def check(self, value, where: str):
    """Raises naming the field if `value` is out of range."""
    if self.parse is not None:
      self.parse(value, where)
    if self.minimum is not None and value < self.minimum:
      raise ValueError(f"{label(where, self.name)} must be >= {self.minimum}, got {value}")
    if self.choices and value not in self.choices:
      raise ValueError(f"unknown {label(where, self.name)} {value!r}; allowed: "
                       f"{', '.join(self.choices)}")


def label(where: str, name: str) -> str:
  """How errors name a size: the config key (model.attention.window) or the flag (--window)."""
  return f"--{name.replace('_', '-')}" if where == "--" else f"{where}.{name}"


@dataclasses.dataclass(frozen=True)
class Kind:
  """A sparse attention kind: its sizes, pattern and kernel, in one place (see kinds.py)."""
  name: str
  sizes: tuple  # of Size: the AttentionConfig fields this kind reads
  allowed: Callable  # (cfg, i, j, n, causal, layer) -> bool: query i may see key j (own positions)
  attend: Callable  # (cfg, q, k, v, layout, causal) -> out, computing exactly `allowed`
  check: Callable = lambda cfg, where: None  # relations between sizes
  check_length: Callable = lambda cfg, length, where: None  # sizes that a length cannot hold
  aligned: bool = False  # packed examples must start on a block boundary
  # The decoding cache's phases: a position's keys depend on the example's whole length
  # (so its cache keeps the full length from the start; decode.py).
  length_dependent: bool = False
  # Splash (TPU, splash.py): the kind's mask, its largest block and where it is exact.
  # (cfg, length, causal, layer, n) -> a length-square mask: `allowed` of an n-token example
  splash_mask: Callable | None = None
  splash_block: Callable | None = None  # (cfg) -> largest block (clipped to splash's); None: any
  splash_packed: bool = False  # the same pattern at every offset: exact on packed rows too


@functools.lru_cache(maxsize=256)
def parse_positions(text: str, where: str = "model.attention") -> tuple:
  """'0-15,40' -> (0, 1, ..., 15, 40): comma-separated positions or inclusive ranges."""
  positions = []
  for part in filter(None, (p.strip() for p in str(text).split(","))):
    lo, dash, hi = part.partition("-")
    try:
      first, last = int(lo), int(hi) if dash else int(lo)
    except ValueError:
      first, last = 0, -1
    # The bound keeps a typo like 0-99999999 from building a huge tuple.
    if first < 0 or last < first or last >= 1 << 20:
      raise ValueError(f"bad {label(where, 'global_positions')} {text!r}; allowed: "
                       "comma-separated ints or ranges like '0-15,40' within 0..1048575")
    positions += range(first, last + 1)
  return tuple(sorted(set(positions)))


def format_positions(positions) -> str:
  """(0, 1, 2, 3, 9) -> '0-3,9': the inverse of parse_positions."""
  runs = []
  for p in sorted(set(positions)):
    if runs and p == runs[-1][1] + 1:
      runs[-1][1] = p
    else:
      runs.append([p, p])
  return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
