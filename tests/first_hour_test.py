"""A newcomer's path end to end: own data by name, resume checks, the run's own config,
test-split and file evaluations, console output, the run directory, evaluation cost."""

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from refinedweb_jax import cli, configs
from refinedweb_jax.data import tasks
from refinedweb_jax.data.corpus import verbalize
from refinedweb_jax.evaluate.evaluator import Evaluator
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.train import logger, optim, resume, setup
from conftest import tiny_config

TINY = ["--config.model.preset=tiny", "--config.data.input_length=32",
        "--config.data.target_length=16", "--config.data.batch_size=8",
        "--config.train.num_steps=6", "--config.train.log_every=2",
        "--config.train.eval_every=3", "--config.train.checkpoint_every=3",
        "--config.train.eval_examples=16", "--config.train.eval_batch_size=8",
        "--config.train.decode_examples_per_task=2", "--config.train.max_decode_length=8",
        "--config.train.async_checkpointing=false", "--config.optimizer.warmup_steps=2"]


def _write_pairs(path, numbers, lang="en"):
  """A tsv of `spell: 42` -> `forty-two` pairs, made by the corpus's own verbalizer."""
  with open(path, "w", encoding="utf-8") as f:
    for n in numbers:
      f.write(f"{n}\t{verbalize.number_words(n, lang)}\n")
  return str(path)


def _run(argv, capsys):
  """cli.main in this process: (exit status, stdout, stderr)."""
  code = cli.main(argv)
  out, err = capsys.readouterr()
  return code, out, err


EXPERIMENT = """
from refinedweb_jax import configs


def get_config():
  config = configs.default_config()
  config.own_tasks = [dict(task="spell", format="tsv", train=[{train!r}],
                           validation=[{validation!r}], test=[{test!r}],
                           metrics=["chrf", "exact_match"])]
  config.mixture.tasks = "spell"
  config.data.update(dict(tokenizer="mixture", vocab_size=320))
  return config
"""


@pytest.fixture(scope="module")
def own(tmp_path_factory):
  """A tiny run on an own task, declared in an experiment config."""
  root = tmp_path_factory.mktemp("own")
  data_dir = str(root / "data")
  files = {split: _write_pairs(root / f"{split}.tsv", range(lo, hi))
           for split, lo, hi in (("train", 0, 600), ("validation", 600, 640),
                                 ("test", 640, 680))}
  experiment = root / "experiment.py"
  experiment.write_text(EXPERIMENT.format(**files))
  workdir = str(root / "run")
  flags = ["--config", str(experiment), f"--config.data.data_dir={data_dir}"] + TINY
  assert cli.main(["train", "--workdir", workdir] + flags) == 0
  return dict(root=root, data_dir=data_dir, workdir=workdir, flags=flags, files=files)


