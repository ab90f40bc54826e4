"""A run directory, and the one rule by which a run continues: its saved config is its config.

A workdir holds config.json (the resolved config of its newest start), runs.jsonl (one row
per start: command, step, versions, commit, devices), checkpoints/ and the logs. Every
command that starts from a run settles its config here (settle): the run's own config,
saved with its newest checkpoint that reads back, with the command's --config.KEY=VALUE
flags applied as changes. A change to a key that fixes the model, the tokenizer, the data
stream or the seed is refused naming the key and both values (each key's declaration in
config_keys/ says whether a later start may change it); a shorter train.num_steps than the
step a run has reached is refused too: config.json records what the run did. A new workdir
takes --config FILE (or the default) with the flags.

Every step carries a fingerprint of the run's fixed config (fingerprint): a step whose
fixed config is not the one config.json records (a checkpoint copied from another run) is
refused naming the keys, and a workdir whose runs.jsonl records progress but whose
checkpoints/ holds no step stops instead of starting over (check_progress).
"""

import copy
import dataclasses
import functools
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

from refinedweb_jax import config_keys, configs
from refinedweb_jax.train import checkpoint, logger

CONFIG = "config.json"
RUNS = "runs.jsonl"
PACKAGES = ("refinedweb_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
            "tensorflow-datasets", "sentencepiece", "numpy", "ml-collections")
# How a model computes, not what it is: a fine-tune keeps its own.
HOW_IT_COMPUTES = ("dtype", "dense_implementation", "remat", "scan_layers")


def locate(path: str):
  """A workdir, its checkpoints/ folder or one checkpoints/STEP -> (workdir, ckpt_dir, step)."""
  path = checkpoint.absolute(path)
  if epath.Path(path, "checkpoints").is_dir():
    return path, os.path.join(path, "checkpoints"), None
  name = os.path.basename(path)
  if name.isdigit() and epath.Path(path).is_dir():
    return os.path.dirname(os.path.dirname(path)), os.path.dirname(path), int(name)
  if name == "checkpoints" and epath.Path(path).is_dir():
    return os.path.dirname(path), path, None
  raise FileNotFoundError(f"no checkpoint in {path!r} (no {os.path.join(path, 'checkpoints')}); "
                          f"train first with: refinedweb train --workdir {shlex.quote(str(path))}")


def has_run(workdir: str) -> bool:
  """Whether a workdir holds a finished checkpoint (a run to continue)."""
  return checkpoint.has_steps(os.path.join(checkpoint.absolute(workdir), "checkpoints"))


def saved(path: str, at: int | None = None) -> tuple[dict, bytes, int]:
  """(config dict, tokenizer proto, step) saved with a run's newest checkpoint whose config and
  tokenizer read back and match their checksums (or with the given checkpoints/STEP, or
  step `at`), opened read-only. A step from another run (its fingerprint) is refused."""
  workdir, ckpt_dir, step = locate(path)
  step = step if at is None else at
  ckpt = checkpoint.Checkpointer(ckpt_dir, read_only=True)
  try:
    run = read_config(workdir)
  except (ValueError, OSError):  # an unreadable config.json: the steps' own configs decide
    run = None

  def read(at_step: int):
    config, proto, mark = ckpt.restore_metadata_and_fingerprint(at_step)
    check_fingerprint(config, mark, run, f"checkpoint step {at_step} in {ckpt_dir}", workdir)
    return config, proto

  try:
    if step is not None:
      return (*read(step), step)
    step, found = ckpt.restore_newest(read, move_aside=False, report=checkpoint.report,
                                      required=True)
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {ckpt_dir}; train first with: "
                              f"refinedweb train --workdir {shlex.quote(os.path.dirname(ckpt_dir))}")
    return (*found, step)
  finally:
    ckpt.close()


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """A trained run's own config, as saved with its newest checkpoint."""
  return configs.from_saved(saved(workdir)[0])


