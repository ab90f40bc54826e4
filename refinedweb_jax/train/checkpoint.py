"""Orbax checkpoints holding train state, data-iterator state, config and tokenizer.

A step holds the items params (the model's parameters), optimizer (step counter,
optimizer state and skip counters), data (the Grain iterator), config, assets (the
tokenizer) and checksums, so a model can be restored for inference (or fine-tuning)
without its optimizer state. Orbax commits a step atomically, so a run killed
mid-save falls back to the one before. A step that does not read back (a truncated or
garbled file, a missing item, or array contents whose checksums differ from those
saved with them) is moved aside to <directory>-corrupt/ and the next older one is used.
Only the run's one writer (the trainer, holding the run's lock) opens a Checkpointer that
writes, deletes or cleans up; every other command opens it read-only and sees committed
steps alone, so a read during a save reads the step before.
"""

import base64
import hashlib
import json
import logging
import os
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from refinedweb_jax.train.logger import is_remote

log = logging.getLogger(__name__)


class CorruptCheckpoint(ValueError):
  """A saved step whose contents do not read back as they were written."""


class OldFormat(ValueError):
  """A saved step this version reads, but whose data position it cannot continue."""


class NoGoodCheckpoint(ValueError):
  """Every saved step of a run fails to read back."""


class ForeignCheckpoint(ValueError):
  """A saved step whose fixed config (its fingerprint) is not the run's."""


class NotFinite(ValueError):
  """A state whose parameters or optimizer state hold a NaN or an infinity."""


DATA = "data_state"  # the global data position (data/stream.py), one JSON record


def _read_only_notice(record) -> bool:
  """False for Orbax's warning that a read-only manager's folder is read-only."""
  return not str(record.msg).startswith("Given directory is read only")


def _quiet_read_only_notice():
  """Readers open runs read-only on purpose: Orbax's warning saying so is noise."""
  absl_logger = logging.getLogger("absl")
  if _read_only_notice not in absl_logger.filters:
    absl_logger.addFilter(_read_only_notice)


