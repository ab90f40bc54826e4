"""One config key's declaration (Key) and a stage's table of them (Section)."""

import dataclasses
from typing import Any, Callable

INT_MAX = 2**31 - 1  # every integer setting is at most this (steps, sizes and seeds are int32)
UNSET = object()  # a Key given no default
TYPES = (bool, int, float, str, list)


@dataclasses.dataclass(frozen=True)
class Key:
  """A config key: its default, type, allowed values, help and whether a resumed run may change it.

  `allowed` is an interval of numbers ("[0, 1)", "(0, inf)"), a tuple of choices, or a
  function (value, "config.KEY") that raises for a value neither can describe; every
  number has one. `default` None leaves the key unset (its value follows other keys) and
  needs `type`; a callable default is called by each default_config() (e.g. an
  environment variable's value). `resume`: whether a run continued from its checkpoint may
  change the key (None: its section's rule). A text key without choices gives an `example`.
  Its Section checks the declaration (declared) when the table is built, at import, and
  names it by its dotted key ("data.num_train").
  """
  name: str
  default: Any = UNSET
  help: str = ""
  allowed: Any = None
  resume: bool | None = None
  type: Any = None  # int, float, str, bool or list (default: the default's)
  example: Any = None

  def declared(self, dotted: str, resume: bool) -> "Key":
    """This key checked as config.<dotted>, its type and resume rule filled in; a key
    without a default, help or range is an error naming it."""
    where = f"config key {dotted!r}"
    if self.default is UNSET:
      raise TypeError(f"{where} declares no default; give one (None: unset, with type=...)")
    kind = self.type
    if kind is None:
      value = self.default() if callable(self.default) else self.default
      if value is None:
        raise TypeError(f"{where} has the default None and no type=; give its type")
      kind = type(value)
    if kind not in TYPES:
      raise TypeError(f"{where} has the type {kind.__name__}; allowed: "
                      f"{', '.join(t.__name__ for t in TYPES)}")
    if not self.help:
      raise TypeError(f"{where} declares no help text; say what it sets")
    if isinstance(self.allowed, str):
      _interval(self.allowed, where)
    elif self.allowed is None and kind in (int, float):
      raise TypeError(f"{where} is a number ({kind.__name__}) declared without a range; "
                      "give allowed='[0, inf)' or the like")
    elif self.allowed is None and kind is str and self.example is None:
      raise TypeError(f"{where} is text without choices; give an example=")
    return dataclasses.replace(self, name=dotted, type=kind,
                               resume=resume if self.resume is None else self.resume)

  @property
  def interval(self) -> str | None:
    """The allowed interval ('[0, 1)'), or None."""
    return self.allowed if isinstance(self.allowed, str) else None

  @property
  def choices(self) -> tuple:
    """The allowed values, or () when any value of the type may do."""
    return tuple(self.allowed) if isinstance(self.allowed, (tuple, list, dict)) else ()

  def value(self):
    """The default as a fresh value (a callable default called, a list copied)."""
    value = self.default() if callable(self.default) else self.default
    return list(value) if isinstance(value, list) else value

  def check(self, value):
    """Raises naming config.<key> unless value has the key's type and lies in its range."""
    if value is None and self.value() is None:
      return  # unset: a default that follows other keys
    if not _has_type(value, self.type):
      raise ValueError(f"config.{self.name} must be {_a(self.type)}, got {value!r}")
    if self.interval:
      check_range(self.name, value, self.interval)
    elif self.choices and value not in self.choices:
      raise ValueError(f"unknown config.{self.name} {value!r}; allowed: "
                       f"{', '.join(map(str, self.choices))}")
    elif callable(self.allowed):
      self.allowed(value, f"config.{self.name}")

  def describe(self) -> str:
    """'int > 0', "one of: adamw, adafactor", ...: what the help says is allowed."""
    if self.interval:
      low, high = self.interval[1:-1].split(",")
      if high.strip() == "inf":
        return f"{self.type.__name__} {'>=' if self.interval[0] == '[' else '>'} {low}"
      return f"{self.type.__name__} in {self.interval}"
    if self.choices:
      return "one of: " + ", ".join(map(str, self.choices))
    text = self.type.__name__
    if callable(self.allowed) and self.allowed.__doc__:
      doc = self.allowed.__doc__.strip().splitlines()[0].rstrip(".")
      text += f"; {doc[0].lower()}{doc[1:]}"
    return text + (f", e.g. {self.example}" if self.example is not None else "")


@dataclasses.dataclass(frozen=True)
class Section:
  """The keys one stage owns: config.<name>.* ('' = top-level keys).

  `resume` is the rule of its keys that give none (and of keys it does not declare).
  `mirror` is a dataclass whose fields are keys too, unset by default (its own check
  validates them; a field with metadata {"resumable": True} may change on resume);
  `mirror_defaults` gives some of them a value.
  """
  name: str
  keys: tuple
  resume: bool = False
  mirror: Any = None
  mirror_defaults: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    names = [k.name for k in self.keys]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
      raise TypeError(f"config keys {', '.join(self.dotted(n) for n in twice)} are declared "
                      "twice; keep one declaration")
    object.__setattr__(self, "keys", tuple(k.declared(self.dotted(k.name), self.resume)
                                           for k in self.keys))

  def dotted(self, name: str) -> str:
    """config.<section>.<name>'s dotted key."""
    return f"{self.name}.{name}" if self.name else name


def mirrored(cls, prefix: str = "") -> dict:
  """Dotted field name -> dataclass field of every field of `cls` (nested dataclasses too)."""
  out = {}
  for field in dataclasses.fields(cls):
    nested = field.default_factory if field.default_factory is not dataclasses.MISSING else None
    if nested is not None and dataclasses.is_dataclass(nested):
      out.update(mirrored(nested, f"{prefix}{field.name}."))
    else:
      out[prefix + field.name] = field
  return out


def field_type(field) -> type:
  """A dataclass field's type as a ConfigDict placeholder type (object when not plain)."""
  kinds = {"int": int, "float": float, "str": str, "bool": bool}
  return kinds.get(field.type if isinstance(field.type, str) else field.type.__name__, object)


def check_range(key: str, value, interval: str):
  """Raises naming config.<key> unless value lies in the interval ('[0, 1)', '(0, inf)', ...)."""
  low, high = (float(x) for x in interval[1:-1].split(","))
  ok = (value >= low if interval[0] == "[" else value > low) and (
      value <= high if interval[-1] == "]" else value < high)
  if not ok:
    if high == float("inf"):
      allowed = f"{'>=' if interval[0] == '[' else '>'} {low:g}"
    else:
      allowed = f"in {interval}"
    raise ValueError(f"config.{key} must be {allowed}, got {value}")


def _interval(text: str, where: str):
  """Raises unless text is an interval like '[0, 1)' or '(0, inf)'."""
  try:
    low, high = (float(x) for x in text[1:-1].split(","))
    ok = text[0] in "[(" and text[-1] in "])" and low <= high
  except ValueError:
    ok = False
  if not ok:
    raise TypeError(f"{where} has the range {text!r}; give one like '[0, 1)' or '(0, inf)'")


def _has_type(value, kind) -> bool:
  if kind is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if kind is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if kind is list:
    return isinstance(value, (list, tuple))
  return isinstance(value, kind)


def _a(kind) -> str:
  return {int: "an int", list: "a list"}.get(kind, f"a {kind.__name__}")
