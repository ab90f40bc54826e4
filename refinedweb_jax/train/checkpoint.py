"""Orbax checkpoints holding train state, data-iterator state, config and tokenizer.

A step holds the items params (the model's parameters), optimizer (step counter,
optimizer state and skip counters), data (the Grain iterator), config, assets (the
tokenizer) and checksums, so a model can be restored for inference (or fine-tuning)
without its optimizer state. Orbax commits a step atomically, so a run killed
mid-save falls back to the one before. A step that does not read back (a truncated or
garbled file, a missing item, or array contents whose checksums differ from those
saved with them) is moved aside to <directory>-corrupt/ and the next older one is used.
"""

import base64
import json
import logging
import os
import time

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from refinedweb_jax.train.logger import is_remote

log = logging.getLogger(__name__)


class CorruptCheckpoint(ValueError):
  """A saved step whose contents do not read back as they were written."""


class Checkpointer:
  """Thin wrapper around ocp.CheckpointManager with this project's items."""

  def __init__(self, directory: str, *, save_every: int = 1000, keep: int = 3,
               async_save: bool = True):
    self.directory = absolute(directory)
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(int(save_every), 1), max_to_keep=keep,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, *, data_iterator=None, config: dict | None = None,
           tokenizer_proto: bytes | None = None, force: bool = False) -> bool:
    """Saves when the step is due (or `force`); returns whether a save started."""
    if not force and not self.due(step):
      return False
    optimizer = _optimizer_part(state)
    items = {"params": ocp.args.StandardSave(state.params),
             "optimizer": ocp.args.StandardSave(optimizer),
             "checksums": ocp.args.JsonSave({"params": checksums(state.params),
                                             "optimizer": checksums(optimizer)})}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    if tokenizer_proto is not None:
      items["assets"] = ocp.args.JsonSave(
          {"tokenizer_model": base64.b64encode(tokenizer_proto).decode("ascii")})
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, abstract_state, *, data_iterator=None):
    """Restores the state onto the shardings in `abstract_state` (and the iterator in place).

    Raises CorruptCheckpoint if the arrays read differ from the checksums saved with them.
    """
    items = {"params": ocp.args.StandardRestore(abstract_state.params),
             "optimizer": ocp.args.StandardRestore(_optimizer_part(abstract_state)),
             "checksums": ocp.args.JsonRestore()}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    for name in ("params", "optimizer"):
      _verify(step, name, restored[name], restored["checksums"][name])
    return abstract_state.replace(params=restored["params"], **restored["optimizer"])

  def restore_params(self, step: int, abstract_params):
    """The parameters alone, onto the shardings in `abstract_params` (no optimizer state)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params), checksums=ocp.args.JsonRestore()))
    _verify(step, "params", restored["params"], restored["checksums"]["params"])
    return restored["params"]

  def restore_newest(self, restore_fn, *, move_aside: bool = True, report=log.warning):
    """(step, restore_fn(step)) for the newest step that reads back, or (None, None).

    A step that fails (any error from Orbax, the iterator's JSON or the checksums) is
    reported in one line and, with move_aside, moved to <directory>-corrupt/.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return step, restore_fn(step)
      except Exception as e:  # pylint: disable=broad-except  (any unreadable step falls back)
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        where = self.move_aside(step) if move_aside else None
        report(f"warning: checkpoint step {step} in {self.directory} does not read back "
               f"({type(e).__name__}: {reason})" + (f"; moved to {where}" if where else "")
               + "; trying the one before")
    return None, None

  def move_aside(self, step: int) -> str:
    """Moves a step's directory to <directory>-corrupt/<step>-<time> (nothing is deleted)."""
    source = epath.Path(self.directory) / str(step)
    target_dir = epath.Path(self.directory + "-corrupt")
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    source.rename(target)
    self.manager.reload()
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
    """Returns (config dict, tokenizer model proto bytes) saved with a step."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore(), assets=ocp.args.JsonRestore()))
    return dict(restored["config"]), base64.b64decode(restored["assets"]["tokenizer_model"])

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def _optimizer_part(state) -> dict:
  return {"step": state.step, "opt_state": state.opt_state, "skips": state.skips}


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