class Checkpointer:
  """Thin wrapper around ocp.CheckpointManager with this project's items."""

  def __init__(self, directory: str, *, save_every: int = 1000, keep: int = 3,
               async_save: bool = True, read_only: bool = False):
    """`read_only`: for every command but the run's writer; it creates, cleans up (another
    process's save in flight is a temporary folder), saves and deletes nothing."""
    self.directory = absolute(directory)
    self.read_only = read_only
    if read_only:
      _quiet_read_only_notice()
      options = ocp.CheckpointManagerOptions(
          read_only=True, save_interval_steps=0, max_to_keep=None,
          enable_async_checkpointing=False, cleanup_tmp_directories=False, create=False)
    else:
      options = ocp.CheckpointManagerOptions(
          save_interval_steps=max(int(save_every), 1), max_to_keep=keep,
          enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
    self.manager = self._listing(lambda: ocp.CheckpointManager(self.directory, options=options))

  def _listing(self, read, tries: int = 20):
    """read(), again while a step it listed is gone before it was read: the run's trainer
    deletes old steps (train.keep_checkpoints) while a reader lists them."""
    for attempt in range(tries):
      try:
        return read()
      except FileNotFoundError as e:
        gone = str(getattr(e, "filename", "") or "")
        if attempt == tries - 1 or not gone.startswith(self.directory + os.sep):
          raise

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, *, data_iterator=None, config: dict | None = None,
           tokenizer_proto: bytes | None = None, force: bool = False,
           fingerprint: str | None = None) -> bool:
    """Saves when the step is due (or `force`); returns whether a save started.

    Every item is saved with a checksum: the arrays' bit sums, and the SHA-256 of the
    data position, the config and the tokenizer, so a resume can verify each of them;
    `fingerprint` (the digest of the run's fixed config, resume.fingerprint) goes with them.
    Raises NotFinite, saving nothing, when the parameters or optimizer state are not finite.
    """
    if self.read_only:
      raise ValueError(f"{self.directory} was opened read-only; only the run's trainer saves")
    if not force and not self.due(step):
      return False
    if not bool(jax.device_get(all_finite(state.params, _optimizer_part(state)))):
      raise NotFinite(f"the parameters or optimizer state after step {step} are not finite")
    optimizer = _optimizer_part(state)
    sums = {"params": checksums(state.params), "optimizer": checksums(optimizer),
            "step": int(step)}
    if fingerprint is not None:
      sums["fingerprint"] = fingerprint
    items = {"params": ocp.args.StandardSave(state.params),
             "optimizer": ocp.args.StandardSave(optimizer)}
    if data_iterator is not None:
      record = data_iterator.get_state()
      items[DATA] = ocp.args.JsonSave(record)
      sums[DATA] = digest(record)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
      sums["config"] = digest(config)
    if tokenizer_proto is not None:
      assets = {"tokenizer_model": base64.b64encode(tokenizer_proto).decode("ascii")}
      items["assets"] = ocp.args.JsonSave(assets)
      sums["assets"] = digest(assets)
    items["checksums"] = ocp.args.JsonSave(sums)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def items(self, step: int) -> set:
    """The names of the items a saved step holds."""
    path = epath.Path(self.directory, str(step))
    return {p.name for p in path.iterdir()} if path.is_dir() else set()

  def restore(self, step: int, abstract_state, *, data_iterator=None):
    """Restores the state onto the shardings in `abstract_state`, and the data position.

    Everything is read and verified before anything is set: arrays against their bit
    sums, the data position against its SHA-256 and the stream it must belong to, the
    optimizer's step against the checkpoint's; then the iterator takes the position.
    Raises CorruptCheckpoint for a damaged item, OldFormat for a data position this
    version cannot continue.
    """
    names = self.items(step)
    if data_iterator is not None and DATA not in names and "data" in names:
      raise OldFormat(
          f"checkpoint step {step} in {self.directory} holds the data position of an older "
          "pipeline (Grain's, per process), which this version cannot continue exactly; start "
          "a new run from its parameters: refinedweb train --workdir NEW "
          f"--config.train.init_from={shlex.quote(os.path.dirname(self.directory))}")
    items = {"params": ocp.args.StandardRestore(abstract_state.params),
             "optimizer": ocp.args.StandardRestore(_optimizer_part(abstract_state)),
             "checksums": ocp.args.JsonRestore()}
    if data_iterator is not None:
      items[DATA] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    sums = restored["checksums"]
    for name in ("params", "optimizer"):
      _verify(step, name, restored[name], sums[name])
    if int(restored["optimizer"]["step"]) != int(sums.get("step", step)):
      raise CorruptCheckpoint(f"step {step}: its optimizer state is at step "
                              f"{int(restored['optimizer']['step'])}")
    if data_iterator is not None:
      record = dict(restored[DATA])
      _verify_digest(step, DATA, record, sums)
      data_iterator.set_state(record, where=f"checkpoint step {step}")
    return abstract_state.replace(params=restored["params"], **restored["optimizer"])

  def restore_params(self, step: int, abstract_params):
    """The parameters alone, onto the shardings in `abstract_params` (no optimizer state)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params), checksums=ocp.args.JsonRestore()))
    _verify(step, "params", restored["params"], restored["checksums"]["params"])
    return restored["params"]

  def restore_newest(self, restore_fn, *, move_aside: bool = True, report=log.warning,
                     required: bool = False):
    """(step, restore_fn(step)) for the newest step that reads back, or (None, None).

    A step that fails (any error from Orbax, the items' JSON or the checksums) is reported
    in one line and, with move_aside, moved to <directory>-corrupt/. OldFormat is raised:
    it is not damage, and an older step is no better. With `required`, steps that all fail
    raise NoGoodCheckpoint naming them, instead of (None, None).
    """
    failed, tried = [], set()
    while True:
      left = [s for s in sorted(self.manager.all_steps(), reverse=True) if s not in tried]
      if not left:
        break
      step = left[0]
      tried.add(step)
      try:
        found = restore_fn(step)
      except (OldFormat, ForeignCheckpoint):
        raise
      except Exception as e:  # pylint: disable=broad-except  (any unreadable step falls back)
        if not epath.Path(self.directory, str(step)).exists():
          # The run's trainer deleted it meanwhile (train.keep_checkpoints): not damage.
          self._listing(self.manager.reload)
          continue
        failed.append(step)
        report(f"warning: checkpoint step {step} in {self.directory} does not read back "
               f"({type(e).__name__}: {_one_line(e)}); trying the one before")
        continue
      # Damaged steps go aside only once a good one is found: with none, all stay.
      for bad in failed if move_aside else ():
        report(f"warning: the damaged step {bad} was moved to {self.move_aside(bad)}")
      return step, found
    if failed and required:
      steps = ", ".join(map(str, failed))
      runs = os.path.join(os.path.dirname(self.directory), "runs.jsonl")
      raise NoGoodCheckpoint(
          f"no checkpoint in {self.directory} reads back (steps {steps} are damaged); nothing "
          f"was changed. To start this run again from step 0, move its checkpoints and its "
          f"record of them aside (mv {self.directory} {self.directory}-damaged; mv {runs} "
          f"{runs}.old) or train in a new --workdir")
    return None, None

  def move_aside(self, step: int) -> str:
    """Moves a step's directory to <directory>-corrupt/<step>-<time> (nothing is deleted)."""
    source = epath.Path(self.directory) / str(step)
    target_dir = epath.Path(self.directory + "-corrupt")
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    source.rename(target)
    self._listing(self.manager.reload)
    return str(target)

  def due(self, step: int) -> bool:
    """Whether train.checkpoint_every asks for a save at this step."""
    return self.manager.should_save(step)

  def reached_preemption(self, step: int) -> bool:
    """Whether every host of a pod has reached the step to save at before a preemption."""
    return self.manager.reached_preemption(step)

  def check_for_errors(self):
    """Raises the error of a finished asynchronous save (a full disk, say), if there was one."""
    self.manager.check_for_errors()

  def restore_metadata(self, step: int | None = None):
    """Returns (config dict, tokenizer model proto bytes) saved with a step, verified
    against the SHA-256s saved with them (steps saved before they were are not)."""
    config, proto, _ = self.restore_metadata_and_fingerprint(step)
    return config, proto

  def restore_metadata_and_fingerprint(self, step: int | None = None):
    """(config dict, tokenizer proto, fingerprint or None) saved with a step, verified."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore(), assets=ocp.args.JsonRestore(),
        checksums=ocp.args.JsonRestore()))
    config, assets = dict(restored["config"]), dict(restored["assets"])
    sums = dict(restored["checksums"])
    _verify_digest(step, "config", config, sums)
    _verify_digest(step, "assets", assets, sums)
    return config, base64.b64decode(assets["tokenizer_model"]), sums.get("fingerprint")

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    if not self.read_only:
      self.manager.wait_until_finished()
    self.manager.close()


_REPORTED = set()


def report(message: str):
  """One line on stderr about a checkpoint passed over, once per process (reading a run's
  config and then its arrays meet the same damaged step), from the first process only."""
  if jax.process_index() == 0 and message not in _REPORTED:
    _REPORTED.add(message)
    print(f"refinedweb: {message}", file=sys.stderr, flush=True)


def _optimizer_part(state) -> dict:
  return {"step": state.step, "opt_state": state.opt_state, "skips": state.skips}


@jax.jit
def all_finite(*trees):
  """Whether every float leaf of the trees is finite (one scalar, reduced where the arrays are)."""
  ok = jnp.bool_(True)
  for x in jax.tree.leaves(trees):
    if jnp.issubdtype(x.dtype, jnp.inexact):
      ok &= jnp.all(jnp.isfinite(x))
  return ok


def _words(x):
  """An array's bits as uint32 words of its own shape (8-byte types gain a last axis of 2)."""
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  width = jnp.dtype(x.dtype).itemsize
  if width == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  unsigned = {4: jnp.uint32, 2: jnp.uint16, 1: jnp.uint8}[width]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def _checksum_leaves(leaves):
  """A 32-bit sum of each array's bits weighted by position: every single-bit flip changes it.

  The flat position comes from iotas, with no reshape, so a sharded array is summed where
  its shards are.
  """
  out = []
  for x in leaves:
    words = _words(x)
    index, stride = jnp.zeros(words.shape, jnp.uint32), 1
    for axis in reversed(range(words.ndim)):
      index += jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis) * jnp.uint32(stride)
      stride = stride * words.shape[axis] % 2**32
    # Odd weights: a flip of bit b changes the sum by an odd multiple of 2^b, never 0 mod 2^32.
    weights = (index * 2 + 1) * jnp.uint32(0x9E3779B1)
    out.append(jnp.sum(words * weights, dtype=jnp.uint32))
  return out


