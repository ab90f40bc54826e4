"""One line each on how a run's tokenizer reads its tasks: coverage and truncation.

coverage_line: how many tasks' text the tokenizer spells badly (unknown or UTF-8 byte
pieces over 1%), the worst of them, and advice only where following it can help.
truncation_line: how many inputs and targets are longer than data.input_length /
target_length (EOS included) and get cut. Both measure evenly spaced records of each task.
"""

import hashlib
import json
import os
import tempfile

from refinedweb_jax.data import tokenizer as tok

TRUNCATION_RECORDS = 1000  # records measured per task at most, evenly spaced


def _records(source, limit: int) -> list:
  n = len(source)
  return [source[i] for i in range(0, n, max(1, -(-n // limit)))] if n else []


def coverage_line(tokenizer, named_sources, tokenizer_name: str, *, trained_on=(),
                  vocab_advice=None, threshold: float = tok.COVERAGE_THRESHOLD) -> str | None:
  """One line when some task's inputs or targets are over `threshold` unknown or byte pieces.

  named_sources: [(task name, random-access source of {"inputs", "targets"})];
  trained_on: the tasks whose text trained the tokenizer; vocab_advice(texts, fraction):
  what to do when the worst is one of those (vocab_advice below), asked only then.
  """
  bad = []
  for name, source in named_sources:
    records = _records(source, tok.COVERAGE_TEXTS)
    for field in ("inputs", "targets"):
      texts = [r[field] for r in records]
      measured = tok.coverage(tokenizer, texts)
      if measured.pieces and max(measured.unknown, measured.byte_fallback) > threshold:
        bad.append((measured.unknown + measured.byte_fallback, name, field, measured, texts))
  if not bad:
    return None
  fraction, name, field, worst, texts = max(bad, key=lambda b: b[0])
  parts = [f"{share:.1%} {what}" for share, what in (
      (worst.unknown, "unknown (unk) pieces"), (worst.byte_fallback, "UTF-8 byte pieces"))
      if share > threshold]
  tasks = len({b[1] for b in bad})
  head = (f"tokenizer coverage: {tasks} of {len(named_sources)} task(s) over {threshold:.0%} "
          f"unknown or byte pieces; worst {name} {field}: {' and '.join(parts)} (e.g. "
          f"{worst.example!r})")
  if str(tokenizer_name).endswith(".model"):
    return (f"{head}; {tokenizer_name} does not cover these characters: pick a tokenizer that "
            "does (e.g. an mT5 spiece.model)")
  if name not in trained_on or vocab_advice is None:
    return (f"{head}; the {tokenizer_name} tokenizer was not trained on {name}'s text: "
            "--config.data.tokenizer=mixture trains one on the run's tasks")
  # Trained on this text, the tokenizer should spell it in whole pieces: these are a symptom.
  return (f"{head}; the tokenizer was trained on {name}'s text, which it should then spell in "
          f"whole pieces: {vocab_advice(texts, fraction)}")


def vocab_advice(tokenizer, requested: int, fit: bool, training_texts, texts,
                 fraction: float) -> str:
  """What helps a tokenizer that was trained on the text it spells badly: a larger
  data.vocab_size only when one fits its training text and spells `texts` better (tried
  once, the answer kept beside the tokenizer file), else why none does.

  requested, fit: configs.tokenizer_vocab_size (fit: data.vocab_size unset, so the size
  shrank to what the text holds); training_texts: a callable giving the tokenizer's
  training text; texts, fraction: the worst task field's texts and their bad fraction.
  """
  n = tokenizer.vocab_size
  tried = None if fit and n < requested else _larger(tokenizer.model_path, training_texts,
                                                     n, texts)
  if tried is None or tried["fits"] is None:
    return (f"its {n:,} pieces, trained on this text, are the most that text holds: no "
            "larger vocabulary fits it (more text of the task would help)")
  if tried["fraction"] >= 0.8 * fraction:
    return (f"a larger vocabulary spells it no better ({tried['fits']:,} pieces: "
            f"{tried['fraction']:.1%}); more text of the task would help")
  return (f"--config.data.vocab_size={tried['fits']} (now {n:,}) spells it with "
          f"{tried['fraction']:.1%} instead")


def _larger(model_path: str | None, training_texts, n: int, texts) -> dict | None:
  """{"fits": a size above n that train_tokenizer takes for training_texts() (2n, else the
  largest it reports) or None, "fraction": that tokenizer's unknown + byte share of texts};
  kept in model_path + '.larger.json' by texts. None without a tokenizer file."""
  if not model_path or not os.path.isfile(model_path):
    return None
  record = model_path + ".larger.json"
  key = f"{n}:" + hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
  try:
    with open(record, encoding="utf-8") as f:
      saved = json.load(f)
  except (OSError, ValueError):  # none yet, or unreadable: tried again
    saved = {}
  if isinstance(saved, dict) and isinstance(saved.get(key), dict):
    return saved[key]
  saved = saved if isinstance(saved, dict) else {}
  sentences = list(training_texts())
  result, size = {"fits": None, "fraction": 1.0}, 2 * n
  with tempfile.TemporaryDirectory() as scratch:
    for _ in range(2):
      try:
        path = tok.train_tokenizer(iter(sentences), os.path.join(scratch, "probe.model"),
                                   vocab_size=size)
        measured = tok.coverage(tok.Tokenizer(path), texts)
        result = {"fits": size, "fraction": measured.unknown + measured.byte_fallback}
        break
      except tok.VocabTooLarge as e:
        if e.largest <= n:
          break
        size = e.largest
      except ValueError:  # not even the text's characters fit: no larger size helps
        break
  try:
    with open(record, "w", encoding="utf-8") as f:
      json.dump({**saved, key: result}, f)
  except OSError:
    pass  # a read-only data directory: tried again next time
  return result


def tokenizer_texts(config, run_tasks):
  """The inputs and targets a trained tokenizer of the config learns from: the built-in
  corpus's train split, or the train splits of the run's tasks."""
  from refinedweb_jax.data.datasets import builtin  # TFDS import is slow; only pay it here.
  d = config.data
  if d.tokenizer == "builtin":
    sources = [builtin.StrDataSource(builtin.build(
        d.data_dir, num_train=d.num_train, num_validation=d.num_validation,
        num_test=d.num_test, seed=d.corpus_seed,
        long_fraction=d.long_fraction).as_data_source("train"))]
  else:
    sources = [task.source("train") for task in run_tasks]
  for source in sources:
    for i in range(len(source)):
      record = source[i]
      yield record["inputs"]
      yield record["targets"]


def truncation_line(tokenizer, named_sources, input_length: int, target_length: int, *,
                    advice: bool = True) -> str | None:
  """One line when some inputs or targets are longer than the lengths (EOS included).

  advice: name the config keys that keep them whole (for a new run; a trained model's
  lengths are fixed).
  """
  per_task, totals = [], [0, 0, 0]
  for name, source in named_sources:
    records = _records(source, TRUNCATION_RECORDS)
    long_in = sum(len(tokenizer.encode(r["inputs"])) > input_length - 1 for r in records)
    long_out = sum(len(tokenizer.encode(r["targets"])) > target_length - 1 for r in records)
    totals = [totals[0] + long_in, totals[1] + long_out, totals[2] + len(records)]
    if long_in or long_out:
      per_task.append((max(long_in, long_out) / len(records), name, long_in, long_out,
                       len(records)))
  if not per_task:
    return None
  long_in, long_out, count = totals
  worst = "; ".join(f"{name}: " + " and ".join(
      f"{k / n:.0%} of {what}" for k, what in ((i, "inputs"), (o, "targets")) if k)
      for _, name, i, o, n in sorted(per_task, reverse=True)[:3])
  line = (f"truncation: {long_in:,} input(s) and {long_out:,} target(s) of {count:,} examples "
          f"measured are longer than data.input_length={input_length} / data.target_length="
          f"{target_length} tokens and are cut ({worst})")
  if advice:
    line += ("; a larger --config.data.input_length / --config.data.target_length keeps "
             "them whole")
  return line