def test_own_task_by_name_with_its_own_tokenizer_and_metrics(own, tmp_path, capsys):
  """4: prepare records the task; train finds it by name; the tokenizer is the mixture's,
  sized by the preset; the metrics are the given ones."""
  data_dir, files = str(tmp_path / "data"), own["files"]
  code, out, err = _run(["prepare", "--task", "spell", "--train", files["train"],
                         "--validation", files["validation"], "--metrics", "chrf,exact_match",
                         f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 0, err
  assert "--config.mixture.tasks=spell" in out
  workdir = str(tmp_path / "run")
  code, _, err = _run(["train", "--workdir", workdir] + TINY + [
      f"--config.data.data_dir={data_dir}", "--config.mixture.tasks=spell",
      "--config.train.num_steps=2", "--config.train.eval_every=2"], capsys)
  assert code == 0, err
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert [t["task"] for t in saved["own_tasks"]] == ["spell"]  # the run describes itself
  assert saved["own_tasks"][0]["metrics"] == ["chrf", "exact_match"]
  assert saved["data"]["tokenizer"] == "mixture"  # not the built-in corpus
  # The tiny preset's 512 pieces, or as many as this text holds (333).
  assert setup.restore(workdir).run.tokenizer.vocab_size == 333
  rows = logger.read_rows(os.path.join(workdir, "metrics.jsonl"), "eval")
  assert "eval/spell/chrf" in rows[-1] and "eval/spell/exact_match" in rows[-1]
  # A jsonl file without the field flags: the error names the flags and the file's keys.
  jsonl = tmp_path / "qa.jsonl"
  jsonl.write_text('{"q": "1 + 1", "a": "2"}\n')
  code, _, err = _run(["prepare", "--task", "qa_mine", "--train", str(jsonl),
                       f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 2 and "--input-field and --target-field" in err and "keys: a, q" in err
  assert "input_field" not in err


def test_resume_compares_configs(own, tmp_path, capsys):
  """1: a changed fixed key is one line naming it and both values; a changeable key is
  applied and printed."""
  workdir = str(tmp_path / "run")
  shutil.copytree(own["workdir"], workdir)
  forgot_preset = [f for f in own["flags"] if "preset" not in f] + ["--config.seed=3"]
  code, _, err = _run(["train", "--workdir", workdir] + forgot_preset, capsys)
  assert code == 2 and len(err.strip().splitlines()) == 1, err
  assert "model.preset: run 'tiny', given 'mini'" in err and "seed: run 0, given 3" in err
  assert "Traceback" not in err
  code, out, _ = _run(["train", "--workdir", workdir] + own["flags"]
                      + ["--config.train.num_steps=8", "--config.train.schedule_steps=6"], capsys)
  assert code == 0
  assert "resuming with changed settings: train.num_steps 6 -> 8" in out
  # schedule_steps kept the original schedule: the learning rates of steps 7 and 8 are
  # those of a 6-step schedule (its final value), not of a stretched one.
  config = resume.saved_config(workdir)
  schedule = optim.make_schedule(config.optimizer.schedule,
                                 learning_rate=config.optimizer.learning_rate,
                                 warmup_steps=config.optimizer.warmup_steps, total_steps=6)
  rows = logger.read_rows(os.path.join(workdir, "metrics.jsonl"), "train")
  assert rows[-1]["step"] == 8
  np.testing.assert_allclose(rows[-1]["train/learning_rate"], float(schedule(7)), rtol=1e-6)


def test_run_commands_use_the_runs_own_config(own, capsys):
  """1: generate/eval read the run's config (its own task); --config is never ignored."""
  workdir = own["workdir"]
  code, out, err = _run(["generate", "--workdir", workdir, "--task", "spell", "--text", "7"],
                        capsys)
  assert code == 0, err
  assert len(out.splitlines()) == 1  # one output line per input (an untrained model's may be empty)
  code, _, err = _run(["eval", "--workdir", workdir, "--config", "experiments/colab.ipynb"],
                      capsys)
  assert code == 2 and "uses the run's own config" in err
  code, _, err = _run(["eval", "--workdir", workdir, "--config.model.d_model=64"], capsys)
  assert code == 2 and "model.d_model: run None, given 64" in err
  code, out, _ = _run(["eval", "--workdir", workdir, "--config.train.decode_examples_per_task=3"],
                      capsys)
  assert code == 0
  predictions = os.path.join(workdir, "predictions", "validation_step6.jsonl")
  assert len(open(predictions).read().splitlines()) == 3  # the override was honoured


def test_test_split_has_its_own_namespace_and_is_replaced(own, capsys):
  """2: eval --split test logs test/... rows (not eval/), once per step however often."""
  workdir = own["workdir"]
  for _ in range(2):
    code, out, err = _run(["eval", "--workdir", workdir, "--split", "test"], capsys)
    assert code == 0, err
  assert out.count("[test eval step 6]") == 1  # the table once, no second listing
  rows = logger.read_rows(os.path.join(workdir, "metrics.jsonl"))
  tests = [r for r in rows if r["split"] == "test"]
  assert len(tests) == 1 and tests[0]["step"] == 6
  assert "test/spell/chrf" in tests[0] and not any(k.startswith("eval/") for k in tests[0])
  validation = [r for r in rows if r["split"] == "eval" and r["step"] == 6]
  assert len(validation) == 1 and "eval/spell/loss" in validation[0]
  events = os.listdir(os.path.join(workdir, "tensorboard", "test"))
  assert len(events) == 1  # rewritten, not appended to


def test_eval_on_an_undeclared_file(own, tmp_path, capsys):
  """3: any own-data file with references, its metrics, predictions next to references."""
  path = tmp_path / "held_out.jsonl"
  with open(path, "w", encoding="utf-8") as f:
    for n in range(900, 905):
      f.write(json.dumps({"number": str(n), "words": verbalize.number_words(n, "en")}) + "\n")
  code, out, err = _run(["eval", "--workdir", own["workdir"], "--input", str(path),
                         "--input-field", "number", "--target-field", "words",
                         "--task-metrics", "bleu,chrf", "--task", "spell"], capsys)
  assert code == 0, err
  written = [json.loads(line) for line in
             open(os.path.join(own["workdir"], "predictions", "held_out_step6.jsonl"))]
  assert [r["targets"] for r in written] == [verbalize.number_words(n, "en")
                                             for n in range(900, 905)]
  assert all(r["inputs"] == "spell: " + str(n) and "prediction" in r
             for r, n in zip(written, range(900, 905)))  # the task's prefix
  row = logger.read_rows(os.path.join(own["workdir"], "metrics.jsonl"), "test/held_out")[-1]
  assert {"test/held_out/bleu", "test/held_out/chrf", "test/held_out/loss"} <= set(row)


def test_tiny_preset_fits_a_small_corpus(tiny_data_dir):
  """5: the tiny preset's vocabulary is the tokenizer's by default, on a 400-example corpus."""
  config = tiny_config(tiny_data_dir)
  config.data.vocab_size = configs.default_config().data.vocab_size  # the default
  run = setup.build(config)
  assert run.tokenizer.vocab_size == run.model_cfg.vocab_size == 512
  config.data.vocab_size = 20_000
  with pytest.raises(ValueError, match=r"config.data.vocab_size=20000 .* the largest that "
                                       r"fits is \d+: --config.data.vocab_size=\d+"):
    setup.build(config)


def test_console_of_a_non_tty_run(own, tmp_path, env):
  """6: plain lines per log step, no bar redraws or TFDS chatter, samples under their own
  header, a closing summary; chat's /reset answers."""
  data_dir = str(tmp_path / "data")
  prepare = subprocess.run(
      [sys.executable, "-m", "refinedweb_jax.cli", "prepare", "--task", "spell", "--train",
       own["files"]["train"], "--validation", own["files"]["validation"],
       f"--config.data.data_dir={data_dir}"], capture_output=True, text=True, env=env)
  assert prepare.returncode == 0, prepare.stderr
  workdir = str(tmp_path / "run")
  flags = own["flags"] + [f"--config.data.data_dir={data_dir}", "--config.train.progress_bar=true"]
  train = subprocess.run([sys.executable, "-m", "refinedweb_jax.cli", "train", "--workdir",
                          workdir] + flags, capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL)
  assert train.returncode == 0, train.stderr
  everything = prepare.stdout + prepare.stderr + train.stdout + train.stderr
  for noise in ("\r", "Downloading and preparing", "custom data configuration", "it/s",
                "Generating", "Shuffling"):
    assert noise not in everything, (noise, everything)
  out = train.stdout
  assert [line.split()[1] for line in out.splitlines()
          if line.startswith("step ")] == ["2/6", "4/6", "6/6"]
  assert "loss" in out.splitlines()[[l.startswith("step 2/6") for l in out.splitlines()]
                                    .index(True)] and "tokens/s" in out
  table, samples = out.index("[eval step 3]"), out.index("decoded samples")
  assert table < samples < out.index("[eval step 6]")
  summary = out[out.index("done: step 6"):]
  assert "checkpoint: " in summary and "next: refinedweb eval --workdir" in summary
  chat = subprocess.run([sys.executable, "-m", "refinedweb_jax.cli", "chat", "--workdir",
                         workdir, "--max-new-tokens=4"], input="hello\n/reset\n",
                        capture_output=True, text=True, env=env)
  assert chat.returncode == 0, chat.stderr
  assert chat.stdout.splitlines()[-1] == "(conversation reset)"


def test_the_run_directory_describes_itself(own, capsys):
  """7: config.json, `refinedweb config`, --version, --help, runs.jsonl."""
  workdir = own["workdir"]
  code, out, _ = _run(["config", "--workdir", workdir], capsys)
  shown, saved = json.loads(out), json.load(open(os.path.join(workdir, "config.json")))
  assert code == 0 and {**shown, "model": None} == {**saved, "model": None}
  assert all(shown["model"][k] == v for k, v in saved["model"].items() if v is not None
             and k != "attention")
  code, out, _ = _run(["config", "--config.model.preset=tiny", "--config.train.num_steps=7"],
                      capsys)
  shown = json.loads(out)
  assert shown["model"]["preset"] == "tiny" and shown["train"]["num_steps"] == 7
  assert shown["data"]["tokenizer"] == "builtin"  # "auto", resolved
  assert cli.main(["--version"]) == 0
  assert capsys.readouterr().out.startswith("refinedweb_jax ")
  assert cli.main(["train", "--help"]) == 0
  text = " ".join(capsys.readouterr().out.split())
  assert "--config.KEY=VALUE" in text and "Top-level keys: data, distill, distributed" in text
  assert "train.schedule_steps" in text
  start = json.loads(open(os.path.join(workdir, "runs.jsonl")).readline())
  assert start["command"].split()[1:3] == ["train", "--workdir"] or "train" in start["command"]
  assert start["packages"]["jax"] == jax.__version__ and "git_commit" in start
  page = open(os.path.join(os.path.dirname(__file__), "..", "docs", "configuration.md")).read()
  assert "pip install tensorboard" in page and "tensorboard --logdir runs/" in page


def test_config_shows_the_resolved_model_sizes(own, capsys):
  """`refinedweb config` gives the model's sizes, not null: a run's are its real model's
  (its tokenizer's vocabulary included); a config's are its preset's, with data.vocab_size."""
  code, out, _ = _run(["config", "--workdir", own["workdir"]], capsys)
  shown = json.loads(out)["model"]
  real = dataclasses.asdict(setup.restore(own["workdir"]).run.model_cfg)
  assert code == 0 and shown == json.loads(json.dumps({**real, "preset": "tiny"}))
  assert shown["vocab_size"] == 320 and shown["d_model"] == 32
  code, out, _ = _run(["config", "--config.model.preset=mini", "--config.data.vocab_size=700",
                       "--config.model.num_decoder_layers=3"], capsys)
  shown = json.loads(out)["model"]
  preset = ModelConfig.from_preset("mini")
  assert code == 0 and shown["vocab_size"] == 700 and shown["num_decoder_layers"] == 3
  for key in ("d_model", "d_ff", "num_heads", "head_dim", "num_encoder_layers"):
    assert shown[key] == getattr(preset, key) is not None, key
  assert None not in shown.values() and None not in shown["attention"].values()


def test_evaluation_cost_follows_tokens(tiny_data_dir):
  """8: every task's examples share packed rows, the result equals the examples alone,
  nothing recompiles across evaluations, and the time is reported."""
  config = tiny_config(tiny_data_dir)
  config.mixture.tasks = "translate_en_de,translate_de_en,summarize,qa,code,chat"
  config.train.eval_examples = 4
  run = setup.build(config)
  x = jax.numpy.ones((1, 8), jax.numpy.int32)
  params = run.model.init(jax.random.key(0), x, x)["params"]
  records = []

  class Log:
    enabled = False
    scalars = lambda self, step, split, metrics, replace=False: records.append(metrics)
    text = samples = lambda self, *a: None

  evaluator = run.evaluator(Log(), decode_examples=1)
  assert len(evaluator.batches) < len(run.tasks)  # one packed batch, not one per task
  first = evaluator.run(params, step=1)
  evaluator.run(params, step=2)
  assert evaluator._eval_step.jitted._cache_size() == 1
  assert evaluator._greedy.jitted._cache_size() == 1
  assert records[-1]["eval/seconds"] > 0
  # Each task's loss equals its examples evaluated one by one, unpacked.
  for task in run.tasks:
    losses, weights = [], []
    source = task.source("validation")
    for i in range(min(4, len(source))):
      one = tasks.Task(task.name, lambda split, ex=dict(source[i]): [ex])
      alone = Evaluator([one], run.tokenizer, run.model, run.mesh, Log(), split="validation",
                        input_length=config.data.input_length,
                        target_length=config.data.target_length, batch_size=8,
                        max_decode_length=8, eval_examples=1, decode_examples=0)
      losses.append(alone.run(params, step=0, decode=False)["eval/loss"])
      weights.append(sum(float(np.sum(f["decoder_loss_weights"])) for f, _ in alone.batches))
    np.testing.assert_allclose(first[f"eval/{task.name}/loss"],
                               np.average(losses, weights=weights), rtol=1e-5)


def test_readme_demo_table_is_the_demo_scripts(monkeypatch):
  """1: the Quick start's table shows experiments/demo_outputs.py's prompts with the corpus's own
  targets, and its seed-0 mark says whether the shown output is that target."""
  root = os.path.join(os.path.dirname(__file__), "..")
  monkeypatch.syspath_prepend(os.path.join(root, "experiments"))
  import demo_outputs
  targets = {prompt: target for _, prompt, target in demo_outputs.TRANSLATIONS}
  targets.update((prompt, target) for _, prompt, target in demo_outputs.validation_rows())
  targets.update(demo_outputs.CHAT)
  targets[demo_outputs.BEAM[1]] = demo_outputs.BEAM[2]
  clipped = lambda shown, text: shown == text or (
      shown.endswith("...") and text.replace("\n", "\\n").startswith(shown[:-3]))
  readme = open(os.path.join(root, "README.md")).read()
  table = readme[readme.index("| kind | input | output (seed 0) |"):]
  rows = [line for line in table[:table.index("\n\n")].splitlines()[2:]]
  assert len(rows) >= 12
  for row in rows:
    _, prompt, output, target, marks = [cell.strip() for cell in row.strip("|").split("|")]
    prompt, output, target = (cell.split("`")[1] for cell in (prompt, output, target))
    [full] = [p for p in targets if clipped(prompt, p)]
    assert clipped(target, targets[full]), row
    mark = marks.split(" · ")[0]  # this version's seed 0, then an earlier version's seeds
    if mark == "yes":
      assert clipped(output, targets[full]), row
    else:
      assert mark == "no" and output != targets[full], row


def test_readme_chat_line_asks_each_question_in_a_conversation_of_its_own(monkeypatch):
  """The table's chat rows are demo_outputs.py's questions with /reset between them (chat feeds
  a conversation's earlier turns as context): the Quick start's chat line asks them so."""
  root = os.path.join(os.path.dirname(__file__), "..")
  monkeypatch.syspath_prepend(os.path.join(root, "experiments"))
  import demo_outputs
  readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
  quick = readme[readme.index("## Quick start"):readme.index("| kind | input | output (seed 0) |")]
  [line] = [l for l in quick.splitlines() if "refinedweb chat --workdir runs/demo" in l]
  piped, command = line.split(" | ")
  assert command.strip() == "refinedweb chat --workdir runs/demo"
  printf, text = shlex.split(piped)
  asked = text.encode().decode("unicode_escape").splitlines()
  assert printf == "printf" and asked == [x for q, _ in demo_outputs.CHAT
                                          for x in ("/reset", q)][1:]


def test_chinese_samples_align_and_pass_at_1_keeps_its_name_in_tensorboard(tmp_path):
  """8: the samples table lines its arrows up in terminal columns whatever the script, and
  TensorBoard's tag for pass@1 says pass_at_1 (TensorBoard would show pass_1)."""
  import unicodedata
  from refinedweb_jax.evaluate import evaluator
  rows = [{"task": "translate_zh_en", "inputs": "translate Chinese to English: " + "苹果在哪里" * 9,
           "prediction": "Where is the apple?", "targets": "Where is the apple?"},
          {"task": "translate_en_de", "inputs": "translate English to German: 42",
           "prediction": "zweiundvierzig", "targets": "zweiundvierzig"}]
  columns = lambda text: sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
  lines = evaluator.samples_text(rows).splitlines()[1:]
  assert len({columns(line[:line.index(" -> ")]) for line in lines}) == 1, lines
  assert logger.tensorboard_tag("eval/code/pass@1") == "eval/code/pass_at_1"
  from tensorboardX.proto import event_pb2
  log = logger.MetricLogger(str(tmp_path))
  log.scalars(1, "eval", {"eval/code/pass@1": 50.0})
  log.close()
  tags = set()
  for name in os.listdir(tmp_path / "tensorboard"):
    data = (tmp_path / "tensorboard" / name).read_bytes()
    while data:  # TFRecord frames: length (8 bytes), its CRC (4), the event, its CRC (4)
      length = int.from_bytes(data[:8], "little")
      event = event_pb2.Event.FromString(data[12:12 + length])
      tags |= {value.tag for value in event.summary.value}
      data = data[16 + length:]
  assert "eval/code/pass_at_1" in tags, tags
