"""What a person reads while a run trains: each log line says how long (elapsed, seconds per
step, ETA, host wait), and a terminal gets a progress bar; a log file gets plain lines."""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

from first_hour_test import TINY


def _train_flags(data_dir):
  return TINY + [f"--config.data.data_dir={data_dir}", "--config.data.num_train=400",
                 "--config.data.num_validation=40", "--config.data.num_test=20",
                 "--config.data.vocab_size=600", "--config.train.progress_bar=true",
                 "--config.train.decode_examples_per_task=0"]


def _under_a_terminal(argv, env) -> str:
  """Runs argv with stdin, stdout and stderr on a pseudo-terminal; everything it wrote."""
  master, slave = pty.openpty()
  fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 x 120
  proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                          close_fds=True)
  os.close(slave)
  chunks = []
  while True:
    ready, _, _ = select.select([master], [], [], 1.0)
    if ready:
      try:
        data = os.read(master, 65536)
      except OSError:  # the terminal closed: the process is gone
        break
      if not data:
        break
      chunks.append(data)
    elif proc.poll() is not None:
      break
  proc.wait(timeout=60)
  os.close(master)
  assert proc.returncode == 0, b"".join(chunks)[-3000:].decode("utf-8", "replace")
  return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_a_progress_bar_and_timed_lines(tiny_data_dir, tmp_path, env):
  argv = [sys.executable, "-m", "refinedweb_jax.cli", "train", "--workdir",
          str(tmp_path / "run")] + _train_flags(tiny_data_dir)
  text = _under_a_terminal(argv, dict(env, COLUMNS="120"))
  assert re.search(r"train:\s+\d+%\|", text), text[-2000:]  # tqdm's bar
  lines = [l for l in re.split(r"[\r\n]+", text) if l.startswith("step 6/6")]
  assert lines and re.search(r"s/step  elapsed \S+  ETA \S+  host wait \d+%", lines[-1]), lines


def test_a_log_file_gets_plain_timed_lines_and_no_bar(tiny_data_dir, tmp_path, env):
  out = subprocess.run([sys.executable, "-m", "refinedweb_jax.cli", "train", "--workdir",
                        str(tmp_path / "run")] + _train_flags(tiny_data_dir), env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "%|" not in out.stdout + out.stderr and "\r" not in out.stdout + out.stderr
  steps = [l for l in out.stdout.splitlines() if l.startswith("step ")]
  assert [l.split()[1] for l in steps] == ["2/6", "4/6", "6/6"], steps
  assert all(re.search(r"elapsed \S+  ETA \S+  host wait \d+%", l) for l in steps), steps
  assert "done: step 6" in out.stdout
