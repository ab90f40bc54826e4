"""TFDS builder for a task made from the user's own files (TSV, aligned text, JSONL, SQuAD JSON).

Records are {"inputs", "targets", "task", "id"} with id = "<file basename>:<line>"
(SQuAD: "<file basename>:<question id>"); SQuAD records also carry "answers", every
acceptable answer as a JSON list string (json.loads(record["answers"])).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
import json
import logging
import os
import re
import zlib
from typing import Any, Iterator, NamedTuple

from etils import epath
import tensorflow_datasets as tfds

from refinedweb_jax.data import tasks
from refinedweb_jax.data.datasets.builtin import LocalBuilder, StrDataSource

FORMATS = ("tsv", "text", "jsonl", "squad")
SPLITS = ("train", "validation", "test")
FIELDS = ("inputs", "targets", "task", "id")
MAX_SHOWN = 20  # Problems listed per file in the error; the rest are counted.
MAX_LINE_BYTES = 1 << 20  # A longer line is reported (build's max_line_bytes), not read.
_BOM = b"\xef\xbb\xbf"
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


class _Problem(NamedTuple):
  text: str  # "path:line: what is wrong"
  path: str
  fatal: bool = False  # Not skippable: the file as a whole is unusable.


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
                max_line_bytes: int = MAX_LINE_BYTES) -> OwnConfig:
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
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
  return OwnConfig(
      name=f"{task}_{digest}", description=f"task {task!r} from {format} files {files}",
      task=task, format=format, files=files, input_field=input_field,
      target_field=target_field, columns=columns, prefix=prefix,
      skip_malformed=bool(skip_malformed), max_line_bytes=max_line_bytes)


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
  """(1-based line number, bytes without the line end); .gz is decompressed, a BOM dropped."""
  opener = gzip.open if path.endswith(".gz") else open
  n = 0
  try:
    with opener(path, "rb") as f:
      # Bytes, not text mode: text mode would split on U+2028, U+0085 etc. inside
      # sentences and break the alignment of parallel files.
      for n, raw in enumerate(f, 1):
        if n == 1 and raw.startswith(_BOM):  # a UTF-8 byte-order mark is no text
          raw = raw[len(_BOM):]
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        yield n, raw[:-1] if raw.endswith(b"\r") else raw
  except (OSError, EOFError, zlib.error) as e:
    raise ValueError(f"{path}:{n + 1}: cannot read the file: {e}") from e


def _decode(raw: bytes, path: str, line: int, max_bytes: int | None = None) -> str | _Problem:
  """A line's text, or the problem with it: too long, a NUL byte, invalid UTF-8."""
  if max_bytes is not None and len(raw) > max_bytes:
    return _Problem(f"{path}:{line}: line of {len(raw)} bytes, more than max_line_bytes="
                    f"{max_bytes} (--max-line-bytes)", path)
  if b"\x00" in raw:
    at = raw.index(b"\x00") + 1
    return _Problem(f"{path}:{line}: NUL byte at byte {at} of the line (a binary file?)", path)
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    return _Problem(f"{path}:{line}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at byte "
                    f"{e.start + 1} of the line)", path)


def _example(config: OwnConfig, where: tuple, inputs: str, targets: str,
             record_id: str, **extra) -> dict | _Problem:
  (in_path, in_loc), (out_path, out_loc) = where
  if not inputs.strip():
    return _Problem(f"{in_path}:{in_loc}: empty input", in_path)
  if not targets.strip():
    return _Problem(f"{out_path}:{out_loc}: empty target", out_path)
  return dict(inputs=config.prefix + inputs, targets=targets, task=config.task,
              id=record_id, **extra)


def _read_tsv(config: OwnConfig, path: str):
  need = max(config.columns) + 1
  name = os.path.basename(path)
  for n, raw in _lines(path):
    text = _decode(raw, path, n, config.max_line_bytes)
    if isinstance(text, _Problem):
      yield text
    elif text.strip():  # Blank lines (e.g. at the end of the file) are skipped.
      cells = text.split("\t")
      if len(cells) != need:
        yield _Problem(f"{path}:{n}: {len(cells)} columns, expected {need} "
                       f"(columns={config.columns})", path)
        continue
      at = (path, n)
      yield _example(config, (at, at), cells[config.columns[0]], cells[config.columns[1]],
                     f"{name}:{n}")


