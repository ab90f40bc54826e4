"""End to end: the CLI trains, resumes, evaluates and generates; bad input fails cleanly."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from refinedweb_jax import api
from refinedweb_jax import cli as main
from refinedweb_jax.train import checkpoint, trainer
from conftest import tiny_config


def _overrides(config):
  """--config.* flags reproducing a tiny config on the command line."""
  flags = []
  for section in ("data", "train", "optimizer"):
    for key, value in config[section].items():
      flags.append(f"--config.{section}.{key}={value}")
  return flags + ["--config.model.preset=tiny"]


def test_resume_after_crash_equals_uninterrupted(tiny_data_dir, tmp_path, monkeypatch):
  config = tiny_config(tiny_data_dir)
  config.train.eval_every = 100  # only the final eval
  full = trainer.train_and_evaluate(config, str(tmp_path / "full"))

  original_due = checkpoint.Checkpointer.due  # asked after every step

  def crash_at_step_5(self, step):
    if step == 5:
      raise RuntimeError("simulated crash")
    return original_due(self, step)

  monkeypatch.setattr(checkpoint.Checkpointer, "due", crash_at_step_5)
  with pytest.raises(RuntimeError, match="simulated crash"):
    trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  monkeypatch.setattr(checkpoint.Checkpointer, "due", original_due)
  # Steps 4 and 5 are replayed from the step-3 checkpoint, data iterator included.
  resumed = trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  steps = [json.loads(l)["step"] for l in open(tmp_path / "resumed" / "metrics.jsonl")
           if json.loads(l)["split"] == "train"]
  # The replayed steps replace the rows the crashed run had logged after its checkpoint.
  assert steps == [2, 4, 6], steps
  history = api.read_history(str(tmp_path / "resumed"))["history"]
  assert [step for step, _ in history["train/loss"]] == [2, 4, 6]
  assert [step for step, _ in history["eval/loss"]] == [0, 6]


def test_cli_train_generate_eval(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  cli = [sys.executable, "-m", "refinedweb_jax.cli"]
  flags = _overrides(tiny_config(tiny_data_dir))
  out = subprocess.run(cli + ["train", "--workdir", workdir] + flags, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "[eval step 6]" in out.stdout + out.stderr
  files = os.listdir(workdir)
  assert {"metrics.jsonl", "samples.jsonl", "tensorboard", "checkpoints"} <= set(files)
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(f"{workdir}/tensorboard"))
  assert sorted(os.listdir(f"{workdir}/checkpoints"))[-1] == "6"
  records = [json.loads(l) for l in open(f"{workdir}/metrics.jsonl")]
  assert records[0]["split"] == "eval" and records[0]["step"] == 0
  assert {"train/loss", "train/tokens_per_second"} <= set(records[1])

  out = subprocess.run(cli + ["generate", "--workdir", workdir, "--text",
                              "translate English to German: 42", "--text", "chat: hello"],
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert len(out.stdout.splitlines()) == 2

  out = subprocess.run(cli + ["generate", "--workdir", workdir, "--task", "translate_en_de"],
                       input="7\n12\n", capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and len(out.stdout.splitlines()) == 2, out.stderr[-3000:]

  out = subprocess.run(cli + ["eval", "--workdir", workdir], capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("[eval step 6] loss ") and "predictions: " in out.stdout

  # A beam wider than the vocabulary: one line naming the flag and the range, before decoding.
  out = subprocess.run(cli + ["generate", "--workdir", workdir, "--beam", "100000", "--text",
                              "chat: hello"], capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr[-3000:]
  assert "--beam 100000 is more than this model's vocabulary of" in out.stderr
  assert "allowed: 1.." in out.stderr


@pytest.mark.parametrize("argv, message", [
    (["train", "--workdir", "W", "--config.model.nope=1"],
     "unknown config key 'config.model.nope'"),
    (["train", "--workdir", "W", "--config.model.preset=huge"], "unknown model preset 'huge'"),
    (["train", "--workdir", "W", "--config.model.encoder_attention=fancy"],
     "unknown attention kind 'fancy'"),
    (["train", "--workdir", "W", "--config.model.encoder_attention=global_local",
      "--config.model.attention.global_positions=0-999"],
     "model.attention.global_positions 256-999 never occur in sequences of 256 tokens"),
    (["train", "--workdir", "W", "--config.model.encoder_attention=local",
      "--config.model.attention.window=0"], "model.attention.window must be >= 1, got 0"),
    (["train", "--workdir", "W", "--config.model.decoder_attention=bigbird",
      "--config.model.attention.window_blocks=2"],
     "model.attention.window_blocks must be odd, got 2"),
    (["train", "--workdir", "W", "--config.mixture.tasks=translate_en_xx"],
     "unknown task 'translate_en_xx'"),
    (["train", "--workdir", "W", "--config.train.num_steps=many"], "config.train.num_steps"),
    (["generate", "--workdir", "W", "--task", "poetry", "--text", "x"], "unknown task 'poetry'"),
    (["generate", "--workdir", "W", "--text", "  "], "empty input text"),
    (["fly"], "unknown command 'fly'"),
    (["train", "--workdir", "W", "--bogus"], "unknown flag '--bogus'"),
    (["train", "--workdir", "W", "--config", "no/such.py"], "config file 'no/such.py' not found"),
])
def test_bad_input_is_one_line_error(argv, message, capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert main.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_generate_without_checkpoint_is_one_line_error(tmp_path, capsys):
  assert main.main(["generate", "--workdir", str(tmp_path), "--text", "chat: hi"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "no checkpoint" in err, err


def test_invalid_utf8_on_stdin_is_one_line_error(tmp_path):
  out = subprocess.run([sys.executable, "-m", "refinedweb_jax.cli", "generate", "--workdir",
                        str(tmp_path)], input=b"\xff\xfe bad\n", capture_output=True, timeout=120)
  assert out.returncode == 2
  assert b"not valid UTF-8" in out.stderr and b"Traceback" not in out.stderr


def test_multitask_experiment_prints_per_task_table(tmp_path, capsys):
  settled = main.settle(*main.parse([
      "train", "--workdir", str(tmp_path / "run"), "--config",
      "experiments/train_small_multitask.py:smoke", f"--config.data.data_dir={tmp_path / 'data'}",
      "--config.train.num_steps=4", "--config.train.eval_every=4",
      "--config.train.progress_bar=false"]))
  assert len(settled.config.mixture.tasks.split(",")) >= 6
  trainer.train(settled, str(tmp_path / "run"))
  captured = capsys.readouterr()
  out = captured.out + captured.err
  for line in ("translate_en_zh", "summarize", "qa", "code", "chat"):
    assert any(row.strip().startswith(line) for row in out.splitlines()), line
  for metric in ("bleu", "rouge1", "f1", "pass@1", "exact_match"):
    assert metric in out, metric
  records = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  assert "eval/translate_en_zh/bleu" in records[-1] and "eval/code/pass@1" in records[-1]


def test_prepare_own_task_reports_malformed_lines_and_leaves_nothing(tmp_path, capsys):
  bad = tmp_path / "pairs.tsv"
  bad.write_bytes(b"hello\thallo\nno tab here\n\xff\tbroken\nok\t\n")
  data_dir = tmp_path / "data"
  argv = ["prepare", "--task", "mine", "--train", str(bad), f"--config.data.data_dir={data_dir}"]
  assert main.main(argv) == 2
  err = capsys.readouterr().err
  assert f"{bad}:2:" in err and f"{bad}:3:" in err and f"{bad}:4:" in err
  assert not data_dir.exists() or not any(data_dir.rglob("*.array_record*"))
  assert main.main(argv + ["--skip-malformed"]) == 0
  assert "--config.mixture.tasks=mine" in capsys.readouterr().out
