"""What a run directory says about itself, and which of its settings a later start may change.

config.json is the run's resolved config (every key, as the newest start used it);
runs.jsonl records each start's command line, step, package versions, git commit,
devices and time, so a result can be traced to the code and settings behind it.
resume_changes compares a new config with the run's saved one.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys

import jax
import ml_collections
from etils import epath

from refinedweb_jax.train import logger

CONFIG = "config.json"
RUNS = "runs.jsonl"
PACKAGES = ("refinedweb_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
            "tensorflow-datasets", "sentencepiece", "numpy", "ml-collections")


def write_config(workdir: str, config: dict):
  """<workdir>/config.json: the resolved config (a JSON dict)."""
  epath.Path(workdir, CONFIG).write_text(
      json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def read_config(workdir: str) -> dict | None:
  """The run's config.json, or None when the run has none."""
  path = epath.Path(workdir, CONFIG)
  return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def record_start(workdir: str, *, step: int, command: str | None = None):
  """Appends this start to <workdir>/runs.jsonl; `command` defaults to this process's argv."""
  row = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "step": step, "command": command or command_line(), "cwd": os.getcwd(),
         "git_commit": git_commit(), "packages": versions(), "python": platform.python_version(),
         "host": platform.node(), "processes": jax.process_count(),
         "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}"}
  logger.append_text(os.path.join(workdir, RUNS), json.dumps(row) + "\n")


def command_line() -> str:
  """How this process was started: `refinedweb train ...` or `python script.py ...`."""
  name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
  return shlex.join([name] + sys.argv[1:])


def versions() -> dict:
  """Installed versions of the packages a result depends on (None: not installed)."""
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def git_commit() -> str | None:
  """The commit of the checkout this package runs from (+ "-dirty" with local changes)."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                            text=True, timeout=10)
    if commit.returncode != 0:
      return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=10).stdout.strip()
  except (OSError, subprocess.TimeoutExpired):
    return None
  return commit.stdout.strip() + ("-dirty" if dirty else "")


def flat(config) -> dict:
  """Dotted key -> value of every leaf ("model.attention.window": 64; lists stay whole)."""
  out = {}

  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        walk(value, f"{prefix}{key}.")
      else:
        out[prefix + key] = value
  walk(config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config, "")
  return out


# Keys a resumed run may change: cadence, steps, schedule and optimizer settings, the loss,
# decoding, where the data lives, the mesh and how the model computes (not what it is).
# Every other key fixes the model, the tokenizer, the data stream or the random seed,
# which the checkpoint holds.
RESUMABLE = ("train.", "optimizer.", "loss.", "mesh.", "distributed.", "data.data_dir",
             "data.public_data_dir", "mixture.eval_tasks", "model.dropout_rate", "model.remat",
             "model.dtype", "model.dense_implementation", "distill.alpha",
             "distill.temperature", "distill.dump_batch_size", "distill.shard_examples")
FIXED = ("optimizer.name",)  # the optimizer state's structure is in the checkpoint


def resumable(key: str, also: tuple = ()) -> bool:
  return key not in FIXED and any(key == p or (p.endswith(".") and key.startswith(p))
                                  for p in RESUMABLE + tuple(also))


def resume_changes(saved: dict, config, workdir: str, also: tuple = ()) -> list[tuple]:
  """(key, saved value, new value) of every key the new config sets differently.

  Raises, naming each key with both values, when one of them may not change on resume
  (RESUMABLE, plus the key prefixes in `also`).
  A train.init_from run saved its model section filled in from that run: an unset
  model key of the new config then means "the same".
  """
  old, new = flat(saved), flat(config)
  from_other = bool(old.get("train.init_from"))
  changes = [(k, old[k], v) for k, v in new.items()
             if k in old and _comparable(old[k]) != _comparable(v)
             and not (from_other and k.startswith("model.") and v is None)]
  fixed = [c for c in changes if not resumable(c[0], also)]
  if fixed:
    raise ValueError(
        f"{workdir} holds a run whose config differs from this one in settings fixed for "
        "the run (its model, tokenizer, data and seed): "
        + "; ".join(f"{k}: run {a!r}, given {b!r}" for k, a, b in fixed)
        + f". Pass the run's values (`refinedweb config --workdir {workdir}` shows them) "
        "or train a new run in another --workdir")
  return changes


def _comparable(value):
  """JSON's view of a value: tuples are lists, as in a saved config."""
  return json.loads(json.dumps(value, default=str))
