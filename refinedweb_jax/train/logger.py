"""Metric sinks: metrics.jsonl, TensorBoard events and a progress bar."""

import datetime
import json
import os
import sys

import numpy as np
import tqdm
from etils import epath


def is_remote(path: str) -> bool:
  """Whether a path is a URL (gs://bucket/run) rather than a local folder."""
  return "://" in str(path)


def warn(message: str):
  """One warning line on stderr."""
  print(f"refinedweb: warning: {message}", file=sys.stderr, flush=True)


def heal(path: str):
  """Repairs a jsonl log whose last line was cut (a crash or a full disk mid-write): the
  partial line moves to <path>.partial-<time> and the file ends at its last whole row."""
  target = epath.Path(path)
  if not is_remote(path):  # the common case costs one byte's read
    try:
      with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0 or (f.seek(-1, os.SEEK_END), f.read(1))[1] == b"\n":
          return
    except FileNotFoundError:
      return
  elif not target.exists():
    return
  data = target.read_bytes()
  if not data or data.endswith(b"\n"):
    return
  cut = data.rfind(b"\n") + 1
  tail = data[cut:]
  try:
    json.loads(tail)
    whole = True
  except ValueError:
    whole = False
  if whole:  # only the newline is missing
    _replace_bytes(path, data + b"\n", keep=len(data))
    return
  stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
  aside = f"{path}.partial-{stamp}"
  epath.Path(aside).write_bytes(tail)
  _replace_bytes(path, data[:cut], keep=cut)
  warn(f"{path}: its last line was cut ({len(tail)} bytes, a crash or a full disk); "
       f"repaired, the partial line kept in {aside}")


def _replace_bytes(path: str, data: bytes, *, keep: int):
  """Sets a file's bytes; a local one keeps its first `keep` bytes in place (truncate or
  append), so rows another writer adds meanwhile are not lost to a rewrite."""
  if is_remote(path):
    epath.Path(path).write_bytes(data)
    return
  with open(path, "r+b") as f:
    f.truncate(keep)
    f.seek(keep)
    f.write(data[keep:])


def append_text(path: str, text: str):
  """Appends to a local file, or rewrites a remote object (GCS objects cannot be appended to);
  a cut last line is repaired first (heal), so a new row never joins a partial one."""
  heal(path)
  if not is_remote(path):
    with open(path, "a", encoding="utf-8") as f:
      f.write(text)
    return
  target = epath.Path(path)
  old = target.read_text(encoding="utf-8") if target.exists() else ""
  target.write_text(old + text, encoding="utf-8")


def write_atomic(path: str, text: str):
  """Writes a file whole: a local one beside itself, then renamed (a reader never sees half
  of it); a remote object in one write."""
  if is_remote(path):
    epath.Path(path).write_text(text, encoding="utf-8")
    return
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


_WARNED = set()


def parse_lines(path: str, lines: list[str]) -> list[tuple[str, dict | None]]:
  """Each line of a jsonl log with its row: None for a line that is not a JSON object with an
  integer step (warned once, naming file and line; a cut last line is left to heal)."""
  out = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    problem = None
    try:
      row = json.loads(line)
    except ValueError as e:
      row, problem = None, f"not JSON ({e})"
    if problem is None and not isinstance(row, dict):
      row, problem = None, f"a JSON {type(row).__name__}, not an object"
    if problem is None and (not isinstance(row.get("step"), int)
                            or isinstance(row.get("step"), bool)):
      row, problem = None, "a row without an integer 'step'"
    cut = number == len(lines) and not line.endswith("\n")
    if problem and not (cut and problem.startswith("not JSON")) and (path, number) not in _WARNED:
      _WARNED.add((path, number))
      warn(f"{path}:{number}: skipped, {problem}")
    out.append((line, row))
  return out


def drop_rows_from(path: str, step: int, split: str | None = None):
  """Rewrites a jsonl log without its rows at or after `step` (only those of `split` and
  exactly at `step` when a split is given; no file: nothing to do). Lines that are not rows
  are kept as they are (skipped with a warning when read)."""
  heal(path)
  target = epath.Path(path)
  if not target.exists():
    return
  lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
  rows = parse_lines(path, lines)
  if split is None:
    kept = [line for line, row in rows if row is None or row["step"] < step]
  else:
    kept = [line for line, row in rows
            if row is None or (row["step"], row.get("split")) != (step, split)]
  if len(kept) != len(lines):
    target.write_text("".join(kept), encoding="utf-8")


def read_rows(path: str, split: str | None = None) -> list[dict]:
  """The rows of a jsonl log (of one split), in file order; a line that is not a row is
  skipped with a warning naming file and line (a cut last line silently: heal repairs it)."""
  target = epath.Path(path)
  if not target.exists():
    return []
  lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
  rows = [row for _, row in parse_lines(path, lines) if row is not None]
  return [r for r in rows if split is None or r.get("split") == split]


def duration(seconds: float) -> str:
  """A short human duration: 42s, 3m05s, 2h07m."""
  seconds = max(int(round(seconds)), 0)
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def train_line(step: int, total: int, metrics: dict) -> str:
  """The console line of a log step: step, loss, throughput, learning rate and time."""
  line = (f"step {step}/{total}  loss {metrics['train/loss']:.4f}  "
          f"tokens/s {metrics['train/tokens_per_second']:,.0f}  "
          f"lr {metrics['train/learning_rate']:.2e}")
  if "train/seconds_per_step" in metrics:
    line += (f"  {metrics['train/seconds_per_step']:.2f} s/step  "
             f"elapsed {duration(metrics['train/elapsed_seconds'])}  "
             f"ETA {duration(metrics['train/eta_seconds'])}  "
             f"host wait {metrics['train/host_wait_share']:.0%}")
  return line


