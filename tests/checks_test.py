"""One line per run on the tokenizer's coverage (the worst task, advice only where it can be
followed) and one on the inputs and targets longer than the run's lengths."""

import os

from refinedweb_jax import cli, configs
from refinedweb_jax.data import checks, tokenizer as tok
from refinedweb_jax.train import resume, setup, trainer
from conftest import tiny_config


def _run(config):
  return setup.build(resume.settle(None, base=config).config)


def _fraction(tokenizer, source, field):
  measured = tok.coverage(tokenizer, [source[i][field] for i in range(len(source))])
  return max(measured.unknown, measured.byte_fallback)


def test_a_run_prints_one_coverage_line_naming_the_worst_task(tiny_data_dir):
  """The tiny corpus's 600-piece tokenizer spells Chinese in bytes for many tasks: one line
  says how many and which is worst; a larger vocabulary (1,200 pieces, tried) reads it no
  better, so none is advised."""
  run = _run(tiny_config(tiny_data_dir))
  lines = trainer.coverage(run)
  coverage = [line for line in lines if line.startswith("tokenizer coverage:")]
  assert len(coverage) == 1 and len(lines) <= 2, lines
  fractions = {(task.name, field): _fraction(run.tokenizer, task.source("train"), field)
               for task in run.tasks for field in ("inputs", "targets")}
  bad = {name for (name, _), f in fractions.items() if f > tok.COVERAGE_THRESHOLD}
  worst = max(fractions, key=fractions.get)
  assert f"{len(bad)} of {len(run.tasks)} task(s)" in coverage[0]
  assert f"worst {worst[0]} {worst[1]}:" in coverage[0]
  assert "a larger vocabulary spells it no better (1,200 pieces" in coverage[0]
  assert "vocab_size=" not in coverage[0]
  d = run.config.data  # what the line says: 1,200 pieces fit and read the worst no better
  _, path = tok.prepare_builtin(d.data_dir, num_train=d.num_train,
                                num_validation=d.num_validation, num_test=d.num_test,
                                seed=d.corpus_seed, long_fraction=d.long_fraction,
                                vocab_size=1200)
  [task] = [t for t in run.tasks if t.name == worst[0]]
  assert _fraction(tok.Tokenizer(path), task.source("train"), worst[1]) >= 0.8 * fractions[worst]


def test_a_larger_vocabulary_is_advised_when_it_reads_the_worst_task_better(tiny_data_dir,
                                                                             tmp_path):
  config = tiny_config(tiny_data_dir)
  run = _run(config)
  texts = list(checks.tokenizer_texts(run.config, []))  # the built-in corpus's
  assert run.config.data.tokenizer == "builtin" and texts
  small = tok.Tokenizer(tok.train_tokenizer(iter(texts), str(tmp_path / "s.model"),
                                            vocab_size=400))
  named = [(task.name, task.source("train")) for task in run.tasks]
  line = checks.coverage_line(
      small, named, "mixture", trained_on=[name for name, _ in named],
      vocab_advice=lambda worst, fraction: checks.vocab_advice(
          small, 400, False, lambda: iter(texts), worst, fraction))
  assert "--config.data.vocab_size=800 (now 400) spells it with" in line
  assert "was trained on" in line and "should then spell in whole pieces" in line  # a symptom
  record = tmp_path / "s.model.larger.json"  # the answer, kept beside the tokenizer
  assert line == checks.coverage_line(small, named, "mixture", trained_on=[n for n, _ in named],
                                      vocab_advice=lambda worst, fraction: checks.vocab_advice(
                                          small, 400, False, lambda: iter(()), worst, fraction))
  record.write_text("{not json")  # unreadable: tried again, same answer
  assert line == checks.coverage_line(
      small, named, "mixture", trained_on=[n for n, _ in named],
      vocab_advice=lambda worst, fraction: checks.vocab_advice(
          small, 400, False, lambda: iter(texts), worst, fraction))
  worst_task, field = line.split("; worst ")[1].split(":")[0].split()
  larger = tok.Tokenizer(tok.train_tokenizer(iter(texts), str(tmp_path / "l.model"),
                                             vocab_size=800))
  [source] = [source for name, source in named if name == worst_task]
  assert _fraction(larger, source, field) < 0.8 * _fraction(small, source, field)


def test_no_larger_vocabulary_is_advised_when_none_fits(tiny_data_dir):
  """data.vocab_size at the largest its training text allows: the line says so and does not
  ask for a larger vocabulary (which would be refused)."""
  config = tiny_config(tiny_data_dir)
  config.data.tokenizer = "builtin"
  texts = list(checks.tokenizer_texts(config, []))
  try:
    tok.train_tokenizer(iter(texts), os.path.join(tiny_data_dir, "probe", "p.model"),
                        vocab_size=100_000)
    raise AssertionError("the tiny corpus holds fewer than 100,000 pieces")
  except tok.VocabTooLarge as e:
    largest = e.largest
  config.data.vocab_size = largest
  run = _run(config)
  assert run.tokenizer.vocab_size == largest
  [line] = [line for line in trainer.coverage(run) if line.startswith("tokenizer coverage:")]
  assert "no larger vocabulary fits" in line and "larger --config.data.vocab_size" not in line
  assert "vocab_size=" not in line


def test_truncated_inputs_and_targets_are_counted_in_one_line(tiny_data_dir, capsys):
  """Inputs and targets longer than data.input_length / target_length (EOS included): one
  line with their counts, at train start and at prepare."""
  config = tiny_config(tiny_data_dir)
  run = _run(config)
  [line] = [line for line in trainer.coverage(run) if line.startswith("truncation:")]
  d = config.data
  long_in = long_out = count = 0
  for task in run.tasks:
    source = task.source("train")
    for i in range(len(source)):
      long_in += len(run.tokenizer.encode(source[i]["inputs"])) > d.input_length - 1
      long_out += len(run.tokenizer.encode(source[i]["targets"])) > d.target_length - 1
      count += 1
  assert long_in and long_out  # the tiny lengths cut QA contexts and some code
  assert line.startswith(f"truncation: {long_in:,} input(s) and {long_out:,} target(s) of "
                         f"{count:,} examples measured are longer than data.input_length="
                         f"{d.input_length} / data.target_length={d.target_length} tokens")
  flags = [f"--config.{key}={value}" for key, value in resume.flat(config).items()
           if key.startswith("data.") and not isinstance(value, (list, dict))
           and value is not None] + ["--config.model.preset=tiny"]
  assert cli.main(["prepare"] + flags) == 0
  out = capsys.readouterr().out
  assert [l for l in out.splitlines() if "truncation:" in l] == [f"refinedweb: {line}"]


def test_no_lines_when_nothing_is_wrong(tiny_data_dir):
  config = tiny_config(tiny_data_dir)
  run = _run(config)
  spell = [("spell", [{"inputs": "one two", "targets": "three"}] * 5)]
  assert checks.coverage_line(run.tokenizer, spell, "builtin") is None
  assert checks.truncation_line(run.tokenizer, spell, 64, 32) is None
  assert configs.tokenizer_vocab_size(config) == (600, False)
