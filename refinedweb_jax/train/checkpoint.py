"""Orbax checkpoints holding train state, data-iterator state, config and tokenizer.

A step holds the items params (the model's parameters), optimizer (step counter and
optimizer state), data (the Grain iterator), config and assets (the tokenizer), so a
model can be restored for inference (or fine-tuning) without its optimizer state.
Resume order: the newest step that finished saving (Orbax commits a step
atomically, so a run killed mid-save falls back to the one before).
"""

import base64
import json
import os

import grain
import jax
import orbax.checkpoint as ocp

from refinedweb_jax.train.logger import is_remote


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
    items = {"params": ocp.args.StandardSave(state.params),
             "optimizer": ocp.args.StandardSave(_optimizer_part(state))}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    if tokenizer_proto is not None:
      items["assets"] = ocp.args.JsonSave(
          {"tokenizer_model": base64.b64encode(tokenizer_proto).decode("ascii")})
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, abstract_state, *, data_iterator=None):
    """Restores the state onto the shardings in `abstract_state` (and the iterator in place)."""
    items = {"params": ocp.args.StandardRestore(abstract_state.params),
             "optimizer": ocp.args.StandardRestore(_optimizer_part(abstract_state))}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return abstract_state.replace(params=restored["params"], **restored["optimizer"])

  def restore_params(self, step: int, abstract_params):
    """The parameters alone, onto the shardings in `abstract_params` (no optimizer state)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))
    return restored["params"]

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
  return {"step": state.step, "opt_state": state.opt_state}


def absolute(directory: str) -> str:
  """A local path made absolute; a URL such as gs://bucket/run (read by Orbax) unchanged."""
  return directory if is_remote(directory) else os.path.abspath(directory)


def abstract_like(state, shardings):
  """ShapeDtypeStructs carrying target shardings, for restoring onto any mesh."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def config_to_json(config) -> dict:
  """A ConfigDict as plain JSON-able dict (round-trips through json)."""
  return json.loads(config.to_json())
