"""The global batch stream: which examples fill which rows at each step, a function of the
seed and the step alone, whatever the number of processes and devices.

  examples  the mixture as one infinite global sequence: each source shuffled per epoch
            with its own seed and repeated, interleaved at the mixture's rates (Grain's
            index-based mix over example indices; nothing is read to decide the order)
  plan      step by step, examples go in order into the first of the global batch's rows
            that holds them (first-fit, each starting where `alignment` allows), from
            their token lengths alone (a table made once per source and tokenizer); an
            example that fits no row waits (at most `lookahead` of them) for the next step
  rows      each process reads, tokenizes and packs only the rows it feeds, by global row
            number (the batch sharding's), in worker threads, `prefetch` steps ahead

The position in the stream is one small JSON record (State): the step, the next example
of the sequence and the examples waiting; any process count restores it, and the next
global batches are the same. Rows hold model features (pipeline.FEATURES) plus any
target-aligned arrays of the transform (a teacher's top-k, say).
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import threading
import time

import grain
import numpy as np

from refinedweb_jax.data import pipeline

FORMAT = 2  # the data position's format; 1 was Grain's per-process iterator state


@dataclasses.dataclass(frozen=True)
class Spec:
  """What fixes the stream: changing any of it changes which examples a step holds."""
  sizes: tuple  # examples per source
  rates: tuple
  seed: int
  batch_size: int  # global rows per step
  input_length: int
  target_length: int
  pack: bool
  alignment: tuple = (1, 1)
  lookahead: int = 0  # examples that may wait for a later step (0: the batch size)

  def fingerprint(self) -> str:
    text = json.dumps(dataclasses.asdict(self), sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mixture(sizes, rates, seed: int):
  """The global example sequence: index g -> (source, example index), random access."""
  parts = []
  for j, n in enumerate(sizes):
    if n <= 0:
      raise ValueError(f"mixture source {j} has no examples")
    part = grain.MapDataset.range(n).seed(seed + 7919 * j).shuffle().repeat(None)
    parts.append(part.map(lambda i, j=j: (j, int(i))))
  return parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, list(rates))


def length_table(source, transform, path: str | None = None) -> np.ndarray:
  """[n, 2] int32 token lengths (inputs, targets) of every example after `transform`,
  cached at `path` (written whole, then renamed; any process may write it)."""
  if path and os.path.exists(path):
    return np.load(path)
  out = np.zeros((len(source), 2), np.int32)
  for i in range(len(source)):
    ex = transform.map(dict(source[i]))
    out[i] = len(ex["inputs"]), len(ex["targets"])
  if path:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, out)
    os.replace(tmp, path)
  return out


@dataclasses.dataclass
class State:
  """The stream's position: before step `step`, the sequence's next example `cursor` and the
  examples waiting from earlier steps (global sequence numbers, in order)."""
  step: int = 0
  cursor: int = 0
  waiting: tuple = ()


def _align(used, alignment: int):
  return -(-used // alignment) * alignment


class Planner:
  """Decides each step's rows from token lengths: a pure function of the spec and the state."""

  def __init__(self, spec: Spec, lengths: list):
    self.spec, self.lengths = spec, lengths
    self.sequence = mixture(spec.sizes, spec.rates, spec.seed)

  def length(self, g: int):
    j, i = self.sequence[g]
    return self.lengths[j][i]

  def plan(self, state: State):
    """(rows: per row a list of (g, input offset, target offset), the next state)."""
    s = self.spec
    if not s.pack:
      rows = [[(state.cursor + r, 0, 0)] for r in range(s.batch_size)]
      return rows, State(state.step + 1, state.cursor + s.batch_size, ())
    (align_in, align_out), limit = s.alignment, s.lookahead or s.batch_size
    used = np.zeros((s.batch_size, 2), np.int64)
    rows = [[] for _ in range(s.batch_size)]
    waiting, cursor = [], state.cursor
    candidates = list(state.waiting)
    while len(waiting) < limit:
      if candidates:
        g = candidates.pop(0)
      else:
        g, cursor = cursor, cursor + 1
      n_in, n_out = self.length(g)
      start_in, start_out = _align(used[:, 0], align_in), _align(used[:, 1], align_out)
      fits = np.flatnonzero((start_in + n_in <= s.input_length)
                            & (start_out + n_out <= s.target_length))
      if not fits.size:
        waiting.append(g)
        continue
      r = int(fits[0])
      rows[r].append((g, int(start_in[r]), int(start_out[r])))
      used[r] = start_in[r] + n_in, start_out[r] + n_out
    # Rows in a seeded order of the step, so no row position always gets the first examples.
    order = np.random.default_rng([s.seed, state.step]).permutation(s.batch_size)
    return [rows[r] for r in order], State(state.step + 1, cursor,
                                            tuple(candidates) + tuple(waiting))


