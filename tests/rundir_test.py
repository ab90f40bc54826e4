"""The run directory is the run's config: continuing needs only the workdir, flags are changes,
a run is never shortened, config.json records what ran, and every printed hint works."""

import json
import os
import shlex

import pytest

from refinedweb_jax import api, cli
from refinedweb_jax.data import registry
from first_hour_test import TINY, _write_pairs

OVERRIDES = {"model.preset": "tiny", "data.input_length": 32, "data.target_length": 16,
             "data.batch_size": 8, "train.num_steps": 4, "train.log_every": 2,
             "train.eval_every": 4, "train.checkpoint_every": 2, "train.eval_examples": 8,
             "train.eval_batch_size": 8, "train.decode_examples_per_task": 1,
             "train.max_decode_length": 6, "train.async_checkpointing": False,
             "train.progress_bar": False}


def _hints(out: str) -> list[str]:
  """The commands after `next:` in a finished run's summary."""
  lines = out.splitlines()
  first = next(i for i, line in enumerate(lines) if line.strip().startswith("next:"))
  hints = [lines[first].split("next:", 1)[1]] + lines[first + 1:first + 3]
  return [h.strip().split("  (")[0] for h in hints]


def _run_hint(hint: str, capsys) -> str:
  argv = shlex.split(hint.replace('"..."', '"translate English to German: 7"'))
  assert argv[0] == "refinedweb", hint
  code = cli.main(argv[1:])
  out, err = capsys.readouterr()
  assert code == 0, (hint, err)
  return out


@pytest.fixture(scope="module")
def own_without_test(tmp_path_factory):
  """A run on an own task that has no test split, trained with command-line overrides only."""
  root = tmp_path_factory.mktemp("hints")
  data_dir = str(root / "data")
  train = _write_pairs(root / "train.tsv", range(300))
  validation = _write_pairs(root / "validation.tsv", range(300, 330))
  assert cli.main(["prepare", "--task", "spell", "--train", train, "--validation", validation,
                   f"--config.data.data_dir={data_dir}"]) == 0
  workdir = str(root / "run")
  return dict(workdir=workdir, flags=TINY + [f"--config.data.data_dir={data_dir}",
                                             "--config.mixture.tasks=spell"])


def test_every_printed_hint_runs_as_printed(own_without_test, capsys):
  """The run had overrides (another preset, tokenizer, task): each hint works as printed,
  and the eval hint leaves out --split test, which this task does not have."""
  workdir = own_without_test["workdir"]
  assert cli.main(["train", "--workdir", workdir] + own_without_test["flags"]) == 0
  hints = _hints(capsys.readouterr().out)
  assert hints[0].startswith("refinedweb eval --workdir ") and "--split" not in hints[0], hints
  assert "--config.train.num_steps=12" in hints[2] and "--config" not in hints[2].replace(
      "--config.train.num_steps=12", "")
  for hint in hints:
    _run_hint(hint, capsys)
  saved = json.loads(open(os.path.join(workdir, "config.json")).read())
  assert saved["train"]["num_steps"] == 12 and saved["model"]["preset"] == "tiny"
  assert saved["mixture"]["tasks"] == "spell" and saved["data"]["tokenizer"] == "mixture"


def test_a_run_is_never_shortened_and_its_config_json_stays(own_without_test, capsys):
  """`train --workdir W --config.train.num_steps=N` below the reached step: refused in one
  line, nothing rewritten; a fixed key is refused naming both values."""
  workdir = own_without_test["workdir"]
  if not os.path.exists(os.path.join(workdir, "config.json")):  # this worker's own run
    assert cli.main(["train", "--workdir", workdir] + own_without_test["flags"]) == 0
  path = os.path.join(workdir, "config.json")
  before = open(path).read()
  reached = max(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())
  assert cli.main(["train", "--workdir", workdir, "--config.train.num_steps=2"]) == 2
  err = capsys.readouterr().err
  assert f"train.num_steps=2 is below step {reached}" in err and err.count("\n") == 1
  assert cli.main(["train", "--workdir", workdir, "--config.model.d_model=64"]) == 2
  err = capsys.readouterr().err
  assert "model.d_model: run None, given 64" in err or "model.d_model" in err
  assert open(path).read() == before


def test_the_api_continues_a_run_with_its_own_config_and_never_rewrites_it(tiny_data_dir,
                                                                           tmp_path):
  workdir = str(tmp_path / "api")
  overrides = dict(OVERRIDES, **{"data.data_dir": tiny_data_dir, "data.num_train": 400,
                                 "data.num_validation": 40, "data.num_test": 20,
                                 "data.vocab_size": 600})
  assert api.train(None, workdir, overrides)["step"] == 4
  config_json = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(ValueError, match="train.num_steps=2 is below step 4"):
    api.train(None, workdir, overrides={"train.num_steps": 2})
  assert open(os.path.join(workdir, "config.json")).read() == config_json
  # No settings at all: the run's own, so nothing changes and nothing is trained.
  assert api.train(None, workdir)["step"] == 4
  model = api.RefinedWeb.load(workdir)
  first = model.evaluate(tasks=["translate_en_de"], eval_examples=4, decode_examples=0)
  assert set(k.split("/")[1] for k in first if k.count("/") == 2) == {"translate_en_de"}
  again = model.evaluate(eval_examples=4, decode_examples=0)  # the run's own eval tasks
  assert len({k.split("/")[1] for k in again if k.count("/") == 2}) > 1
  assert model.config.mixture.eval_tasks == ""


def test_the_task_registry_reads_own_tasks_json_once_per_version(tmp_path):
  data_dir = str(tmp_path)
  registry.record_prepared(data_dir, {"task": "a", "format": "tsv", "train": ["x.tsv"]})
  first = registry.prepared(data_dir)
  assert registry.prepared(data_dir) is first  # read once
  registry.record_prepared(data_dir, {"task": "b", "format": "tsv", "train": ["y.tsv"]})
  assert set(registry.prepared(data_dir)) == {"a", "b"}


def test_hints_quote_a_workdir_with_a_space(tmp_path, capsys):
  """A hint naming a workdir runs as printed when the path has a space or a quote in it."""
  workdir = str(tmp_path / "my run's dir")
  for command in (["config", "--workdir", workdir],
                  ["generate", "--workdir", workdir, "--text", "hi"],
                  ["eval", "--workdir", workdir]):
    assert cli.main(command) == 2, command
    err = capsys.readouterr().err
    assert f"refinedweb train --workdir {shlex.quote(workdir)}" in err, (command, err)