def checksums(tree) -> dict:
  """{leaf path: checksum} of a tree of arrays, computed where the arrays are."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  values = jax.device_get(_checksum_leaves([jnp.asarray(x) for _, x in flat]))
  return {jax.tree_util.keystr(path): int(v) for (path, _), v in zip(flat, values)}


def digest(record) -> str:
  """SHA-256 of a JSON record's canonical text."""
  text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _verify_digest(step: int, name: str, record, sums: dict):
  """Raises CorruptCheckpoint when a JSON item differs from the digest saved with it."""
  if name in sums and digest(record) != sums[name]:
    raise CorruptCheckpoint(f"step {step} {name}: its SHA-256 differs from the one saved "
                            "with it (the file was changed)")


def _one_line(error: Exception, limit: int = 300) -> str:
  """An error's first line, cut at a word near `limit` characters (TensorStore's errors
  carry pages of specs)."""
  text = (str(error).strip().splitlines() or [""])[0]
  text = text.split(" See full TensorStore details")[0]  # pages of a store's spec follow
  if len(text) <= limit:
    return text
  return text[:limit].rsplit(" ", 1)[0] + " ..."


def _verify(step: int, name: str, tree, saved: dict):
  """Raises CorruptCheckpoint naming the first array whose checksum differs from the saved one."""
  for path, value in checksums(tree).items():
    if saved.get(path) != value:
      raise CorruptCheckpoint(f"step {step} {name}{path}: checksum {value} differs from the "
                              f"{saved.get(path)} saved with it")


def absolute(directory: str) -> str:
  """A local path made absolute; a URL such as gs://bucket/run (read by Orbax) unchanged."""
  return directory if is_remote(directory) else os.path.abspath(directory)


# A workdir that `refinedweb import-hf` wrote holds this file: a model to start from, not a
# run to resume (its checkpoint has no data iterator).
IMPORTED = "imported_from.json"


def has_steps(directory: str) -> bool:
  """Whether a checkpoints/ folder (local or gs://) holds a finished step."""
  path = epath.Path(directory)
  return path.is_dir() and any(p.name.isdigit() for p in path.iterdir())


def abstract_like(state, shardings):
  """ShapeDtypeStructs carrying target shardings, for restoring onto any mesh."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def config_to_json(config) -> dict:
  """A ConfigDict as plain JSON-able dict (round-trips through json)."""
  return json.loads(config.to_json())
