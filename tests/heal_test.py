"""Logs and locks that heal: a log cut mid-line (a crash, a full disk) or a damaged line does
not stop the next start, and a lock file no live start can have written is taken over."""

import json
import os
import platform
import threading
import time

import pytest

from refinedweb_jax.train import lock, logger, resume

ROW = {"step": 10, "split": "train", "train/loss": 1.5}


def _age(path, seconds):
  then = time.time() - seconds
  os.utime(path, (then, then))


def _lines(path):
  return path.read_text().splitlines()


@pytest.mark.parametrize("name", ["metrics.jsonl", "runs.jsonl"])
def test_a_cut_last_line_is_kept_aside_and_the_log_repaired(name, tmp_path, capsys):
  log = tmp_path / name
  whole = json.dumps(ROW) + "\n"
  log.write_text(whole + json.dumps({**ROW, "step": 20})[:17])  # cut mid-row
  assert logger.read_rows(str(log)) == [ROW]  # a reader skips it and changes nothing
  assert log.read_text().endswith(json.dumps({**ROW, "step": 20})[:17])
  logger.append_text(str(log), json.dumps({**ROW, "step": 30}) + "\n")
  assert [r["step"] for r in logger.read_rows(str(log))] == [10, 30]
  aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{name}.partial-")]
  assert len(aside) == 1 and aside[0].read_text() == json.dumps({**ROW, "step": 20})[:17]
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "last line was cut" in err and aside[0].name in err, err


def test_a_start_reads_runs_jsonl_cut_mid_line(tmp_path, capsys):
  (tmp_path / "runs.jsonl").write_text(json.dumps({"step": 0, "command": "x"}) + "\n"
                                       + '{"step": 30, "command": "refinedweb tr')
  assert resume.last_start(str(tmp_path)) == {"step": 0, "command": "x"}


def test_a_replaying_logger_repairs_metrics_jsonl(tmp_path, capsys):
  log = tmp_path / "metrics.jsonl"
  log.write_text("".join(json.dumps({**ROW, "step": s}) + "\n" for s in (1, 2, 3))
                 + '{"step": 4, "split": "tr')
  writer = logger.MetricLogger(str(tmp_path), replay_from=3, tensorboard=False)
  writer.scalars(3, "train", {"train/loss": 0.5})
  assert [r["step"] for r in logger.read_rows(str(log))] == [1, 2, 3]
  assert "last line was cut" in capsys.readouterr().err


def test_a_row_without_step_or_a_bad_line_is_skipped_naming_file_and_line(tmp_path, capsys):
  log = tmp_path / "metrics.jsonl"
  log.write_text(json.dumps(ROW) + "\n" + json.dumps({"split": "train"}) + "\n"
                 + "garbage{\n" + "[1, 2]\n" + json.dumps({**ROW, "step": 11}) + "\n")
  assert [r["step"] for r in logger.read_rows(str(log))] == [10, 11]
  err = capsys.readouterr().err
  for number in (2, 3, 4):
    assert f"{log}:{number}: skipped" in err, err
  logger.drop_rows_from(str(log), 11)  # was a KeyError: 'step'
  assert [r["step"] for r in logger.read_rows(str(log))] == [10]
  logger.drop_rows_from(str(log), 10, "train")
  assert logger.read_rows(str(log)) == []
  assert len(_lines(log)) == 3  # the lines that are not rows are left as they were


def test_history_and_sweep_rows_skip_damaged_lines(tmp_path):
  from refinedweb_jax import api
  from refinedweb_jax.sweep import workdirs
  (tmp_path / "metrics.jsonl").write_text(
      json.dumps(ROW) + "\n" + json.dumps({"split": "eval", "eval/bleu": 3}) + "\n"
      + json.dumps({"step": 12, "split": "eval", "eval/bleu": 4.0}) + "\n" + '{"st')
  history = api.read_history(str(tmp_path))
  assert history["step"] == 12 and history["eval"] == {"eval/bleu": 4.0}
  assert [r["step"] for r in workdirs.read_rows(tmp_path)] == [10, 12]


@pytest.fixture
def lockfile(tmp_path):
  return tmp_path / lock.NAME


DAMAGED = [
    ("list", "[1, 2]", "not a lock record"),
    ("pid_text", json.dumps({"host": platform.node(), "pid": "abc"}), "pid 'abc'"),
    ("garbage", "\x00\x01 not json", "not JSON"),
    ("pid_2_64", json.dumps({"host": platform.node(), "pid": 2**64}), f"pid {2**64}"),
    ("pid_negative", json.dumps({"host": platform.node(), "pid": -5}), "pid -5"),
    ("pid_zero", json.dumps({"host": "elsewhere", "pid": 0}), "pid 0"),
    ("empty", "", "it is empty"),
]


