"""Every config key, declared once by the stage that owns it (one Key per line of its table).

From the tables come the default config (configs.default_config), each key's check
(configs.validate), the resume rule (train/resume.py: which keys a continued run may
change) and the command line's help (`refinedweb config --help`). Adding a key is one
Key in its stage's table: data.py, model.py (or a ModelConfig field), train.py,
sharding.py, distill.py.
"""

import textwrap

import ml_collections
from ml_collections import config_dict

from refinedweb_jax.config_keys import data, distill, model, sharding, train
from refinedweb_jax.config_keys.key import INT_MAX, Key, Section, check_range, field_type, mirrored

SECTIONS = (train.SEED, model.MODEL, data.DATA, data.MIXTURE, data.TASKS, train.OPTIMIZER,
            train.LOSS, train.TRAIN, sharding.MESH, sharding.DISTRIBUTED, distill.DISTILL)


def _tables() -> tuple[dict, dict]:
  """(dotted key -> Key, dotted key -> mirrored dataclass field); a key given twice is an error."""
  keys, fields = {}, {}
  for section in SECTIONS:
    for name, field in mirrored(section.mirror).items() if section.mirror else ():
      fields[section.dotted(name)] = field
    for key in section.keys:
      if key.name in keys or key.name in fields:
        raise TypeError(f"config key {key.name!r} is declared twice; keep one declaration")
      keys[key.name] = key
  return keys, fields


KEYS, MIRRORED = _tables()
BY_NAME = {s.name: s for s in SECTIONS if s.name}


def default_config() -> ml_collections.ConfigDict:
  """Every declared key at its default, every mirrored field unset (None) or its mirror default."""
  config = ml_collections.ConfigDict()
  for section in SECTIONS:
    node = config
    if section.name:
      node = config[section.name] if section.name in config else ml_collections.ConfigDict()
      config[section.name] = node
    for name, field in mirrored(section.mirror).items() if section.mirror else ():
      *path, leaf = name.split(".")
      parent = node
      for part in path:
        if part not in parent:
          parent[part] = ml_collections.ConfigDict()
        parent = parent[part]
      parent[leaf] = config_dict.placeholder(field_type(field))
    for name, value in section.mirror_defaults.items():
      node[name] = value
    for key in section.keys:
      value = key.value()
      node[key.name.rpartition(".")[2]] = (config_dict.placeholder(key.type) if value is None
                                           else value)
  return config


def check(config):
  """Each declared key's type and range or choices, in declaration order; absent keys pass."""
  for dotted, key in KEYS.items():
    node = config
    *path, leaf = dotted.split(".")
    for part in path:
      node = node[part]
    if leaf in node:
      key.check(node[leaf])


def resumable(dotted: str) -> bool:
  """Whether a run continued from its checkpoint may change config.<dotted>: its declaration,
  its dataclass field's metadata, else its section's rule (a key no table declares)."""
  if dotted in KEYS:
    return KEYS[dotted].resume
  if dotted in MIRRORED:
    return bool(MIRRORED[dotted].metadata.get("resumable", False))
  section, dot, _ = dotted.partition(".")
  return bool(dot) and section in BY_NAME and BY_NAME[section].resume


def resumable_summary() -> str:
  """The keys a resumed run may change, in words: 'train.* but init_from, loss.*, ...'."""
  parts = []
  for section in SECTIONS:
    names = [k.name for k in section.keys] + [section.dotted(n) for n in (
        mirrored(section.mirror) if section.mirror else ())]
    may = [n for n in names if resumable(n)]
    fixed = [n.rpartition(".")[2] for n in names if not resumable(n)]
    if may and not fixed:
      parts.append(f"{section.name}.*")
    elif may and len(fixed) < len(may) and section.resume:
      parts.append(f"{section.name}.* but {', '.join(fixed)}")
    else:
      parts += may
  return ", ".join(parts)


def help_lines(width: int = 79) -> list[str]:
  """Every key with its default, what it allows and its help (`refinedweb config --help`)."""
  lines = ["config keys (--config.KEY=VALUE; * marks those a resumed run may change):"]
  for section in SECTIONS:
    for key in section.keys:
      default = key.value()
      shown = "unset" if default is None else repr(default) if key.type is str else default
      lines.append(f"  {key.name}{'*' if key.resume else ''} = {shown}  ({key.describe()})")
      lines += textwrap.wrap(key.help, width, initial_indent=" " * 6,
                             subsequent_indent=" " * 6)
    if section.mirror is not None:
      names = [section.dotted(n) + ("*" if resumable(section.dotted(n)) else "")
               for n in mirrored(section.mirror)]
      defaults = ", ".join(f"{section.dotted(n)} = {v!r}"
                           for n, v in section.mirror_defaults.items())
      text = (f"every {section.mirror.__name__} field, unset (None) = the preset's, "
              f"except {defaults}: " + ", ".join(names))
      lines += textwrap.wrap(text, width, initial_indent="  ", subsequent_indent=" " * 6,
                             break_on_hyphens=False)
  return lines


__all__ = ["INT_MAX", "Key", "Section", "check_range", "KEYS", "MIRRORED", "SECTIONS",
           "default_config", "check", "resumable", "resumable_summary", "help_lines"]
