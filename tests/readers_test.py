"""Commands that read a run never change it: eval, generate and config looped over a run
that saves a checkpoint every step leave the trainer's result exactly as it is alone."""

import json
import os
import subprocess
import sys
import time

import numpy as np

from reliability_test import TIMEOUT_S, _flags, _run, _start

STEPS = 24

READER = """
import contextlib, io, json, os, sys, time
from refinedweb_jax import cli

workdir, stop, out = sys.argv[1:4]
while not os.path.isdir(os.path.join(workdir, "checkpoints", "1")):
  time.sleep(0.05)
commands = [["config", "--workdir", workdir],
            ["generate", "--workdir", workdir, "--text", "chat: hi", "--max-new-tokens", "2"],
            ["config", "--workdir", workdir],
            ["eval", "--workdir", workdir, "--examples", "1"]]
results, i = [], 0
while not os.path.exists(stop):
  command = commands[i % len(commands)]
  said = io.StringIO()
  with contextlib.redirect_stderr(said):
    code = cli.main(command)
  results.append([command[0], code, time.time(), said.getvalue()[-600:] if code else ""])
  i += 1
with open(out, "w") as f:
  json.dump(results, f)
"""


def _losses(workdir) -> dict:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["train/loss"] for r in rows if r["split"] == "train"}


def _params(workdir):
  from refinedweb_jax.train import setup
  import jax
  trained = setup.restore(os.path.join(workdir, "checkpoints", str(STEPS)))
  return [np.asarray(x) for x in jax.tree.leaves(trained.params)]


def test_readers_looping_over_a_training_run_leave_it_as_it_is_alone(tiny_data_dir, tmp_path,
                                                                    env):
  flags = _flags(tiny_data_dir, num_steps=STEPS, checkpoint_every=1, keep_checkpoints=3)
  alone = tmp_path / "alone"
  code, err = _run(alone, flags, env)
  assert code == 0, err[-3000:]

  workdir, stop, out = tmp_path / "run", tmp_path / "stop", tmp_path / "reads.json"
  trainer = _start(workdir, flags, env)
  reader = subprocess.Popen([sys.executable, "-c", READER, str(workdir), str(stop), str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
  try:
    _, err = trainer.communicate(timeout=TIMEOUT_S)
    ended = time.time()
  finally:
    stop.write_text("")
    _, reader_err = reader.communicate(timeout=TIMEOUT_S)
  assert trainer.returncode == 0, err[-3000:]
  assert reader.returncode == 0, reader_err[-3000:]
  reads = json.loads(out.read_text())
  during = [r for r in reads if r[2] < ended]
  assert len(during) >= 3, reads  # the readers really ran while it trained
  failed = [r for r in reads if r[1] != 0]
  assert not failed, failed
  assert _losses(workdir) == _losses(alone)
  assert sorted(_losses(workdir)) == list(range(1, STEPS + 1))
  for x, y in zip(_params(workdir), _params(alone)):
    np.testing.assert_array_equal(x, y)
  assert not (workdir / "run.lock").exists()
  assert not os.path.exists(f"{workdir}/checkpoints-corrupt")


def test_a_reader_opens_a_run_whose_trainer_deletes_a_step_while_it_lists_them(tmp_path,
                                                                               monkeypatch):
  """The trainer deletes old steps (train.keep_checkpoints) at any moment: a step that a
  reader's listing saw and that is gone before the reader reads it is not an error."""
  import shutil
  from etils import epath
  from refinedweb_jax.train import checkpoint
  from train_test import tiny_setup
  state = tiny_setup()[4]
  directory = tmp_path / "checkpoints"
  writer = checkpoint.Checkpointer(str(directory), save_every=1, async_save=False)
  for step in (1, 2, 3):
    writer.save(step, state, config={"a": 1}, tokenizer_proto=b"\x00spm", force=True)
  writer.close()

  # The trainer's deletion (shutil.rmtree) is under way: the step's metadata file is gone, and
  # the rest goes after the reader listed the step and before it reads the folder's time.
  (directory / "1" / "_CHECKPOINT_METADATA").unlink()
  path_type, deleted = type(epath.Path(directory)), []
  stat = path_type.stat

  def deleted_then_stat(self):
    if str(self) == str(directory / "1") and not deleted:
      deleted.append(True)
      shutil.rmtree(directory / "1")
    return stat(self)

  monkeypatch.setattr(path_type, "stat", deleted_then_stat)
  reader = checkpoint.Checkpointer(str(directory), read_only=True)
  assert deleted and reader.manager.all_steps() == [2, 3]
  assert reader.restore_metadata(3) == ({"a": 1}, b"\x00spm")
