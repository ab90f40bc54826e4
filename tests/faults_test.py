"""The last checkpoint faults, through the real command line: every step damaged, a changed
data position, tokenizer or config, an empty newest step, two runs on one workdir, the
noise of a handled fault, signals while starting and during a save."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from reliability_test import (STEPS, TIMEOUT_S, _assert_same_params, _corrupt, _run, _saving,
                              _start, _steps_once, _train_steps, _wait)
from reliability_test import every_fourth, reference  # noqa: F401  (fixtures, found by name)


def _copy(every_fourth, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(every_fourth[0], workdir)
  return workdir, every_fourth[1]


def _json_item(step_dir, item):
  """(path, record) of a checkpoint's JSON item (Orbax writes the record in one file)."""
  folder = step_dir / item
  path = next(folder / n for n in os.listdir(folder) if not n.startswith("_"))
  return path, json.loads(path.read_text())


def _errors(err: str) -> list:
  return [line for line in err.splitlines() if line.startswith("refinedweb:")]


def test_every_damaged_checkpoint_stops_in_one_line_and_changes_nothing(every_fourth, tmp_path,
                                                                         env):
  """1: no silent restart, no moved iterator, no rewritten logs."""
  workdir, flags = _copy(every_fourth, tmp_path)
  for step in (4, 8, STEPS):
    _corrupt(workdir / "checkpoints" / str(step), "truncated")
  metrics = (workdir / "metrics.jsonl").read_bytes()
  code, err = _run(workdir, flags, env)
  assert code == 2, err[-3000:]
  last = _errors(err)[-1]
  assert "no checkpoint in" in last and "reads back (steps 12, 8, 4 are damaged)" in last, err
  assert "mv " in last and "Traceback" not in err
  assert (workdir / "metrics.jsonl").read_bytes() == metrics
  assert sorted(os.listdir(workdir / "checkpoints")) == ["12", "4", "8"]


def test_a_changed_data_position_falls_back_to_the_step_before(reference, every_fourth,
                                                               tmp_path, env):
  """2: the data position is checksummed; the continuation is the uninterrupted one."""
  workdir, flags = _copy(every_fourth, tmp_path)
  path, record = _json_item(workdir / "checkpoints" / str(STEPS), "data_state")
  record["cursor"] -= 100
  path.write_text(json.dumps(record))
  code, err = _run(workdir, flags, env)
  assert code == 0, err[-3000:]
  warnings = [l for l in err.splitlines() if f"checkpoint step {STEPS}" in l]
  assert len(warnings) == 1 and "data_state: its SHA-256 differs" in warnings[0], err
  _assert_same_params(workdir, reference)
  _steps_once(workdir)


def test_a_changed_tokenizer_or_config_falls_back_for_every_command(every_fourth, tmp_path,
                                                                     env):
  """2, 4: a changed byte of the tokenizer asset, a truncated config: the step before."""
  workdir, flags = _copy(every_fourth, tmp_path)
  path, assets = _json_item(workdir / "checkpoints" / str(STEPS), "assets")
  model = assets["tokenizer_model"]
  assets["tokenizer_model"] = model[:100] + ("A" if model[100] != "A" else "B") + model[101:]
  path.write_text(json.dumps(assets))
  path, _ = _json_item(workdir / "checkpoints" / "8", "config")
  path.write_text(path.read_text()[:200])  # truncated: no longer JSON
  out = subprocess.run([sys.executable, "-m", "refinedweb_jax.cli", "generate", "--workdir",
                        str(workdir), "--text", "chat: hi", "--max-new-tokens", "2"], env=env,
                       capture_output=True, text=True, timeout=TIMEOUT_S)
  assert out.returncode == 0, out.stderr[-3000:]
  warnings = [l for l in out.stderr.splitlines() if "does not read back" in l]
  assert [w.split("checkpoint step ")[1].split(" ")[0] for w in warnings] == ["12", "8"], warnings
  assert "assets: its SHA-256 differs" in warnings[0] and "Traceback" not in out.stderr


