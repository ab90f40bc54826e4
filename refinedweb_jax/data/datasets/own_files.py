"""Reading the user's files for own_data: lines, records and the problems found in them.

Readers take an own_data.OwnConfig and yield, in file order, a record dict per good
line (SQuAD: per question) or a Problem naming where the bad one is.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import zlib
from typing import Any, Iterator, NamedTuple

from refinedweb_jax.data import tasks

_BOM = b"\xef\xbb\xbf"


class Problem(NamedTuple):
  text: str  # "path:line: what is wrong"
  path: str
  fatal: bool = False  # Not skippable: the file as a whole is unusable.


class _Long(bytes):
  """The first bytes of a line longer than the reader keeps; `length` is the whole line's."""
  length: int = 0


def _bounded(f, limit: int | None) -> Iterator[bytes]:
  """The lines of a binary file; one longer than `limit` bytes is cut to limit + 1 (a _Long),
  the rest of it skipped in pieces, so no line is held whole (a file with no line ends)."""
  while True:
    raw = f.readline() if limit is None else f.readline(limit + 1)
    if not raw:
      return
    if limit is None or len(raw) <= limit or raw.endswith(b"\n"):
      yield raw
      continue
    length = len(raw)
    while True:
      more = f.readline(1 << 16)
      length += len(more) - more.endswith(b"\n")
      if not more or more.endswith(b"\n"):
        break
    line = _Long(raw)
    line.length = length
    yield line


def _lines(path: str, limit: int | None = None) -> Iterator[tuple[int, bytes]]:
  """(1-based line number, bytes without the line end); .gz is decompressed, a BOM dropped;
  a line longer than `limit` bytes comes cut (a _Long, reported by _decode)."""
  opener = gzip.open if path.endswith(".gz") else open
  n = 0
  try:
    with opener(path, "rb") as f:
      # Bytes, not text mode: text mode would split on U+2028, U+0085 etc. inside
      # sentences and break the alignment of parallel files.
      for n, raw in enumerate(_bounded(f, limit), 1):
        if isinstance(raw, _Long):
          yield n, raw
          continue
        if n == 1 and raw.startswith(_BOM):  # a UTF-8 byte-order mark is no text
          raw = raw[len(_BOM):]
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        yield n, raw[:-1] if raw.endswith(b"\r") else raw
  except (OSError, EOFError, zlib.error) as e:
    raise ValueError(f"{path}:{n + 1}: cannot read the file: {e}") from e


def _decode(raw: bytes, path: str, line: int, max_bytes: int | None = None) -> str | Problem:
  """A line's text, or the problem with it: too long, a NUL byte, invalid UTF-8."""
  if max_bytes is not None and len(raw) > max_bytes:
    return Problem(f"{path}:{line}: line of {getattr(raw, 'length', len(raw))} bytes, more "
                   f"than max_line_bytes={max_bytes} (--max-line-bytes)", path)
  if b"\x00" in raw:
    at = raw.index(b"\x00") + 1
    return Problem(f"{path}:{line}: NUL byte at byte {at} of the line (a binary file?)", path)
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    return Problem(f"{path}:{line}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at byte "
                   f"{e.start + 1} of the line)", path)


def _example(config, where: tuple, inputs: str, targets: str, record_id: str,
             **extra) -> dict | Problem:
  (in_path, in_loc), (out_path, out_loc) = where
  if not inputs.strip():
    return Problem(f"{in_path}:{in_loc}: empty input", in_path)
  if not targets.strip():
    return Problem(f"{out_path}:{out_loc}: empty target", out_path)
  return dict(inputs=config.prefix + inputs, targets=targets, task=config.task,
              id=record_id, **extra)


def _read_tsv(config, path: str):
  need = max(config.columns) + 1
  name = os.path.basename(path)
  for n, raw in _lines(path, config.max_line_bytes):
    text = _decode(raw, path, n, config.max_line_bytes)
    if isinstance(text, Problem):
      yield text
    elif text.strip():  # Blank lines (e.g. at the end of the file) are skipped.
      cells = text.split("\t")
      if len(cells) < need:  # Columns past the selected ones (e.g. attribution) are ignored.
        yield Problem(f"{path}:{n}: {len(cells)} column(s), expected at least {need} "
                      f"(columns={config.columns})", path)
        continue
      at = (path, n)
      yield _example(config, (at, at), cells[config.columns[0]], cells[config.columns[1]],
                     f"{name}:{n}")


def _read_text(config, pair: tuple):
  src, tgt = pair
  name = os.path.basename(src)
  src_lines = _lines(src, config.max_line_bytes)
  tgt_lines = _lines(tgt, config.max_line_bytes)
  n = 0
  for n, (a, b) in enumerate(itertools.zip_longest(src_lines, tgt_lines), 1):
    if a is None or b is None:
      n_src = n - 1 + (a is not None) + sum(1 for _ in src_lines)
      n_tgt = n - 1 + (b is not None) + sum(1 for _ in tgt_lines)
      short = src if a is None else tgt
      yield Problem(f"{short}:{n}: {src} has {n_src} lines but {tgt} has {n_tgt}; "
                    f"aligned files need equal line counts", short, fatal=True)
      return
    limit = config.max_line_bytes
    source, target = _decode(a[1], src, n, limit), _decode(b[1], tgt, n, limit)
    bad = [x for x in (source, target) if isinstance(x, Problem)]
    if bad:
      yield _one(bad)
    else:
      yield _example(config, ((src, n), (tgt, n)), source, target, f"{name}:{n}")