def _read_text(config: OwnConfig, pair: tuple):
  src, tgt = pair
  name = os.path.basename(src)
  src_lines, tgt_lines = _lines(src), _lines(tgt)
  n = 0
  for n, (a, b) in enumerate(itertools.zip_longest(src_lines, tgt_lines), 1):
    if a is None or b is None:
      n_src = n - 1 + (a is not None) + sum(1 for _ in src_lines)
      n_tgt = n - 1 + (b is not None) + sum(1 for _ in tgt_lines)
      short = src if a is None else tgt
      yield _Problem(f"{short}:{n}: {src} has {n_src} lines but {tgt} has {n_tgt}; "
                     f"aligned files need equal line counts", short, fatal=True)
      return
    limit = config.max_line_bytes
    source, target = _decode(a[1], src, n, limit), _decode(b[1], tgt, n, limit)
    bad = [x for x in (source, target) if isinstance(x, _Problem)]
    yield from bad
    if not bad:
      yield _example(config, ((src, n), (tgt, n)), source, target, f"{name}:{n}")


def _read_jsonl(config: OwnConfig, path: str):
  name = os.path.basename(path)
  for n, raw in _lines(path):
    text = _decode(raw, path, n, config.max_line_bytes)
    if isinstance(text, _Problem):
      yield text
      continue
    if not text.strip():  # Blank lines (e.g. at the end of the file) are skipped.
      continue
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      yield _Problem(f"{path}:{n}: invalid JSON: {e.msg} (column {e.colno})", path)
      continue
    if not isinstance(obj, dict):
      yield _Problem(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}", path)
      continue
    values = []
    for field in (config.input_field, config.target_field):
      if field not in obj:
        values.append(_Problem(f"{path}:{n}: no field {field!r} (has: "
                               f"{', '.join(sorted(obj)) or 'nothing'})", path))
      elif not isinstance(obj[field], str):
        values.append(_Problem(f"{path}:{n}: field {field!r} is "
                               f"{type(obj[field]).__name__}, expected a string", path))
      else:
        values.append(obj[field])
    bad = [v for v in values if isinstance(v, _Problem)]
    yield from bad
    if not bad:
      yield _example(config, ((path, n), (path, n)), values[0], values[1], f"{name}:{n}")


def _read_squad(config: OwnConfig, path: str):
  name = os.path.basename(path)
  data = b"\n".join(raw for _, raw in _lines(path))
  try:
    text = data.decode("utf-8")
    squad = json.loads(text)
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    yield _Problem(f"{path}:{line}: invalid UTF-8 (byte 0x{data[e.start]:02x})", path, True)
    return
  except json.JSONDecodeError as e:
    yield _Problem(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})", path, True)
    return
  if not isinstance(squad, dict) or not isinstance(squad.get("data"), list):
    yield _Problem(f"{path}:1: not SQuAD v1.1 JSON (no top-level 'data' list)", path, True)
    return
  # Parsed JSON has no line numbers, so problems name the JSON path instead.
  for i, article in enumerate(squad["data"]):
    paragraphs = _list(article, "paragraphs", f"{path}:data[{i}]", path)
    if isinstance(paragraphs, _Problem):
      yield paragraphs
      continue
    for j, paragraph in enumerate(paragraphs):
      context = _get(paragraph, "context", "")
      qas = _list(paragraph, "qas", f"{path}:data[{i}].paragraphs[{j}]", path)
      if isinstance(qas, _Problem):
        yield qas
        continue
      for k, qa in enumerate(qas):
        loc = f"data[{i}].paragraphs[{j}].qas[{k}]"
        question = _get(qa, "question", "")
        answer_list = _list(qa, "answers", f"{path}:{loc}", path)
        if isinstance(answer_list, _Problem):
          yield answer_list
          continue
        answers = [_get(a, "text", None) for a in answer_list]
        if not answers or not all(isinstance(a, str) for a in answers):
          yield _Problem(f"{path}:{loc}: no answers (answers[*].text strings)", path)
        elif not (isinstance(question, str) and question.strip()
                  and isinstance(context, str) and context.strip()):
          yield _Problem(f"{path}:{loc}: empty input (question or paragraph context)", path)
        else:
          yield _example(config, ((path, loc), (path, f"{loc}.answers[0]")),
                         tasks.qa_input(question, context), answers[0],
                         f"{name}:{_get(qa, 'id', k)}",
                         answers=json.dumps(answers, ensure_ascii=False))