def flat(config) -> dict:
  """Dotted key -> value of every leaf ("model.attention.window": 64; lists stay whole)."""
  out = {}

  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, (dict, ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        walk(value, f"{prefix}{key}.")
      else:
        out[prefix + key] = value
  walk(config, "")
  return out


def fixed(config) -> dict:
  """Dotted key -> JSON value of every key that fixes the run (not resumable)."""
  return {k: _comparable(v) for k, v in flat(config).items() if not resumable(k)}


def fingerprint(config) -> str:
  """The digest of a run's fixed config, saved with each of its steps."""
  return checkpoint.digest(fixed(config))


def check_fingerprint(step_config: dict, mark: str | None, run: dict | None, what: str,
                      workdir: str):
  """Raises ForeignCheckpoint, naming the keys, when a step's fixed config is not the run's.

  A step saved without a fingerprint, or a run without config.json, is not checked; keys
  only one side knows (another version's) are not compared.
  """
  if mark is None or run is None or mark == fingerprint(run):
    return
  mine, theirs = fixed(run), fixed(step_config)
  differ = [k for k in sorted(mine.keys() & theirs.keys()) if mine[k] != theirs[k]]
  if differ:
    raise checkpoint.ForeignCheckpoint(
        f"{what} was saved by another run: " + "; ".join(
            f"{k}: {theirs[k]!r} there, {mine[k]!r} in {os.path.join(workdir, CONFIG)}"
            for k in differ[:5]) + ("; ..." if len(differ) > 5 else "")
        + "; move that step out of checkpoints/ (nothing was changed)")


def resumable(key: str, also: tuple = ()) -> bool:
  """Whether a resumed run may change config.<key>: as the stage owning it declares
  (config_keys), or as one of the keys or "section." prefixes in `also`."""
  return config_keys.resumable(key) or any(
      key == p or (p.endswith(".") and key.startswith(p)) for p in also)


def changes(saved_config: dict, config, workdir: str, also: tuple = ()) -> list[tuple]:
  """(key, saved value, new value) of every key the new config sets differently.

  Raises, naming each key with both values, when one of them may not change (resumable,
  plus the key prefixes in `also`).
  """
  old, new = flat(saved_config), flat(config)
  found = [(k, old[k], v) for k, v in new.items() if k in old and _comparable(old[k])
           != _comparable(v)]
  fixed = [c for c in found if not resumable(c[0], also)]
  if fixed:
    raise ValueError(
        f"{workdir} holds a run whose config differs from this one in settings fixed for "
        "the run (its model, tokenizer, data and seed): "
        + "; ".join(f"{k}: run {a!r}, given {b!r}" for k, a, b in fixed)
        + f". Continue it with `refinedweb train --workdir {shlex.quote(str(workdir))}` (its own config; "
        "`refinedweb config --workdir` shows it) or train a new run in another --workdir")
  return found


def _comparable(value):
  """JSON's view of a value: tuples are lists, as in a saved config."""
  return json.loads(json.dumps(value, default=str))


def overridden(config, overrides) -> ml_collections.ConfigDict:
  """`config` (a copy) with each (dotted key, value) applied: text from the command line is
  parsed as the key's type, other values (the API's) are set as they are."""
  config = copy.deepcopy(config)  # keeps each unset key's type for the command line's text
  for key, value in overrides:
    if isinstance(value, str):
      configs.apply_override(config, key, value)
    else:
      configs.set_value(config, key, value)
  return config


@dataclasses.dataclass(frozen=True)
class Settled:
  """A command's config and what settling it found."""
  config: ml_collections.ConfigDict  # locked (configs.freeze)
  changes: list  # (key, run's value, new value) for a run continued with other settings
  step: int | None  # the step the run in the workdir has reached (None: a new run)
  notes: list  # lines to print once (e.g. what a fine-tune changes of its model)
  # again(step): this settling redone against the run's saved step `step` (the one whose
  # parameters were restored, when a newer step turned out damaged).
  again: object = dataclasses.field(default=None, compare=False, repr=False)


def settle(workdir: str | None, *, spec: str | None = None, overrides=(), also: tuple = (),
           base=None, at: int | None = None) -> Settled:
  """The config a command runs with (see the module docstring), resolved, validated, frozen.

  The config given (--config `spec`, or `base`: a ConfigDict) or, with a run in `workdir`
  and none given, the run's saved config; plus the overrides; with a run, checked against
  its saved config. A new train.init_from run takes that run's model.
  """
  found, step, notes = [], None, []
  again = functools.partial(_settle_at, workdir, spec, tuple(overrides), also, base)
  given = configs.load_config(spec) if spec else base
  if workdir and has_run(workdir):
    old, _, step = saved(workdir, at)
    # What the run's own config fixes, made explicit as a new run's would be ("auto" values
    # of a run saved before they were resolved); how this start joins its job is its own.
    old = configs.to_dict(configs.resolve(_this_start(configs.from_saved(old))))
    config = overridden(configs.from_saved(old) if given is None else given, overrides)
    if given is not None and old["train"].get("init_from"):
      _as_started(config, old)
    configs.resolve(config)
    found = changes(old, config, workdir, also)
    if config.train.num_steps < step:
      raise ValueError(f"train.num_steps={config.train.num_steps} is below step {step}, which "
                       f"{workdir} has reached: a run is not shortened (nothing changed); "
                       f"evaluate or decode its checkpoint, or train a new run in another "
                       "--workdir")
  else:
    config = overridden(configs.default_config() if given is None else given, overrides)
    configs.resolve(config)
    if config.train.get("init_from"):
      notes = _take_model(config)
  configs.validate(config)
  return Settled(configs.freeze(config), found, step, notes, again)


def _settle_at(workdir, spec, overrides, also, base, at):
  return settle(workdir, spec=spec, overrides=overrides, also=also, base=base, at=at)


def _as_started(config, old: dict):
  """A fine-tune's config given again: train.init_from and the model it filled in are the
  run's (a resumed run never reads init_from again); what it set itself is compared."""
  config.train.init_from = old["train"]["init_from"]
  config.model.preset = old["model"]["preset"]
  for key, value in old["model"].items():
    if key == "attention":
      for name, size in value.items():
        if config.model.attention.get(name) is None:
          config.model.attention[name] = size
    elif config.model.get(key) is None:
      config.model[key] = value


def _this_start(config):
  """A saved config without the saved start's distributed settings (another start may run
  on another number of processes: its own flags or JAX_* variables say how)."""
  for key in config.distributed.keys():
    config.distributed[key] = None
  return config


def _take_model(config) -> list:
  """A fine-tune's model section: train.init_from's, then every field this config sets
  itself (e.g. a sparse encoder on a dense checkpoint); the preset is always that run's."""
  source = checkpoint.absolute(config.train.init_from)
  model = saved(source)[0].get("model", {})
  mine, changed = config.model.to_dict(), {}
  config.train.init_from = source  # recorded absolute: a resume never needs it again
  config.model.preset = model.get("preset", mine["preset"])
  for key, value in model.items():
    if key in ("preset",) + HOW_IT_COMPUTES or key not in mine:
      continue
    if key == "attention":
      for name, size in value.items():
        if mine["attention"].get(name) is None:
          config.model.attention[name] = size
        elif mine["attention"][name] != size:
          changed[f"attention.{name}"] = mine["attention"][name]
    elif mine[key] is None:
      config.model[key] = value
    elif mine[key] != value:
      changed[key] = mine[key]
  if not changed:
    return []
  return [f"model from {source}; this config changes " + ", ".join(
      f"{k}={v!r}" for k, v in changed.items())]


def write_config(workdir: str, config):
  """<workdir>/config.json: the resolved config (a JSON dict), written whole, then renamed."""
  text = json.dumps(configs.to_dict(config), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
  logger.write_atomic(os.path.join(workdir, CONFIG), text)


def read_config(workdir: str) -> dict | None:
  """The run's config.json, or None when the run has none."""
  path = epath.Path(workdir, CONFIG)
  return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def record_start(workdir: str, *, step: int, command: str | None = None,
                 mesh: dict | None = None):
  """Appends this start to <workdir>/runs.jsonl; `command` defaults to this process's argv."""
  row = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "step": step, "command": command or command_line(), "cwd": os.getcwd(),
         "git_commit": git_commit(), "packages": versions(), "python": platform.python_version(),
         "host": platform.node(), "processes": jax.process_count(),
         "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
         "mesh": mesh}
  logger.append_text(os.path.join(workdir, RUNS), json.dumps(row) + "\n")


def record_end(workdir: str, *, checkpoint_step: int):
  """Appends the end of this start to <workdir>/runs.jsonl: a row {"step": its newest
  checkpoint, "end": true}, the run's record of progress (check_progress)."""
  row = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "step": checkpoint_step, "end": True}
  logger.append_text(os.path.join(workdir, RUNS), json.dumps(row) + "\n")


