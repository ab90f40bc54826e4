"""What a run directory says about itself: config.json and one runs.jsonl row per start.

config.json is the run's resolved config (every key, as the newest start used it);
runs.jsonl records each start's command line, step, package versions, git commit,
devices and time, so a result can be traced to the code and settings behind it.
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
         "host": platform.node(), "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
         "processes": jax.process_count()}
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