def tensorboard_tag(name: str) -> str:
  """A metric's TensorBoard tag: TensorBoard turns "@" into "_" (pass@1 -> pass_1), so say it."""
  return name.replace("@", "_at_")


def summary_writer(folder: str, **kwargs):
  """tensorboardX's SummaryWriter for `folder`, imported lazily (only the logging host needs
  it) and without torch: tensorboardX imports torch, when installed, only to accept its
  tensors, which are never logged here, and that import costs ~2 s of every start."""
  hidden = "torch" not in sys.modules
  if hidden:
    sys.modules["torch"] = None  # `import torch` raises ImportError: tensorboardX goes on
  try:
    from tensorboardX import SummaryWriter
  finally:
    if hidden:
      del sys.modules["torch"]
  return SummaryWriter(folder, **kwargs)


class MetricLogger:
  """Writes scalars to <workdir>/metrics.jsonl and TensorBoard; text to the console.

  The workdir may be local or a gs:// URL (TensorBoard then needs google-cloud-storage).
  `replay_from`: a (re)started run logs every step from this one again, so rows and
  TensorBoard events at or after it are dropped first; each step is then logged once.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, replay_from: int | None = None,
               tensorboard: bool = True):
    self.enabled = enabled
    self.workdir = workdir
    self.writer = None  # tensorboard=False: metrics.jsonl only (see rewrite_tensorboard)
    if enabled:
      epath.Path(workdir).mkdir(parents=True, exist_ok=True)
      if replay_from is not None:
        for name in ("metrics.jsonl", "samples.jsonl"):
          drop_rows_from(os.path.join(workdir, name), replay_from)
      if tensorboard:
        self.writer = summary_writer(os.path.join(workdir, "tensorboard"),
                                     purge_step=replay_from)

  def scalars(self, step: int, split: str, metrics: dict, *, replace: bool = False):
    """One metrics.jsonl row (and TensorBoard scalars); `replace`: drops the row already
    logged for this step and split first (a step evaluated again)."""
    if not self.enabled:
      return
    values = {k: float(np.asarray(v)) for k, v in metrics.items()}
    for name, value in values.items() if self.writer else ():
      self.writer.add_scalar(tensorboard_tag(name), value, step)
    # JSON has no NaN or infinity: a non-finite value is written as null.
    rows = {k: v if np.isfinite(v) else None for k, v in values.items()}
    path = os.path.join(self.workdir, "metrics.jsonl")
    if replace:
      drop_rows_from(path, step, split)
    append_text(path, json.dumps({"step": int(step), "split": split, **rows}) + "\n")
    if self.writer:
      self.writer.flush()

  def samples(self, step: int, rows: list[dict]):
    """Decoded samples: TensorBoard text and <workdir>/samples.jsonl."""
    if not self.enabled:
      return
    append_text(os.path.join(self.workdir, "samples.jsonl"), _jsonl(step, rows))
    table = "\n".join(f"| {r['task']} | {r['inputs'][:200]} | {r['targets']} | {r['prediction']} |"
                      for r in rows)
    if self.writer:
      self.writer.add_text("eval/samples", "| task | input | target | prediction |\n|-|-|-|-|\n"
                         + table, step)

  def predictions(self, path: str, step: int, rows: list[dict]):
    """Every decoded example with its reference in `path` (written afresh), one a line."""
    if self.enabled:
      epath.Path(os.path.dirname(path) or ".").mkdir(parents=True, exist_ok=True)
      epath.Path(path).write_text(_jsonl(step, rows), encoding="utf-8")

  def text(self, message: str):
    if self.enabled:
      tqdm.tqdm.write(message)

  def close(self):
    if self.writer:
      self.writer.close()


def _jsonl(step: int, rows: list[dict]) -> str:
  return "".join(json.dumps({"step": int(step), **row}, ensure_ascii=False) + "\n"
                 for row in rows)


def rewrite_tensorboard(workdir: str, split: str):
  """Writes <workdir>/tensorboard/<split>/ afresh from metrics.jsonl's rows of that split
  (and of its files, "<split>/<name>"), so a step evaluated again shows once."""
  folder = epath.Path(workdir, "tensorboard", split)
  if folder.exists():
    folder.rmtree()
  writer = summary_writer(str(folder))
  for row in read_rows(os.path.join(workdir, "metrics.jsonl")):
    if row.get("split") != split and not str(row.get("split")).startswith(split + "/"):
      continue
    for name, value in row.items():
      if name not in ("step", "split") and value is not None:
        writer.add_scalar(tensorboard_tag(name), value, row["step"])
  writer.close()


class Progress:
  """tqdm bar showing step, loss, tokens/s, elapsed time and ETA (tqdm's own)."""

  def __init__(self, start: int, total: int, *, enabled: bool):
    self.bar = tqdm.tqdm(initial=start, total=total, desc="train", dynamic_ncols=True,
                         disable=not enabled, mininterval=1.0)

  def update(self, step: int, metrics):
    self.bar.update(step - self.bar.n)
    if metrics is not None:
      self.bar.set_postfix(loss=f"{metrics['train/loss']:.3f}",
                           tok_s=f"{metrics['train/tokens_per_second']:.0f}", refresh=False)

  def close(self):
    self.bar.close()