def last_start(workdir: str) -> dict | None:
  """The newest start row of <workdir>/runs.jsonl, or None."""
  rows = [r for r in logger.read_rows(os.path.join(workdir, RUNS)) if "command" in r]
  return rows[-1] if rows else None


def recorded_progress(workdir: str) -> int:
  """The furthest checkpointed step runs.jsonl records (a start's step, an end's checkpoint)."""
  rows = logger.read_rows(os.path.join(workdir, RUNS))
  return max([0] + [r["step"] for r in rows if isinstance(r.get("step"), int)])


def check_progress(workdir: str):
  """Raises when runs.jsonl records a checkpointed step but checkpoints/ holds none: an
  emptied or missing checkpoints/ is not a new run (that would rewrite its logs)."""
  reached = recorded_progress(workdir)
  if reached > 0 and not has_run(workdir):
    runs = os.path.join(workdir, RUNS)
    raise ValueError(
        f"{workdir} records a run checkpointed at step {reached} ({runs}) but "
        f"{os.path.join(workdir, 'checkpoints')} holds no step; nothing was changed. Put its "
        "checkpoints back to continue it; to start it over from step 0 on purpose, train in "
        f"a new --workdir, or move {runs} aside (mv {runs} {runs}.old)")


def shape() -> dict:
  """The processes and devices this start runs on."""
  return {"processes": jax.process_count(), "devices": jax.device_count()}


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
