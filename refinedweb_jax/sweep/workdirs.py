"""What a sweep's workdir holds: sweep.json, and per run its logs, checkpoints and status files.

<workdir>/sweep.json               the sweep: config spec, arms, overrides, baseline, seeds, runs
<workdir>/<arm>/seed_<k>/          the run's own workdir (checkpoints/, metrics.jsonl, tensorboard/)
    sweep_done.json                written after the run finished: its command, seconds, parameters
    sweep_error.txt                written when it failed: exit status and the last lines of stderr
    sweep_lock.json                host and pid of the process training it now
    sweep_log.txt                  its stdout and stderr
The workdir may be a local folder or a gs:// URL (etils.epath).
"""

import json
import os
import re

from etils import epath

from refinedweb_jax.train import logger

SWEEP = "sweep.json"
DONE, ERROR, LOCK, LOG = "sweep_done.json", "sweep_error.txt", "sweep_lock.json", "sweep_log.txt"


def path(*parts) -> epath.Path:
  return epath.Path(os.path.join(*[str(p) for p in parts]))


def read_json(target) -> dict | None:
  target = epath.Path(target)
  return json.loads(target.read_text(encoding="utf-8")) if target.exists() else None


def write_json(target, value):
  target = epath.Path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_text(json.dumps(value, indent=1, sort_keys=False) + "\n", encoding="utf-8")


def read_sweep(workdir: str) -> dict:
  """sweep.json of a workdir; a folder without one (or without arms) is a one-line error."""
  target = path(workdir, SWEEP)
  if not path(workdir).is_dir():
    raise ValueError(f"sweep directory {workdir!r} does not exist; give the --workdir of a "
                     "`refinedweb sweep` run")
  if not target.exists():
    raise ValueError(f"{workdir!r} holds no {SWEEP}: it is no sweep's workdir (run `refinedweb "
                     "sweep --config FILE --workdir DIR` first)")
  try:
    sweep = json.loads(target.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"{target} is not valid JSON ({e}); rerun the sweep to rewrite it") from None
  if not sweep.get("arms") or not sweep.get("runs"):
    raise ValueError(f"{target} lists no arms; rerun the sweep to rewrite it")
  return sweep


def checkpoint_steps(run_dir) -> list:
  """The committed checkpoint steps of a run (Orbax's numbered folders; temporaries excluded)."""
  ckpt = path(run_dir, "checkpoints")
  if not ckpt.is_dir():
    return []
  return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit() and p.is_dir())


def finished(run_dir, num_steps: int | None) -> bool:
  """A training run: it holds a checkpoint at num_steps (so a raised num_steps trains on);
  another command (num_steps None, e.g. a logit dump): the runner marked it done."""
  if num_steps is None:
    return path(run_dir, DONE).exists()
  steps = checkpoint_steps(run_dir)
  return bool(steps) and steps[-1] >= num_steps


def read_rows(run_dir) -> list:
  """metrics.jsonl rows (null values as nan); no file: no rows."""
  rows = logger.read_rows(str(path(run_dir, "metrics.jsonl")))
  return [{k: float("nan") if v is None else v for k, v in row.items()} for row in rows]


def params_from_log(text: str) -> int | None:
  """The parameter count the trainer prints ('..., 68,736 params, ...'), if any."""
  found = re.findall(r"([\d,]+) params", text)
  return int(found[-1].replace(",", "")) if found else None


def pid_alive(pid: int, run_dir) -> bool:
  """Whether process `pid` on this host is alive and trains this run (a reused pid is not)."""
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      cmdline = f.read().decode("utf-8", "replace")
  except OSError:
    return False
  return str(run_dir) in cmdline