def _read_jsonl(config, path: str):
  name = os.path.basename(path)
  for n, raw in _lines(path, config.max_line_bytes):
    text = _decode(raw, path, n, config.max_line_bytes)
    if isinstance(text, Problem):
      yield text
      continue
    if not text.strip():  # Blank lines (e.g. at the end of the file) are skipped.
      continue
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      yield Problem(f"{path}:{n}: invalid JSON: {e.msg} (column {e.colno})", path)
      continue
    except RecursionError:
      yield Problem(f"{path}:{n}: JSON nested too deeply to read", path)
      continue
    if not isinstance(obj, dict):
      yield Problem(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}", path)
      continue
    values = []
    for field in (config.input_field, config.target_field):
      if field not in obj:
        values.append(Problem(f"{path}:{n}: no field {field!r} (has: "
                              f"{', '.join(sorted(obj)) or 'nothing'})", path))
      elif not isinstance(obj[field], str):
        values.append(Problem(f"{path}:{n}: field {field!r} is "
                              f"{type(obj[field]).__name__}, expected a string", path))
      else:
        values.append(obj[field])
    bad = [v for v in values if isinstance(v, Problem)]
    if bad:
      yield _one(bad)
    else:
      yield _example(config, ((path, n), (path, n)), values[0], values[1], f"{name}:{n}")


def _read_squad(config, path: str):
  name = os.path.basename(path)
  data = b"\n".join(raw for _, raw in _lines(path))
  try:
    text = data.decode("utf-8")
    squad = json.loads(text)
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    yield Problem(f"{path}:{line}: invalid UTF-8 (byte 0x{data[e.start]:02x})", path, True)
    return
  except json.JSONDecodeError as e:
    yield Problem(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})", path, True)
    return
  except RecursionError:  # a bomb of nested brackets, not SQuAD
    yield Problem(f"{path}:1: JSON nested too deeply to read (not SQuAD v1.1)", path, True)
    return
  if not isinstance(squad, dict) or not isinstance(squad.get("data"), list):
    yield Problem(f"{path}:1: not SQuAD v1.1 JSON (no top-level 'data' list)", path, True)
    return
  # Parsed JSON has no line numbers, so problems name the JSON path instead.
  for i, article in enumerate(squad["data"]):
    paragraphs = _list(article, "paragraphs", f"{path}:data[{i}]", path)
    if isinstance(paragraphs, Problem):
      yield paragraphs
      continue
    for j, paragraph in enumerate(paragraphs):
      context = _get(paragraph, "context", "")
      qas = _list(paragraph, "qas", f"{path}:data[{i}].paragraphs[{j}]", path)
      if isinstance(qas, Problem):
        yield qas
        continue
      for k, qa in enumerate(qas):
        loc = f"data[{i}].paragraphs[{j}].qas[{k}]"
        question = _get(qa, "question", "")
        answer_list = _list(qa, "answers", f"{path}:{loc}", path)
        if isinstance(answer_list, Problem):
          yield answer_list
          continue
        answers = [_get(a, "text", None) for a in answer_list]
        if not answers or not all(isinstance(a, str) for a in answers):
          yield Problem(f"{path}:{loc}: no answers (answers[*].text strings)", path)
        elif not (isinstance(question, str) and question.strip()
                  and isinstance(context, str) and context.strip()):
          yield Problem(f"{path}:{loc}: empty input (question or paragraph context)", path)
        else:
          yield _example(config, ((path, loc), (path, f"{loc}.answers[0]")),
                         tasks.qa_input(question, context), answers[0],
                         f"{name}:{_get(qa, 'id', k)}",
                         answers=json.dumps(answers, ensure_ascii=False))


def _one(problems: list) -> Problem:
  """One problem per line, however many of its fields are bad (counts are of bad lines)."""
  first = problems[0]
  where = first.text[:first.text.index(": ", len(first.path)) + 2]  # "path:line: "
  rest = [p.text.removeprefix(where) for p in problems[1:]]
  return first._replace(text="; ".join([first.text] + rest))


def _get(obj: Any, key: str, default: Any = ()) -> Any:
  return obj.get(key, default) if isinstance(obj, dict) else default


def _list(obj: Any, key: str, where: str, path: str) -> list | Problem:
  """obj[key] when it is a list (missing: empty), else the problem naming where it is."""
  if not isinstance(obj, dict):
    return Problem(f"{where}: expected a JSON object, got {type(obj).__name__}", path)
  value = obj.get(key, [])
  if not isinstance(value, list):
    return Problem(f"{where}.{key}: expected a list, got {type(value).__name__}", path)
  return value


READERS = {"tsv": _read_tsv, "text": _read_text, "jsonl": _read_jsonl, "squad": _read_squad}
