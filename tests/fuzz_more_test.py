"""More odd command lines, each once a traceback, a silent exit, an unbounded read or a wrong
value accepted: now refused in one line naming the flag and what is allowed (exit 2)."""

import os
import shlex
import tracemalloc
import types

import pytest

from refinedweb_jax import cli, configs
from refinedweb_jax.cli import inputs

W = ["--workdir", "W"]
TRAIN = ["train"] + W
GEN = ["generate"] + W
BIG = 2**64
SECTIONLESS = ("import ml_collections\ndef get_config():\n"
               "  return ml_collections.ConfigDict({'seed': 1})\n")


def _prepare(*flags):
  return ["prepare", "--config.data.data_dir=data"] + list(flags)


CASES = [
    # (argv, what the one line names); paths are made in tmp_path by _files
    (TRAIN + [f"--config.seed={BIG}"], f"config.seed={BIG} is out of range"),
    (TRAIN + ["--config.seed=-1"], "config.seed must be in [0, 2147483647], got -1"),
    (TRAIN + [f"--config.data.shuffle_seed={BIG}"], "config.data.shuffle_seed="),
    (GEN + ["--seed", str(BIG), "--text", "x"], "--seed must be in [0, 2147483647]"),
    (GEN + ["--seed", "-3", "--text", "x"], "--seed must be in [0, 2147483647], got -3"),
    (TRAIN + ["--config.model.d_model=4294967296"], "config.model.d_model=4294967296 is out"),
    (TRAIN + ["--config.data.batch_size=99999999999999999999"], "config.data.batch_size="),
    (TRAIN + [f"--config.train.num_steps={BIG}"], "config.train.num_steps="),
    (TRAIN + ["--config.model.preset=tiny", "--config.data.batch_size=2000000000"],
     "this run needs at least"),
    (TRAIN + ["--config.model.d_model=1048576", "--config.model.num_heads=1",
              "--config.model.head_dim=1048576"], "lower config.data.batch_size or the model"),
    (["train", "--workdir", "gs://bucket/run"], "needs the gcsfs package: pip install gcsfs"),
    (["eval", "--workdir", "gs://bucket/run"], "--workdir 'gs://bucket/run' is on Google Cloud"),
    (TRAIN + ["--config", "sectionless.py"], "sectionless.py': its config has no data, distill"),
    (TRAIN + ["--config", "exit0.py"], "exit0.py:2: it calls exit(0) while loading"),
    (TRAIN + ["--config", "exit3.py"], "exit3.py:1: it calls exit(3) while loading"),
    (TRAIN + ["--config", "exit_in_get.py"], "it calls exit(None) while loading"),
    (TRAIN + ["--config", "own_pass.py"], "task 'mine' asks for metrics pass@1"),
    (TRAIN + ["--config", "own_builtin.py"], "names a task 'translate_en_de', the name of a"),
    (TRAIN + ["--config.mixture.weights=translate_en_de=nan"],
     "config.mixture.weights gives 'translate_en_de' the weight nan"),
    (TRAIN + ["--config.mixture.weights=translate_en_de=inf", "--config.mixture.rate=explicit"],
     "config.mixture.weights gives 'translate_en_de' the weight inf"),
    (TRAIN + ["--config.mixture.weights=translate_en_de=-1", "--config.mixture.rate=explicit"],
     "config.mixture.weights gives 'translate_en_de' the weight -1.0"),
    (_prepare("--task", "zz", "--train", "/dev/zero"),
     "--train '/dev/zero' is not a regular file"),
    (_prepare("--task", "zz", "--format", "tsv", "--train", "big.tsv", "--max-input-bytes",
              "1000"), "has 2,000,000 bytes, more than --max-input-bytes=1,000"),
    (["eval"] + W + ["--input", "/dev/zero", "--format", "tsv"], "--input '/dev/zero' is not a"),
    (["eval"] + W + ["--input", "big.tsv", "--max-input-bytes", "10"], "--max-input-bytes=10;"),
    (GEN + ["--input", "/dev/zero", "--max-input-bytes", "4096"],
     "--input '/dev/zero' has more than --max-input-bytes=4,096 bytes"),
    (_prepare("--task", "translate_en_de", "--train", "my.tsv"),
     "--task 'translate_en_de' is the name of a built-in task"),
    (_prepare("--task", "mine", "--train", "my.tsv", "--metrics", "pass@1"),
     "--metrics pass@1 runs each example's tests"),
    (_prepare("--task", "mine", "--train", "my.tsv", "--split", "validation=0.5", "--seed",
              str(BIG)), "--seed must be in [0, 2147483647]"),
]


OWN_TASK = ("from refinedweb_jax import configs\ndef get_config():\n"
            "  c = configs.default_config()\n"
            "  c.own_tasks = [dict(task={!r}, format='tsv', train=['my.tsv'], metrics={!r})]\n"
            "  return c\n")