def test_an_empty_newest_step_falls_back_without_a_traceback(every_fourth, tmp_path, env):
  """3: an empty checkpoints/16 (a save that never wrote): the step before, one warning."""
  workdir, flags = _copy(every_fourth, tmp_path)
  (workdir / "checkpoints" / "16").mkdir()
  code, err = _run(workdir, flags, env)
  assert code == 0, err[-3000:]
  assert "Traceback" not in err and "Exception ignored" not in err, err
  assert any("checkpoint step 16" in l and "does not read back" in l for l in err.splitlines())


def test_a_handled_fault_says_one_line_with_a_whole_reason(every_fourth, tmp_path, env):
  """6: a truncated params file: one warning, a reason cut at a word, no tracebacks."""
  workdir, flags = _copy(every_fourth, tmp_path)
  _corrupt(workdir / "checkpoints" / str(STEPS), "truncated")
  code, err = _run(workdir, flags, env)
  assert code == 0, err[-3000:]
  assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
  warning = next(l for l in err.splitlines() if "does not read back" in l)
  reason = warning.split("(", 1)[1].rsplit(")", 1)[0]
  assert len(reason) < 400 and (reason.endswith("...") or len(reason) < 300), warning


def test_an_old_per_process_data_position_says_how_to_continue(every_fourth, tmp_path, env):
  """A run saved by the Grain pipeline (its data position per process, item `data`): one
  line naming how to go on (its parameters in a new run), which then works."""
  workdir, flags = _copy(every_fourth, tmp_path)
  for step in (4, 8, STEPS):
    folder = workdir / "checkpoints" / str(step)
    os.rename(folder / "data_state", folder / "data")
  code, err = _run(workdir, flags, env)
  assert code == 2 and len(_errors(err)) == 1 and "Traceback" not in err, err[-3000:]
  hint = _errors(err)[0]
  assert "older pipeline (Grain's, per process)" in hint and "--config.train.init_from=" in hint
  new = tmp_path / "new"
  command = hint.split("start a new run from its parameters: ")[1].replace("NEW", str(new))
  out = subprocess.run([sys.executable, "-m", "refinedweb_jax.cli"] + command.split()[1:]
                       + [f for f in flags if not f.startswith(("--config.train.num_steps",
                                                                "--config.train.init_from"))]
                       + ["--config.train.num_steps=2"], env=env, capture_output=True,
                       text=True, timeout=TIMEOUT_S)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"parameters from {workdir}" in out.stdout, out.stdout[-3000:]


def test_a_second_run_on_one_workdir_is_refused_naming_the_holder(tiny_data_dir, tmp_path, env):
  """5: a lock naming its pid and host; a killed holder leaves no lock that blocks."""
  from reliability_test import _flags
  workdir, flags = tmp_path / "run", _flags(tiny_data_dir)
  first = _start(workdir, flags, env)
  _wait(lambda: (workdir / "run.lock").exists(), first, "the lock")
  code, err = _run(workdir, flags, env)
  assert code == 2 and len(_errors(err)) == 1, err[-3000:]
  assert f"in use by pid {first.pid} on host" in err, err
  first.kill()  # dies holding the lock: the next start takes it over
  first.communicate()
  assert (workdir / "run.lock").exists()
  code, err = _run(workdir, flags, env)
  assert code == 0 and f"took over the lock of pid {first.pid}" in err, err[-3000:]
  _steps_once(workdir)
  assert not (workdir / "run.lock").exists()


def test_sigterm_while_starting_and_a_second_signal_while_saving_say_one_line(
    tiny_data_dir, tmp_path, env):
  """8: before the loop's handler is installed; a second signal during a save."""
  from reliability_test import _flags
  workdir, flags = tmp_path / "run", _flags(tiny_data_dir)
  proc = _start(workdir, flags, env)
  time.sleep(1.0)  # importing: long before the first step
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=TIMEOUT_S)
  assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
  assert _errors(err) == [_errors(err)[0]] and "while starting" in _errors(err)[0], err
  proc = _start(workdir, flags, env)
  _wait(lambda: _saving(workdir) and len(_train_steps(workdir)) >= 3, proc, "a save")
  proc.send_signal(signal.SIGINT)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=TIMEOUT_S)
  assert proc.returncode in (130, 0), err[-3000:]
  assert _errors(err), err[-3000:]
  assert "Traceback" not in err