@pytest.mark.parametrize("text, why", [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_a_damaged_lock_is_taken_over_saying_so(text, why, lockfile, capsys):
  lockfile.write_text(text)
  _age(lockfile, lock.EMPTY_S + 1)
  held = lock.Lock(str(lockfile.parent)).acquire()
  try:
    assert json.loads(lockfile.read_text())["token"] == held.token
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "took over the lock" in err and why in err, err
    assert str(lockfile) in err, err
  finally:
    held.release()
  assert not lockfile.exists()


def test_a_fresh_empty_lock_is_waited_for_and_then_names_its_holder(lockfile, monkeypatch):
  """An empty lock younger than EMPTY_S may be a start between creating and writing it."""
  lockfile.write_text("")
  record = {"host": platform.node(), "pid": os.getpid(), "since": "now", "token": "t"}
  threading.Timer(0.4, lambda: lockfile.write_text(json.dumps(record))).start()
  with pytest.raises(lock.Busy, match=f"in use by pid {os.getpid()}"):
    lock.Lock(str(lockfile.parent)).acquire()


def test_an_empty_lock_left_by_a_crash_is_taken_over_once_old(lockfile, monkeypatch, capsys):
  monkeypatch.setattr(lock, "EMPTY_S", 0.6)
  lockfile.write_text("")
  start = time.time()
  held = lock.Lock(str(lockfile.parent)).acquire()
  held.release()
  assert 0.4 < time.time() - start < 5  # waited
  assert "it is empty" in capsys.readouterr().err


def test_a_same_host_lock_without_heartbeat_is_taken_over_though_its_pid_lives(lockfile,
                                                                              capsys):
  """pids are reused: a live pid whose lock was not renewed for STALE_S is not its holder."""
  record = {"host": platform.node(), "pid": os.getppid(), "since": "then", "token": "t"}
  lockfile.write_text(json.dumps(record))
  _age(lockfile, 60)
  with pytest.raises(lock.Busy, match=f"in use by pid {os.getppid()}"):
    lock.Lock(str(lockfile.parent)).acquire()
  _age(lockfile, lock.STALE_S + 60)
  held = lock.Lock(str(lockfile.parent)).acquire()
  held.release()
  err = capsys.readouterr().err
  assert f"of pid {os.getppid()}" in err and "heartbeat stopped" in err, err


def test_a_run_whose_logs_were_cut_and_lock_garbled_resumes(tiny_data_dir, tmp_path, env):
  """What a crash mid-write leaves (both logs cut mid-line, a lock file half written) does not
  stop the next start: each is repaired or taken over in one line, and the run goes on."""
  import subprocess
  import sys
  from reliability_test import _flags
  workdir = tmp_path / "run"

  def train(steps):
    command = [sys.executable, "-m", "refinedweb_jax.cli", "train", "--workdir", str(workdir)]
    return subprocess.run(command + _flags(tiny_data_dir, num_steps=steps, checkpoint_every=2),
                          env=env, capture_output=True, text=True, timeout=600)
  first = train(2)
  assert first.returncode == 0, first.stderr[-3000:]
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"step": 3, "split": "train", "train/lo')
  with open(workdir / "runs.jsonl", "a") as f:
    f.write('{"time": "2026-12-07T21:00:00+00:00", "step": 2, "comm')
  (workdir / lock.NAME).write_text("[1, 2]")
  _age(workdir / lock.NAME, lock.EMPTY_S + 1)
  second = train(4)
  assert second.returncode == 0, second.stderr[-3000:]
  err = second.stderr
  assert "took over the lock" in err and "not a lock record" in err, err[-3000:]
  for name in ("metrics.jsonl", "runs.jsonl"):
    assert f"{name}: its last line was cut" in err, err[-3000:]
    assert len(list(workdir.glob(f"{name}.partial-*"))) == 1
  steps = [r["step"] for r in logger.read_rows(str(workdir / "metrics.jsonl"), "train")]
  assert steps == [1, 2, 3, 4], steps
  runs = (workdir / "runs.jsonl").read_text().splitlines()
  assert len(logger.read_rows(str(workdir / "runs.jsonl"))) == len(runs) >= 2  # each line whole
  assert not any('"comm' in line and "command" not in line for line in runs)
  assert "Traceback" not in err and not (workdir / lock.NAME).exists()
