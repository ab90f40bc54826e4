"""Faults a long preemptible run meets, through the real command line in subprocesses.

SIGKILL at any moment, SIGTERM / SIGINT mid-step and mid-save, a corrupt, truncated or
bit-flipped newest checkpoint, a poisoned batch (halt or skip), a full disk. Each ends in
a checkpoint to continue from and, resumed, in exactly the uninterrupted run's state.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import tiny_config

TIMEOUT_S = 240
STEPS = 12


def _flags(data_dir, **train):
  """--config flags of the tiny config, with train.* overrides."""
  config = tiny_config(data_dir)
  config.train.update(dict(num_steps=STEPS, log_every=1, eval_every=1000, checkpoint_every=2,
                           decode_examples_per_task=0, async_checkpointing=True))
  config.train.update(train)
  flags = ["--config.model.preset=tiny"]
  for section in ("data", "train", "optimizer"):
    for key, value in config[section].items():
      flags.append(f"--config.{section}.{key}={value}")
  return flags


def _command(workdir, flags, wrapper=None):
  if wrapper is None:
    return [sys.executable, "-m", "refinedweb_jax.cli", "train", "--workdir", str(workdir)] + flags
  return [sys.executable, str(wrapper), "train", "--workdir", str(workdir)] + flags


def _run(workdir, flags, env, wrapper=None):
  out = subprocess.run(_command(workdir, flags, wrapper), env=env, capture_output=True,
                       text=True, timeout=TIMEOUT_S)
  return out.returncode, out.stderr


def _start(workdir, flags, env, wrapper=None):
  return subprocess.Popen(_command(workdir, flags, wrapper), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _train_steps(workdir) -> list:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  rows = []
  for line in open(path):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:  # a line being written
      pass
  return [r["step"] for r in rows if r["split"] == "train"]


def _wait(condition, proc, what):
  deadline = time.time() + TIMEOUT_S
  while not condition():
    assert proc.poll() is None, f"run ended before {what}: {proc.communicate()[1][-2000:]}"
    assert time.time() < deadline, f"timed out waiting for {what}"
    time.sleep(0.02)


def _saving(workdir) -> bool:
  """Whether a checkpoint is being written now (Orbax's temporary step directory)."""
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(".orbax-checkpoint-tmp" in n
                                          for n in os.listdir(directory))


def _final_params(workdir) -> list:
  from refinedweb_jax.train import setup
  import jax
  trained = setup.restore(os.path.join(workdir, "checkpoints", str(STEPS)))
  return [np.asarray(x) for x in jax.tree.leaves(trained.params)]


def _assert_same_params(a, b):
  for x, y in zip(_final_params(a), _final_params(b)):
    np.testing.assert_array_equal(x, y)


def _steps_once(workdir):
  steps = _train_steps(workdir)
  assert steps == list(range(1, STEPS + 1)), steps


@pytest.fixture(scope="module")
def reference(tiny_data_dir, tmp_path_factory, env):
  """An uninterrupted run."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  code, err = _run(workdir, _flags(tiny_data_dir), env)
  assert code == 0, err[-3000:]
  return workdir


def test_sigkill_at_random_moments_resumes_bit_identically(reference, tiny_data_dir, tmp_path,
                                                          env):
  workdir, flags, rng = tmp_path / "run", _flags(tiny_data_dir), random.Random(0)
  kills = 0
  for attempt in range(6):
    proc = _start(workdir, flags, env)
    done = len(_train_steps(workdir))
    if attempt % 2 == 0:  # mid-save: as soon as a checkpoint is being written
      _wait(lambda: _saving(workdir) or proc.poll() is not None, proc, "a save")
    else:  # mid-step: a random moment after the next logged step
      _wait(lambda: len(_train_steps(workdir)) > done, proc, "a step")
      time.sleep(rng.uniform(0, 0.5))
    if proc.poll() is None:
      proc.kill()
      kills += 1
    proc.communicate()
  code, err = _run(workdir, flags, env)
  assert code == 0, err[-3000:]
  assert kills >= 5
  _assert_same_params(workdir, reference)
  _steps_once(workdir)


@pytest.mark.parametrize("sig, exit_code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("moment", ["mid-step", "mid-save"])
def test_sigterm_and_sigint_save_the_step_reached_and_exit_cleanly(
    reference, tiny_data_dir, tmp_path, env, sig, exit_code, moment):
  workdir = tmp_path / "run"
  # Saves only when asked: the checkpoint after the signal is the one it caused.
  flags = _flags(tiny_data_dir, checkpoint_every=(2 if moment == "mid-save" else 1000))
  proc = _start(workdir, flags, env)
  if moment == "mid-save":
    _wait(lambda: _saving(workdir), proc, "a save")
  else:
    _wait(lambda: len(_train_steps(workdir)) >= 3, proc, "step 3")
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=TIMEOUT_S)
  assert proc.returncode == exit_code, err[-3000:]
  lines = [l for l in err.splitlines() if l.startswith("refinedweb:")]
  assert len(lines) == 1 and f"stopped by {signal.Signals(sig).name} at step" in lines[0], err
  step = int(lines[0].split("at step ")[1].split(";")[0])
  assert str(step) in os.listdir(workdir / "checkpoints") and step < STEPS
  assert "Traceback" not in err
  code, err = _run(workdir, flags, env)
  assert code == 0, err[-3000:]
  _assert_same_params(workdir, reference)
  _steps_once(workdir)


def test_a_second_signal_exits_at_once_and_loses_only_the_steps_since_the_last_save(
    reference, tiny_data_dir, tmp_path, env):
  workdir, flags = tmp_path / "run", _flags(tiny_data_dir)
  proc = _start(workdir, flags, env)
  _wait(lambda: _saving(workdir) and len(_train_steps(workdir)) >= 3, proc, "a save")
  proc.send_signal(signal.SIGTERM)
  proc.send_signal(signal.SIGTERM)
  proc.communicate(timeout=TIMEOUT_S)
  assert proc.returncode in (0, 128 + signal.SIGTERM), proc.returncode
  code, err = _run(workdir, flags, env)  # whatever was committed before is whole
  assert code == 0, err[-3000:]
  _assert_same_params(workdir, reference)
  _steps_once(workdir)


def _corrupt(step_dir, how):
  files = sorted(os.path.join(root, f) for root, _, names in os.walk(step_dir / "params")
                 for f in names if os.path.getsize(os.path.join(root, f)) > 64)
  if how == "truncated":
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
      f.truncate(os.path.getsize(largest) // 2)
  elif how == "bit-flipped":
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
      f.seek(os.path.getsize(largest) // 2)
      byte = f.read(1)
      f.seek(-1, 1)
      f.write(bytes([byte[0] ^ 0x10]))  # same size, one bit
  elif how == "garbage-manifest":
    manifest = [f for f in files if os.path.basename(f) == "manifest.ocdbt"] or files[:1]
    with open(manifest[0], "wb") as f:
      f.write(b"not a manifest" * 10)
  elif how == "missing-item":
    shutil.rmtree(step_dir / "params")


@pytest.fixture(scope="module")
def every_fourth(tiny_data_dir, tmp_path_factory, env):
  """(workdir, flags) of a finished run with checkpoints at steps 4, 8 and 12."""
  workdir, flags = tmp_path_factory.mktemp("every_fourth") / "run", _flags(
      tiny_data_dir, checkpoint_every=4)
  code, err = _run(workdir, flags, env)
  assert code == 0, err[-3000:]
  return workdir, flags


@pytest.mark.parametrize("how", ["truncated", "bit-flipped", "garbage-manifest", "missing-item"])
def test_a_bad_newest_checkpoint_falls_back_to_the_one_before(reference, every_fourth,
                                                             tmp_path, env, how):
  workdir, flags = tmp_path / "run", every_fourth[1]
  shutil.copytree(every_fourth[0], workdir)
  _corrupt(workdir / "checkpoints" / str(STEPS), how)
  # The same command again: it falls back to step 8 and trains steps 9-12 once more.
  code, err = _run(workdir, flags, env)
  assert code == 0, err[-3000:]
  warnings = [l for l in err.splitlines() if f"checkpoint step {STEPS}" in l]
  assert len(warnings) == 1 and "does not read back" in warnings[0], err[-3000:]
  aside = os.listdir(f"{workdir}/checkpoints-corrupt")
  assert len(aside) == 1 and aside[0].startswith(f"{STEPS}-"), aside  # moved, not deleted
  _assert_same_params(workdir, reference)
  _steps_once(workdir)


POISON = """
import sys
from refinedweb_jax import cli
from refinedweb_jax.train import step as step_lib

real = step_lib.jit_train_step


def poisoned(*args, **kwargs):
  run, calls = real(*args, **kwargs), [0]

  def step(state, batch, rng):
    # The batch of step {step} holds a token id past the vocabulary: its embedding is NaN.
    calls[0] += 1
    if calls[0] == {step}:
      tokens = batch["encoder_input_tokens"]
      batch = dict(batch, encoder_input_tokens=tokens.at[0, 0].set(10 ** 6))
    return run(state, batch, rng)
  return step


step_lib.jit_train_step = poisoned
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_poisoned_batch_halts_before_any_checkpoint_holds_it(tiny_data_dir, tmp_path, env):
  wrapper = tmp_path / "poison.py"
  wrapper.write_text(POISON.format(step=5))
  workdir = tmp_path / "run"
  code, err = _run(workdir, _flags(tiny_data_dir, log_every=2), env, wrapper)
  assert code == 1, err[-3000:]
  lines = [l for l in err.splitlines() if l.startswith("refinedweb:")]
  assert len(lines) == 1 and "not finite at step 5" in lines[0], err[-3000:]
  assert "newest checkpoint (step 4) is untouched" in lines[0]
  saved = sorted(int(s) for s in os.listdir(workdir / "checkpoints"))
  assert saved[-1] == 4, saved  # nothing saved after the poisoned step
  for line in open(workdir / "metrics.jsonl"):  # still JSON: non-finite values are null
    json.loads(line)


def test_a_poisoned_batch_is_skipped_and_counted(tiny_data_dir, tmp_path, env):
  wrapper = tmp_path / "poison.py"
  wrapper.write_text(POISON.format(step=5))
  workdir = tmp_path / "run"
  code, err = _run(workdir, _flags(tiny_data_dir, on_nonfinite="skip"), env, wrapper)
  assert code == 0, err[-3000:]
  rows = {r["step"]: r for r in map(json.loads, open(workdir / "metrics.jsonl"))
          if r["split"] == "train"}
  assert rows[5]["train/loss"] is None and rows[5]["train/skipped_steps"] == 1
  assert rows[STEPS]["train/skipped_steps"] == 1 and rows[STEPS]["train/loss"] is not None


def test_a_diverging_run_halts_after_too_many_skips(tiny_data_dir, tmp_path, env):
  flags = _flags(tiny_data_dir, on_nonfinite="skip", max_nonfinite_skips=3)
  flags += ["--config.optimizer.learning_rate=1e6", "--config.optimizer.grad_clip_norm=0",
            "--config.optimizer.warmup_steps=0"]
  code, err = _run(tmp_path / "run", flags, env)
  assert code == 1, err[-3000:]
  lines = [l for l in err.splitlines() if l.startswith("refinedweb:")]
  assert len(lines) == 1 and "in a row had a non-finite loss" in lines[0], err[-3000:]


def test_a_full_disk_is_one_line(tiny_data_dir, tmp_path, env):
  if shutil.which("unshare") is None:
    pytest.skip("needs unshare to mount a small tmpfs")
  disk = tmp_path / "disk"
  disk.mkdir()
  command = " ".join(f"'{c}'" for c in _command(disk / "run", _flags(tiny_data_dir)))
  script = f"mount -t tmpfs -o size=160k tmpfs '{disk}' && exec {command}"
  out = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                       env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
  if out.returncode != 0 and out.stderr.startswith(("unshare:", "mount:")):
    pytest.skip(f"cannot mount a tmpfs here: {out.stderr.splitlines()[0]}")
  assert out.returncode == 1, out.stderr[-3000:]
  lines = [l for l in out.stderr.splitlines() if l.startswith("refinedweb:")]
  assert len(lines) == 1 and "No space left on device" in lines[0], out.stderr[-3000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
