"""TFDS builder for a task made from the user's own files (TSV, aligned text, JSONL, SQuAD JSON).

Records are {"inputs", "targets", "task", "id"} with id = "<file basename>:<line>"
(SQuAD: "<file basename>:<question id>"); SQuAD records also carry "answers", every
acceptable answer as a JSON list string (json.loads(record["answers"])). Validation and
test may be carved from the train files (`carve`, see own_splits); reading the files is
own_files'.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
from typing import Iterator

from etils import epath
import tensorflow_datasets as tfds

from refinedweb_jax.data import tasks
from refinedweb_jax.data.datasets import own_splits
from refinedweb_jax.data.datasets.builtin import LocalBuilder, StrDataSource
from refinedweb_jax.data.datasets.own_files import READERS, Problem

FORMATS = ("tsv", "text", "jsonl", "squad")
SPLITS = ("train", "validation", "test")
FIELDS = ("inputs", "targets", "task", "id")
MAX_SHOWN = 20  # Problems listed per file in the error; the rest are counted.
MAX_LINE_BYTES = 1 << 20  # A longer line is reported (build's max_line_bytes), not read.
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class OwnConfig(tfds.core.BuilderConfig):
  """One task: format, absolute file paths per split, fields and options."""

  task: str = ""
  format: str = ""
  # split -> tuple of paths (text: tuple of (source, target) pairs).
  files: dict = dataclasses.field(default_factory=dict)
  input_field: str | None = None
  target_field: str | None = None
  columns: tuple = (0, 1)
  prefix: str = ""
  skip_malformed: bool = False
  max_line_bytes: int = MAX_LINE_BYTES
  # split -> fraction of the train examples moved there (own_splits), and its seed.
  carve: dict = dataclasses.field(default_factory=dict)
  carve_seed: int = 0

  @property
  def splits(self) -> tuple:
    return tuple(s for s in SPLITS if s in self.files or s in self.carve)


def _columns(columns) -> tuple[int, int]:
  if isinstance(columns, str):
    columns = columns.split(",")
  try:
    cols = tuple(int(c) for c in columns)
  except (TypeError, ValueError):
    cols = ()
  if len(cols) != 2 or min(cols) < 0 or cols[0] == cols[1]:
    raise ValueError(f"columns must be two different column numbers >= 0 (input, target), "
                     f"e.g. (0, 1) or '1,0', got {columns!r}")
  return cols


def _file_entries(split: str, paths, format: str) -> tuple:
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  if not paths:
    raise ValueError(f"{split} needs at least one file, got {paths!r}")
  out = []
  for entry in paths:
    if format == "text":
      if isinstance(entry, (str, os.PathLike)) or len(entry) != 2:
        raise ValueError(f"format 'text' needs (source, target) pairs per split, e.g. "
                         f"{split}=[('{split}.en.gz', '{split}.de.gz')], got {entry!r}")
      out.append(tuple(os.path.abspath(os.fspath(p)) for p in entry))
    else:
      out.append(os.path.abspath(os.fspath(entry)))
  for path in itertools.chain.from_iterable(e if isinstance(e, tuple) else (e,) for e in out):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{split} file not found: {path}")
  ids = [os.path.basename(e[0] if isinstance(e, tuple) else e) for e in out]
  for name in set(ids):
    if ids.count(name) > 1:
      raise ValueError(f"{split} has two files named {name!r}; record ids are "
                       f"'<basename>:<line>', so rename one: {out}")
  return tuple(out)


def make_config(*, task: str, format: str, train, validation=None, test=None,
                input_field: str | None = None, target_field: str | None = None,
                columns=(0, 1), prefix: str | None = None, skip_malformed: bool = False,
                max_line_bytes: int = MAX_LINE_BYTES, carve=None,
                carve_seed: int = 0) -> OwnConfig:
  """Validates the arguments; the config name is the task plus a hash of everything read."""
  if not isinstance(task, str) or not _TASK_NAME.fullmatch(task):
    raise ValueError(f"task must be letters, digits, '_' or '-' (it names the TFDS config), "
                     f"got {task!r}")
  if format not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
  if not isinstance(max_line_bytes, int) or max_line_bytes < 1:
    raise ValueError(f"max_line_bytes must be an int >= 1, got {max_line_bytes!r}")
  columns = _columns(columns)
  if format == "jsonl":
    if not input_field or not target_field:
      raise ValueError(f"format 'jsonl' needs input_field and target_field (top-level keys), "
                       f"got {input_field!r} and {target_field!r}")
  elif input_field or target_field:
    raise ValueError(f"input_field/target_field apply to format 'jsonl' only, not {format!r}")
  if format != "tsv" and columns != (0, 1):
    raise ValueError(f"columns apply to format 'tsv' only, not {format!r}")
  prefix = tasks.own_prefix(task) if prefix is None else prefix
  files = {split: _file_entries(split, paths, format)
           for split, paths in (("train", train), ("validation", validation), ("test", test))
           if split == "train" or paths is not None}
  carve = own_splits.fractions(carve) if carve else {}
  if type(carve_seed) is not int:
    raise ValueError(f"carve_seed must be an int, got {carve_seed!r}")
  for split in carve:
    if split in files:
      raise ValueError(f"{split} is given twice: carved from train (carve) and as files "
                       f"({split}=...); drop one")

  def stamp(path):
    st = os.stat(path)
    return [path, st.st_size, st.st_mtime_ns]

  # Sizes and mtimes stand in for the contents: an edited file gets a new name,
  # hence a rebuild, without hashing gigabytes on every run.
  key = dict(format=format, prefix=prefix, skip_malformed=bool(skip_malformed),
             files={s: [[stamp(p) for p in e] if isinstance(e, tuple) else stamp(e)
                        for e in entries] for s, entries in files.items()},
             input_field=input_field, target_field=target_field,
             columns=list(columns) if format == "tsv" else None, max_line_bytes=max_line_bytes)
  if carve:  # Only then: tasks prepared without a carve keep their names.
    key.update(carve=carve, carve_seed=carve_seed)
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
  return OwnConfig(
      name=f"{task}_{digest}", description=f"task {task!r} from {format} files {files}",
      task=task, format=format, files=files, input_field=input_field,
      target_field=target_field, columns=columns, prefix=prefix,
      skip_malformed=bool(skip_malformed), max_line_bytes=max_line_bytes, carve=carve,
      carve_seed=carve_seed)


def _records(config: OwnConfig, split: str) -> Iterator[dict | Problem]:
  for entry in config.files[split]:
    yield from READERS[config.format](config, entry)


def _report(config: OwnConfig, problems: list[Problem], skippable: bool = True) -> str:
  """All problems by file; `skippable`: whether skip_malformed would get past them."""
  bad = [p for p in problems if not p.fatal]  # one per bad line (SQuAD: per question)
  whole = [p for p in problems if p.fatal]  # about a whole file or split, always shown
  by_file: dict[str, list[str]] = {}
  for p in bad:
    by_file.setdefault(p.path, []).append(p.text)
  unit = "record(s)" if config.format == "squad" else "line(s)"
  lines = [f"cannot build own task {config.task!r} (format {config.format!r}): "
           + (f"{len(bad)} bad {unit} in {len(by_file)} file(s); " if bad else "")
           + ("fix them" if whole or config.skip_malformed or not skippable
              else "fix them or pass skip_malformed=True to skip the bad lines") + ":"]
  for path, texts in by_file.items():
    lines += [f"  {t}" for t in texts[:MAX_SHOWN]]
    if len(texts) > MAX_SHOWN:
      lines.append(f"  ... and {len(texts) - MAX_SHOWN} more in {path}")
  lines += [f"  {p.text}" for p in whole]
  return "\n".join(lines)


class RefinedWebOwn(LocalBuilder):
  """A text-to-text task read from local files described by an OwnConfig."""

  name = "refinedweb_own"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    fields = FIELDS + (("answers",) if self.builder_config.format == "squad" else ())
    return tfds.core.DatasetInfo(
        builder=self,
        description="A text-to-text task read from the user's files.",
        features=tfds.features.FeaturesDict({f: tfds.features.Text() for f in fields}),
        disable_shuffling=True,  # Keeps file order: record i is the i-th good line.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is local.
    config = self.builder_config
    if not isinstance(config, OwnConfig):
      raise ValueError(f"{self.name} needs an OwnConfig from make_config(), got {config!r}")
    # A full checking pass before anything is written, so every problem of every
    # file is reported at once and a bad build fails before the slow part.
    problems, skipped, train_ids = [], {}, []
    for split in config.files:
      good, fatal = 0, False
      for item in _records(config, split):
        if isinstance(item, Problem):
          problems.append(item)
          skipped.setdefault(split, []).append(item.text)
          fatal = fatal or item.fatal
        else:
          good += 1
          if split == "train" and config.carve:
            train_ids.append(item["id"])
      if not good and not fatal:  # TFDS cannot write an empty split.
        files = [f for e in config.files[split] for f in (e if isinstance(e, tuple) else (e,))]
        problems.append(Problem(f"{files[0]}:1: split {split!r} has no usable records "
                                f"(files: {', '.join(files)})", files[0], fatal=True))
    if any(p.fatal for p in problems) or (problems and not config.skip_malformed):
      raise ValueError(_report(config, problems))
    for split, texts in skipped.items():
      _log.warning("own task %r: skipped %d malformed line(s) in split %r (skip_malformed=True)"
                   "; first: %s", config.task, len(texts), split, texts[0])
    try:
      self._carved = (own_splits.assign(train_ids, config.carve, config.carve_seed)
                      if config.carve else {})
    except ValueError as e:
      raise ValueError(f"cannot build own task {config.task!r}: {e}; carve fewer splits "
                       f"or give more train examples") from None
    return {split: self._generate_examples(split=split) for split in config.splits}

  def _generate_examples(self, split: str):
    config = self.builder_config
    carved = split in config.carve or (split == "train" and config.carve)
    good = -1
    for example in _records(config, "train" if carved else split):
      if not isinstance(example, Problem):
        good += 1
        if not carved or self._carved.get(good, "train") == split:
          yield example["id"], example


def _remove_leftovers(config_dir: epath.Path, incomplete_before: set, created: list) -> None:
  for tmp in config_dir.glob("incomplete.*") if config_dir.exists() else ():
    if tmp not in incomplete_before:
      tmp.rmtree(missing_ok=True)
  for path in reversed(created):  # Deepest first; only directories this build made.
    if path.exists() and not any(path.iterdir()):
      path.rmdir()


def build(data_dir: str, *, task: str, format: str, train, validation=None, test=None,
          input_field: str | None = None, target_field: str | None = None, columns=(0, 1),
          prefix: str | None = None, skip_malformed: bool = False,
          max_line_bytes: int = MAX_LINE_BYTES, carve=None,
          carve_seed: int = 0) -> RefinedWebOwn:
  """Builds the task under data_dir unless it is already there; returns the builder.

  Paths are lists (format 'text': of (source, target) pairs); prefix defaults to
  "<task>: ". `carve` ({"validation": 0.05, "test": 0.05} or "validation=0.05,...")
  moves those fractions of the train examples into those splits, chosen by `carve_seed`
  (own_splits). On failure nothing is left behind in data_dir.
  """
  config = make_config(task=task, format=format, train=train, validation=validation, test=test,
                       input_field=input_field, target_field=target_field, columns=columns,
                       prefix=prefix, skip_malformed=skip_malformed,
                       max_line_bytes=max_line_bytes, carve=carve, carve_seed=carve_seed)
  builder = RefinedWebOwn(data_dir=data_dir, config=config)
  if builder.is_prepared():
    return builder
  root = epath.Path(builder.data_dir_root)
  config_dir = root / builder.name / config.name
  chain = [root, root / builder.name, config_dir, root / "downloads",
           root / "downloads" / "extracted", root / "downloads" / "manual"]
  created = [p for p in chain if not p.exists()]
  incomplete_before = set(config_dir.glob("incomplete.*")) if config_dir.exists() else set()
  try:
    builder.download_and_prepare()
  except BaseException:
    # TFDS removes its incomplete.* directory but not the parents it made for this
    # config, which would otherwise pile up as empty directories on every failure.
    _remove_leftovers(config_dir, incomplete_before, created)
    raise
  return builder


def read_examples(*, task: str, format: str, files, input_field: str | None = None,
                  target_field: str | None = None, columns=(0, 1), prefix: str = "",
                  max_line_bytes: int = MAX_LINE_BYTES) -> list[dict]:
  """Every example of some files (one split, nothing built), checked as a build checks:
  every problem is reported at once, as `file:line: problem`."""
  config = make_config(task=task, format=format, train=files, input_field=input_field,
                       target_field=target_field, columns=columns, prefix=prefix,
                       max_line_bytes=max_line_bytes)
  examples, problems = [], []
  for item in _records(config, "train"):
    (problems if isinstance(item, Problem) else examples).append(item)
  if problems:
    raise ValueError(_report(config, problems, skippable=False))
  if not examples:
    raise ValueError(f"{', '.join(map(str, files))}: no examples")
  return examples


def data_source(data_dir: str, split: str, **settings) -> StrDataSource:
  """Random-access source of one split; settings are build()'s, and it builds if missing."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  builder = build(data_dir, **settings)
  if split not in builder.builder_config.splits:
    raise ValueError(f"own task {builder.builder_config.task!r} has no {split!r} split; "
                     f"it has {builder.builder_config.splits}")
  return StrDataSource(builder.as_data_source(split))
