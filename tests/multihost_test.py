"""Multi-process runs from the command line, as gloo processes on this machine.

One tiny run, 8 CPU devices in all: trained uninterrupted on 2 processes x 4 devices; the
same run preempted after its step-2 save and continued on 1 process x 8 devices and on 4
processes x 2 devices, each reaching step 4 with the uninterrupted run's losses and global
batches at every step and its final parameters; evaluation on 2 processes equal to 1; a distillation
dump started on 2 processes, stopped, and finished on 1, byte for byte the uninterrupted
dump. Tolerances: losses and parameters 1e-5 (the mesh changes the order of reductions).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from refinedweb_jax.train import setup

TIMEOUT_S = 420
TASKS = "translate_en_de,translate_de_en"


def _flags(data_dir):
  return ["--config.model.preset=tiny", f"--config.data.data_dir={data_dir}",
          "--config.data.num_train=400", "--config.data.num_validation=40",
          "--config.data.num_test=20", "--config.data.vocab_size=600",
          "--config.data.input_length=32", "--config.data.target_length=16",
          "--config.data.batch_size=8", f"--config.mixture.tasks={TASKS}",
          "--config.train.log_every=1", "--config.train.eval_every=4",
          "--config.train.checkpoint_every=2", "--config.train.eval_examples=8",
          "--config.train.eval_batch_size=8", "--config.train.decode_examples_per_task=0",
          "--config.train.max_decode_length=4", "--config.train.async_checkpointing=false",
          "--config.train.progress_bar=false", "--config.model.dropout_rate=0.1",
          "--config.optimizer.warmup_steps=1"]


def _port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(argv, processes: int, devices: int, env):
  """`refinedweb ARGV` on `processes` gloo processes of `devices` CPU devices each."""
  env = dict(env, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(key, None)
  port = _port()
  extra = lambda i: ([f"--config.distributed.coordinator_address=localhost:{port}",
                      f"--config.distributed.num_processes={processes}",
                      f"--config.distributed.process_id={i}"] if processes > 1 else [])
  return [subprocess.Popen([sys.executable, "-m", "refinedweb_jax.cli"] + argv + extra(i),
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True) for i in range(processes)]


def _finish(procs) -> str:
  """Waits for every process (a hung collective fails, not hangs); process 0's output."""
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=TIMEOUT_S))
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs[0][0] + outs[0][1]


def _cli(argv, processes, devices, env) -> str:
  return _finish(_start(argv, processes, devices, env))


def _train_rows(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r for r in rows if r["split"] == "train"}


@pytest.fixture(scope="module")
def runs(tiny_data_dir, env, tmp_path_factory):
  root = tmp_path_factory.mktemp("multihost")
  flags = _flags(tiny_data_dir)
  train = lambda workdir, steps: ["train", "--workdir", str(root / workdir),
                                  f"--config.train.num_steps={steps}"] + flags
  _cli(train("whole", 4), 2, 4, env)
  # Preempted after its step-2 save: a copy of it without step 4 (its logs after step 2 are
  # replayed), continued with only its workdir on 1 process and on 4.
  for name in ("one", "four"):
    shutil.copytree(root / "whole", root / name)
    shutil.rmtree(root / name / "checkpoints" / "4")
  again = lambda name: ["train", "--workdir", str(root / name), "--config.train.num_steps=4"]
  logs = {"one": _cli(again("one"), 1, 8, env), "four": _cli(again("four"), 4, 2, env)}
  return root, logs


def test_a_run_continues_on_another_process_count_exactly(runs):
  root, logs = runs
  whole = _train_rows(root / "whole")
  for name, shape in (("one", "1 process(es), mesh {'data': 8"),
                      ("four", "4 process(es), mesh {'data': 8")):
    assert f"resumed on {shape}" in logs[name], logs[name][-2000:]
    rows = _train_rows(root / name)
    assert sorted(rows) == [1, 2, 3, 4]
    for step in range(1, 5):
      assert rows[step]["train/batch_digest"] == whole[step]["train/batch_digest"], (name, step)
      np.testing.assert_allclose(rows[step]["train/loss"], whole[step]["train/loss"],
                                 rtol=1e-5, err_msg=f"{name} step {step}")
    finals = [jax.tree.leaves(setup.restore(str(root / run)).params) for run in (name, "whole")]
    for a, b in zip(*finals):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def test_evaluation_on_two_processes_equals_one(runs, env):
  root, _ = runs
  argv = ["eval", "--workdir", str(root / "whole"), "--examples", "2"]
  outputs = [_cli(argv, processes, 4 // processes, env) for processes in (2, 1)]
  rows = [json.loads(line) for line in open(root / "whole" / "metrics.jsonl")]
  evals = [r for r in rows if r["split"] == "eval" and r["step"] == 4]
  assert len(evals) == 1  # the second evaluation of step 4 replaced the first
  tables = [[line.split("  (")[0] for line in out.splitlines()
             if line.startswith("[eval step 4]") or line.startswith("  translate_")]
            for out in outputs]
  assert tables[0] and tables[0] == tables[1], tables


def test_a_dump_started_on_two_processes_finishes_on_one_byte_for_byte(runs, env):
  root, _ = runs
  teacher = str(root / "whole")
  dump = lambda out: ["distill", "dump", "--teacher", teacher, "--out", str(root / out),
                      "--config.distill.shard_examples=4", "--config.distill.top_k=8"]
  _cli(dump("dump_whole"), 1, 4, env)
  shards = sorted(n for n in os.listdir(root / "dump_whole") if n.endswith(".array_record"))
  assert len(shards) >= 3
  procs = _start(dump("dump_split"), 2, 2, env)
  first = root / "dump_split" / shards[0]
  deadline = time.time() + TIMEOUT_S
  while not first.exists() and time.time() < deadline and all(p.poll() is None for p in procs):
    time.sleep(0.01)  # shards follow each other quickly: stop right after the first
  for p in procs:  # preempted after its first shard
    if p.poll() is None:
      os.killpg(p.pid, signal.SIGKILL)
  for p in procs:
    p.wait()
  assert first.exists()
  done = [n for n in shards if (root / "dump_split" / n).exists()]
  assert len(done) < len(shards), done  # stopped part way
  _cli(dump("dump_split"), 1, 4, env)
  for name in sorted(os.listdir(root / "dump_whole")):
    assert (root / "dump_split" / name).read_bytes() == (root / "dump_whole" / name).read_bytes(), name