def _files(tmp_path):
  (tmp_path / "own_pass.py").write_text(OWN_TASK.format("mine", ["pass@1"]))
  (tmp_path / "own_builtin.py").write_text(OWN_TASK.format("translate_en_de", ["bleu"]))
  (tmp_path / "sectionless.py").write_text(SECTIONLESS)
  (tmp_path / "exit0.py").write_text("import sys\nsys.exit(0)\n")
  (tmp_path / "exit3.py").write_text("exit(3)\n")
  (tmp_path / "exit_in_get.py").write_text("import sys\ndef get_config():\n  sys.exit()\n")
  (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
  (tmp_path / "my.tsv").write_text("hello\tHallo\nworld\tWelt\n")
  with open(tmp_path / "big.tsv", "wb") as f:
    f.truncate(2_000_000)  # sparse: no disk, no line end


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a)[:70] for a, _ in CASES])
def test_once_tracebacks_or_accepted_now_one_line(argv, message, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  _files(tmp_path)
  code = cli.main(argv)
  err = capsys.readouterr().err
  assert code == 2, (argv, code, err)
  assert err.count("\n") == 1 and err.startswith("refinedweb: error: "), err
  assert message in err and "Traceback" not in err, err
  assert not (tmp_path / "data" / "own_tasks.json").exists()  # nothing was prepared


def test_a_json_bomb_is_a_problem_of_its_file(tmp_path, monkeypatch, capsys):
  """100,000 nested brackets: named like any bad line of an own file (file:line), no traceback."""
  monkeypatch.chdir(tmp_path)
  _files(tmp_path)
  for fmt, name in (("squad", "deep.json"), ("jsonl", "deep.jsonl")):
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    code = cli.main(_prepare("--task", "deep", "--format", fmt, "--train", name,
                             "--input-field", "a", "--target-field", "b") if fmt == "jsonl"
                    else _prepare("--task", "deep", "--format", fmt, "--train", name))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert f"{name}:1: JSON nested too deeply" in err, err


def test_a_line_without_end_is_read_in_bounded_pieces(tmp_path, monkeypatch, capsys):
  """A file of one 3 MB line (no line end) is reported as one long line, never held whole."""
  monkeypatch.chdir(tmp_path)
  with open(tmp_path / "one_line.tsv", "wb") as f:
    f.write(b"a\t" + b"x" * 3_000_000)
  code = cli.main(_prepare("--task", "mine", "--format", "tsv", "--train", "one_line.tsv"))
  err = capsys.readouterr().err
  assert code == 2 and "one_line.tsv:1: line of 3000002 bytes, more than max_line_bytes" in err
  from refinedweb_jax.data.datasets import own_files
  tracemalloc.start()
  try:
    lines = [(n, len(raw)) for n, raw in own_files._lines(str(tmp_path / "one_line.tsv"),
                                                           limit=1000)]
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert lines == [(1, 1001)] and peak < 2_000_000, (lines, peak)


def test_a_huge_stdin_is_refused_unread(monkeypatch):
  zero = open("/dev/zero", "rb")  # noqa: SIM115  (closed below)
  monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=zero))
  try:
    with pytest.raises(cli.parser.UserError, match="stdin has more than --max-input-bytes=1,024"):
      inputs.stdin_lines(1024)
  finally:
    zero.close()


def test_the_memory_estimate_passes_the_default_and_names_its_parts():
  from refinedweb_jax.train import memory
  config = configs.default_config()
  configs.validate(config)
  memory.check(config)  # the built-in default fits any machine that runs the tests
  parts = memory.estimate(config)
  assert set(parts) == {"parameters and optimizer", "logits", "activations"}
  assert all(size > 0 for size in parts.values())


def test_next_hints_of_a_workdir_with_spaces_work_as_printed(tmp_path, monkeypatch):
  from refinedweb_jax.train import loop
  monkeypatch.chdir(tmp_path)
  run = types.SimpleNamespace(config=configs.default_config(), tasks=[])
  for hint in loop.hints(run, "my run's dir", "refinedweb train"):
    argv = shlex.split(hint.split("  (")[0])
    assert argv[argv.index("--workdir") + 1] == "my run's dir", hint


def test_eval_with_no_decoded_example_promises_no_predictions_file(tmp_path, monkeypatch,
                                                                  capsys):
  """eval --examples 0: teacher-forced metrics only; no `predictions:` line for no file."""
  from refinedweb_jax import api

  class Evaluator:
    namespace, samples = "eval", []

    def run(self, params, **kw):
      return {"eval/loss": 1.0}
  model = types.SimpleNamespace(workdir=str(tmp_path), step=3, params=None)
  monkeypatch.setattr(api.logger, "rewrite_tensorboard", lambda *a: None)
  api.RefinedWeb._evaluate(model, lambda log: Evaluator(), "validation")
  assert "predictions:" not in capsys.readouterr().out
  Evaluator.samples = [{"inputs": "x"}]
  api.RefinedWeb._evaluate(model, lambda log: Evaluator(), "validation")
  assert "predictions:" in capsys.readouterr().out
  assert not os.path.exists(tmp_path / "predictions" / "validation_step3.jsonl")


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
  """A bad value that passes validation would train for real: fail at once instead."""
  from refinedweb_jax.train import trainer

  def accepted(settled, workdir, command=None):
    raise AssertionError(f"accepted and started training in {workdir}")
  monkeypatch.setattr(trainer, "train", accepted)