class Rows:
  """Builds the model features of some global rows of a plan (this process's)."""

  def __init__(self, spec: Spec, sources, transform, target_features: tuple = ()):
    self.spec, self.sources, self.transform = spec, sources, transform
    self.target_features = tuple(target_features)
    self.sequence = mixture(spec.sizes, spec.rates, spec.seed)

  def build(self, rows) -> dict:
    s = self.spec
    n = len(rows)
    out = {k: np.zeros((n, s.input_length), np.int32)
           for k in ("inputs", "inputs_segment_ids", "inputs_positions")}
    out.update({k: np.zeros((n, s.target_length), np.int32)
                for k in ("targets", "targets_segment_ids", "targets_positions")})
    extra = {}
    for r, row in enumerate(rows):
      for number, (g, at_in, at_out) in enumerate(row, start=1):
        j, i = self.sequence[g]
        ex = self.transform.map(dict(self.sources[j][i]))
        for key, at, length in (("inputs", at_in, s.input_length),
                                ("targets", at_out, s.target_length)):
          values = ex[key][: length - at]
          out[key][r, at: at + len(values)] = values
          out[f"{key}_segment_ids"][r, at: at + len(values)] = number
          out[f"{key}_positions"][r, at: at + len(values)] = np.arange(len(values))
        for key in self.target_features:
          values = ex[key][: s.target_length - at_out]
          if key not in extra:
            extra[key] = np.zeros((n, s.target_length) + values.shape[1:], values.dtype)
          extra[key][r, at_out: at_out + len(values)] = values
    out.update(extra)
    return pipeline.to_model_features(out, self.target_features)


class GlobalBatches:
  """The iterator a training loop reads: this process's rows of each global batch, in order.

  rows: the global row numbers this process feeds (the batch sharding's, in its order).
  Plans run ahead in a producer thread; `workers` threads build the rows of up to
  `prefetch` steps. `host_wait` sums the seconds next() spent waiting (a starved
  accelerator shows there). get_state/set_state give and take the position (State).
  """

  def __init__(self, spec: Spec, planner: Planner, builder: Rows, rows, *, workers: int = 2,
               prefetch: int = 4):
    self.spec, self.planner, self.builder = spec, planner, builder
    self.rows = list(rows)
    self.workers, self.prefetch = max(1, workers), max(1, prefetch)
    self.state, self.host_wait = State(), 0.0
    self._pool = concurrent.futures.ThreadPoolExecutor(self.workers)
    self._queue, self._lock = [], threading.Lock()
    self._ahead = None  # the state after the newest planned step

  def _fill(self):
    """Plans and submits steps until `prefetch` are in flight (called under the lock)."""
    state = self._ahead or self.state
    while len(self._queue) < self.prefetch:
      rows, following = self.planner.plan(state)
      mine = [rows[r] for r in self.rows]
      self._queue.append((following, self._pool.submit(self.builder.build, mine)))
      state = following
    self._ahead = state

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    with self._lock:
      self._fill()
      following, future = self._queue.pop(0)
    began = time.perf_counter()
    batch = future.result()
    self.host_wait += time.perf_counter() - began
    self.state = following
    return batch

  def get_state(self) -> dict:
    s = self.state
    return {"format": FORMAT, "fingerprint": self.spec.fingerprint(), "step": s.step,
            "cursor": s.cursor, "waiting": list(s.waiting)}

  def set_state(self, record: dict, where: str = "the checkpoint"):
    check_state(record, self.spec, where)
    with self._lock:
      for _, future in self._queue:
        future.cancel()
      self._queue, self._ahead = [], None
      self.state = State(int(record["step"]), int(record["cursor"]),
                         tuple(int(g) for g in record["waiting"]))

  def close(self):
    self._pool.shutdown(wait=False, cancel_futures=True)


def check_state(record, spec: Spec, where: str):
  """Raises (one line) unless `record` is a data position of this stream."""
  if not isinstance(record, dict) or record.get("format") != FORMAT:
    raise ValueError(f"{where} holds a data position of another format ({_format(record)}); "
                     "this version cannot continue it exactly")
  if record.get("fingerprint") != spec.fingerprint():
    raise ValueError(f"{where} holds the data position of another data stream (its mixture "
                     "sizes, rates, seed, batch size, lengths or packing differ)")
  for key in ("step", "cursor"):
    if not isinstance(record.get(key), int) or record[key] < 0:
      raise ValueError(f"{where}: bad data position {key}={record.get(key)!r}")


def _format(record) -> str:
  return f"format {record.get('format')!r}" if isinstance(record, dict) else "not a record"


def replay(planner: Planner, state: State, steps: int) -> State:
  """The state `steps` steps after `state` (plans only: nothing is read)."""
  for _ in range(steps):
    state = planner.plan(state)[1]
  return state


def batches(sources, rates, transform, *, batch_size: int, input_length: int,
            target_length: int, pack: bool, seed: int, alignment: tuple = (1, 1), rows=None,
            lengths=None, target_features: tuple = (), workers: int = 2,
            prefetch: int = 2) -> GlobalBatches:
  """The stream over `sources` mixed at `rates`: `rows` of each global batch (default all).

  lengths: each source's length table (length_table), made here when not given.
  """
  spec = Spec(sizes=tuple(len(s) for s in sources), rates=tuple(rates), seed=seed,
              batch_size=batch_size, input_length=input_length, target_length=target_length,
              pack=pack, alignment=tuple(alignment))
  if lengths is None:
    lengths = [length_table(s, transform) for s in sources]
  return GlobalBatches(spec, Planner(spec, lengths), Rows(spec, sources, transform,
                                                          target_features),
                       range(batch_size) if rows is None else rows, workers=workers,
                       prefetch=prefetch)