def _get(obj: Any, key: str, default: Any = ()) -> Any:
  return obj.get(key, default) if isinstance(obj, dict) else default


def _list(obj: Any, key: str, where: str, path: str) -> list | _Problem:
  """obj[key] when it is a list (missing: empty), else the problem naming where it is."""
  if not isinstance(obj, dict):
    return _Problem(f"{where}: expected a JSON object, got {type(obj).__name__}", path)
  value = obj.get(key, [])
  if not isinstance(value, list):
    return _Problem(f"{where}.{key}: expected a list, got {type(value).__name__}", path)
  return value


_READERS = {"tsv": _read_tsv, "text": _read_text, "jsonl": _read_jsonl, "squad": _read_squad}


def _records(config: OwnConfig, split: str) -> Iterator[dict | _Problem]:
  for entry in config.files[split]:
    yield from _READERS[config.format](config, entry)


def _report(config: OwnConfig, problems: list[_Problem], skippable: bool = True) -> str:
  """All problems by file; `skippable`: whether skip_malformed would get past them."""
  by_file: dict[str, list[str]] = {}
  for p in problems:
    by_file.setdefault(p.path, []).append(p.text)
  fatal = any(p.fatal for p in problems)
  lines = [f"cannot build own task {config.task!r} (format {config.format!r}): "
           f"{len(problems)} problem(s) in {len(by_file)} file(s); "
           + ("fix them" if fatal or config.skip_malformed or not skippable
              else "fix them or pass skip_malformed=True to skip the bad lines") + ":"]
  for path, texts in by_file.items():
    lines += [f"  {t}" for t in texts[:MAX_SHOWN]]
    if len(texts) > MAX_SHOWN:
      lines.append(f"  ... and {len(texts) - MAX_SHOWN} more in {path}")
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
    problems, skipped = [], {}
    for split in config.files:
      good, fatal = 0, False
      for item in _records(config, split):
        if isinstance(item, _Problem):
          problems.append(item)
          skipped.setdefault(split, []).append(item.text)
          fatal = fatal or item.fatal
        else:
          good += 1
      if not good and not fatal:  # TFDS cannot write an empty split.
        files = [f for e in config.files[split] for f in (e if isinstance(e, tuple) else (e,))]
        problems.append(_Problem(f"{files[0]}:1: split {split!r} has no usable records "
                                 f"(files: {', '.join(files)})", files[0], fatal=True))
    if any(p.fatal for p in problems) or (problems and not config.skip_malformed):
      raise ValueError(_report(config, problems))
    for split, texts in skipped.items():
      _log.warning("own task %r: skipped %d malformed line(s) in split %r (skip_malformed=True)"
                   "; first: %s", config.task, len(texts), split, texts[0])
    return {split: self._generate_examples(split=split) for split in config.files}

  def _generate_examples(self, split: str):
    for example in _records(self.builder_config, split):
      if not isinstance(example, _Problem):
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
          max_line_bytes: int = MAX_LINE_BYTES) -> RefinedWebOwn:
  """Builds the task under data_dir unless it is already there; returns the builder.

  Paths are lists (format 'text': of (source, target) pairs); prefix defaults to
  "<task>: ". On failure nothing is left behind in data_dir.
  """
  config = make_config(task=task, format=format, train=train, validation=validation, test=test,
                       input_field=input_field, target_field=target_field, columns=columns,
                       prefix=prefix, skip_malformed=skip_malformed,
                       max_line_bytes=max_line_bytes)
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
    (problems if isinstance(item, _Problem) else examples).append(item)
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
  if split not in builder.builder_config.files:
    raise ValueError(f"own task {builder.builder_config.task!r} has no {split!r} split; "
                     f"it has {tuple(builder.builder_config.files)}")
  return StrDataSource(builder.as_data_source(split))
