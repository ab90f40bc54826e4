"""No saved state that is silently wrong: only finite steps are saved, a step from another
run is refused, an emptied checkpoints/ is no new run, and a step with any damaged item goes
aside whole (parameters, config and tokenizer then all come from the step before)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from reliability_test import (STEPS, TIMEOUT_S, _assert_same_params, _corrupt, _flags, _run,
                              _steps_once)
from reliability_test import every_fourth  # noqa: F401  (a fixture, found by name)
from faults_test import _copy, _errors, _json_item


def _cli(*args, env):
  out = subprocess.run([sys.executable, "-m", "refinedweb_jax.cli", *map(str, args)], env=env,
                       capture_output=True, text=True, timeout=TIMEOUT_S)
  return out.returncode, out.stdout, out.stderr


def _unchanged(workdir):
  """The files a start would rewrite, to compare after a refused one."""
  return {name: (workdir / name).read_bytes() for name in ("config.json", "metrics.jsonl",
                                                           "runs.jsonl")}


def test_a_diverged_update_is_never_saved_and_a_resume_continues(tiny_data_dir, tmp_path, env):
  """4a: learning_rate=1e39 from step 2 on overflows the parameters although the loss and
  gradient norm were finite: the halt keeps step 2, names it, and a resume continues."""
  workdir = tmp_path / "run"
  flags = _flags(tiny_data_dir, checkpoint_every=1, num_steps=2)
  code, err = _run(workdir, flags, env)
  assert code == 0, err[-3000:]
  more = ["--config.train.num_steps=4"]
  code, err = _run(workdir, flags + more + ["--config.optimizer.learning_rate=1e39"], env)
  assert code == 1, err[-3000:]
  lines = _errors(err)
  assert len(lines) == 1 and "not finite" in lines[0], err[-3000:]
  assert "newest checkpoint (step 2) is untouched" in lines[0], lines
  saved = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
  assert saved[-1] == 2, saved
  from refinedweb_jax.train import setup
  import jax
  params = setup.restore(str(workdir / "checkpoints" / "2")).params
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  # The saved step is sound: the run continues from it with a learning rate that works.
  code, err = _run(workdir, flags + more + ["--config.optimizer.learning_rate=1e-3"], env)
  assert code == 0, err[-3000:]


def test_a_checkpoint_from_another_run_is_refused_naming_the_keys(every_fourth, tiny_data_dir,
                                                                   tmp_path, env):
  """4b: a newer step of a run with another seed and d_ff, copied into checkpoints/."""
  other = tmp_path / "other"
  code, err = _run(other, _flags(tiny_data_dir, num_steps=STEPS + 4, checkpoint_every=STEPS + 4)
                   + ["--config.seed=7", "--config.model.d_ff=48"], env)
  assert code == 0, err[-3000:]
  workdir, flags = _copy(every_fourth, tmp_path)
  shutil.copytree(other / "checkpoints" / str(STEPS + 4), workdir / "checkpoints" / str(STEPS + 4))
  before = _unchanged(workdir)
  for command in (["train", "--workdir", workdir] + flags, ["config", "--workdir", workdir]):
    code, _, err = _cli(*command, env=env)
    assert code == 2 and len(_errors(err)) == 1 and "Traceback" not in err, err[-3000:]
    line = _errors(err)[0]
    assert "saved by another run" in line and "model.d_ff: 48 there" in line, line
    assert "seed: 7 there, 0 in" in line, line
  assert _unchanged(workdir) == before
  assert sorted(os.listdir(workdir / "checkpoints")) == ["12", "16", "4", "8"]


def test_a_step_saved_without_a_fingerprint_still_loads(every_fourth, tmp_path, env):
  """4b: steps saved before fingerprints were (no "fingerprint" in their checksums)."""
  workdir, flags = _copy(every_fourth, tmp_path)
  for step in (4, 8, STEPS):
    path, sums = _json_item(workdir / "checkpoints" / str(step), "checksums")
    assert "fingerprint" in sums
    del sums["fingerprint"]
    path.write_text(json.dumps(sums))
  code, out, err = _cli("generate", "--workdir", workdir, "--text", "chat: hi",
                        "--max-new-tokens", "2", env=env)
  assert code == 0 and not _errors(err), err[-3000:]


@pytest.mark.parametrize("how", ["emptied", "removed"])
def test_an_emptied_checkpoints_folder_is_no_new_run(every_fourth, tmp_path, env, how):
  """4c: runs.jsonl records step 12; checkpoints/ holds nothing: one line, nothing changed."""
  workdir, flags = _copy(every_fourth, tmp_path)
  shutil.rmtree(workdir / "checkpoints")
  if how == "emptied":
    (workdir / "checkpoints").mkdir()
  before = _unchanged(workdir)
  code, err = _run(workdir, flags, env)
  assert code == 2 and len(_errors(err)) == 1 and "Traceback" not in err, err[-3000:]
  line = _errors(err)[0]
  assert f"checkpointed at step {STEPS}" in line and "new --workdir" in line, line
  assert _unchanged(workdir) == before
  assert not (workdir / "run.lock").exists()


def _damage(step_dir, item):
  if item in ("config", "checksums"):
    path, _ = _json_item(step_dir, item)
    path.write_text(path.read_text()[:40])  # cut: no longer JSON
  elif item == "assets":
    path, assets = _json_item(step_dir, item)
    model = assets["tokenizer_model"]
    assets["tokenizer_model"] = model[:100] + ("A" if model[100] != "A" else "B") + model[101:]
    path.write_text(json.dumps(assets))
  else:
    files = [os.path.join(root, f) for root, _, names in os.walk(step_dir / item) for f in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
      f.truncate(os.path.getsize(largest) // 2)


@pytest.mark.parametrize("item", ["config", "assets", "checksums", "optimizer"])
def test_a_damaged_item_of_any_kind_moves_its_whole_step_aside(every_fourth, tmp_path, env,
                                                               item):
  """4d: the trainer resumes step 8 (its parameters, config and tokenizer), step 12 goes to
  checkpoints-corrupt/, and steps 9-12 train again to the uninterrupted result."""
  workdir, flags = _copy(every_fourth, tmp_path)
  _damage(workdir / "checkpoints" / str(STEPS), item)
  proc = subprocess.run([sys.executable, "-m", "refinedweb_jax.cli", "train", "--workdir",
                         str(workdir)] + flags, env=env, capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resumed from step 8" in proc.stdout, proc.stdout[-3000:]
  aside = os.listdir(f"{workdir}/checkpoints-corrupt")
  assert len(aside) == 1 and aside[0].startswith(f"{STEPS}-"), aside
  _assert_same_params(workdir, every_fourth[0])
  _steps_once(workdir)
