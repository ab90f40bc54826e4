"""Own tasks from the command line: extra TSV columns, bad-line counts, splits carved from
the train files, and how well a tokenizer covers a task's text."""

import io
import os
import subprocess
import sys

import pytest
import sentencepiece as spm

from refinedweb_jax import cli
from refinedweb_jax.cli import inputs, parser
from refinedweb_jax import configs
from refinedweb_jax.data import registry, tokenizer
from refinedweb_jax.data.datasets import own_data, own_splits

ATTRIBUTION = "CC-BY 2.0 (France) Attribution: tatoeba.org #{} (CK) & #{} (musclegirlxyp)"
CHINESE = ["我们今天去公园散步。", "他喜欢读书和写字。", "这本书很有意思。",
           "明天会下雨吗？", "请把门关上。", "我不知道他在哪里。"]


def _tatoeba(path, n=50):
  """A Tatoeba export: English, Chinese, attribution."""
  with open(path, "w", encoding="utf-8") as f:
    for i in range(n):
      f.write(f"Sentence number {i}.\t{CHINESE[i % len(CHINESE)]}{i}\t"
              f"{ATTRIBUTION.format(i, 1000 + i)}\n")
  return str(path)


def _run(argv, capsys):
  code = cli.main(argv)
  out, err = capsys.readouterr()
  return code, out, err


def _own_task(entry, data_dir):
  """The Task of a prepared entry, as a config that names it gets it."""
  config = configs.default_config()
  config.data.data_dir = data_dir
  config.own_tasks = [entry]
  return registry.for_config(config).get(entry["task"])


def _splits(data_dir, task):
  """split -> records of a prepared task, read through its registry entry."""
  entry = registry.prepared(data_dir)[task]
  source = _own_task(entry, data_dir).source
  splits = ["train"] + list(own_splits.fractions(entry["carve"]) if "carve" in entry else [])
  return {split: [r for r in source(split)] for split in splits}


def test_extra_tsv_columns_are_ignored(tmp_path, env, capsys):
  three = _tatoeba(tmp_path / "three.tsv")
  data_dir = str(tmp_path / "data")
  prepare = subprocess.run(
      [sys.executable, "-m", "refinedweb_jax.cli", "prepare", "--task", "tatoeba", "--train",
       three, "--columns", "0,1", f"--config.data.data_dir={data_dir}"],
      capture_output=True, text=True, env=env)
  assert prepare.returncode == 0, prepare.stderr
  assert "task tatoeba (train 50 examples" in prepare.stdout
  first = _splits(data_dir, "tatoeba")["train"][0]
  assert (first["inputs"], first["targets"]) == ("tatoeba: Sentence number 0.", CHINESE[0] + "0")
  code, out, err = _run(["prepare", "--task", "attributed", "--train", three, "--columns", "2,0",
                         f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 0, err
  first = _splits(data_dir, "attributed")["train"][0]
  assert (first["inputs"], first["targets"]) == (
      "attributed: " + ATTRIBUTION.format(0, 1000), "Sentence number 0.")
  # eval --input reads the same file the same way.
  _, args, _ = parser.parse(
      ["eval", "--workdir", str(tmp_path), "--input", three, "--columns", "0,1"])
  task = inputs.file_task(args, None)
  assert len(task.source("test")) == 50
  assert task.source("test")[1]["targets"] == CHINESE[1] + "1"
  # A line with fewer columns than the largest selected one is still a problem.
  with open(three, "a", encoding="utf-8") as f:
    f.write("only\ttwo\n")
  code, _, err = _run(["prepare", "--task", "short", "--train", three, "--columns", "2,0",
                       f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 2 and f"{three}:51: 2 column(s), expected at least 3" in err, err


BAD_TSV_LINES = {7: b"no tab", 13: b"\tempty input", 21: b"empty target\t",
                 34: b"one\xff\tbad utf-8", 42: b"x"}


def test_bad_lines_are_counted_once_each(tmp_path, capsys):
  data_dir = str(tmp_path / "data")
  path = tmp_path / "fifty.tsv"
  path.write_bytes(b"".join(BAD_TSV_LINES.get(n, f"in {n}\tout {n}\textra".encode()) + b"\n"
                            for n in range(1, 51)))
  code, _, err = _run(["prepare", "--task", "t", "--train", str(path),
                       f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 2 and "5 bad line(s) in 1 file(s)" in err, err
  assert [n for n in range(1, 51) if f"{path}:{n}:" in err] == sorted(BAD_TSV_LINES)
  # Every line bad: 50, not 51 with the "no usable records" line, which is still shown.
  path.write_text("no tab here\n" * 50, encoding="utf-8")
  code, _, err = _run(["prepare", "--task", "t", "--train", str(path),
                       f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 2 and "50 bad line(s) in 1 file(s)" in err and "no usable records" in err, err
  # A JSON line with both fields missing is one bad line.
  jsonl = tmp_path / "fifty.jsonl"
  jsonl.write_text("".join('{"q": "a", "a": "b"}\n' if n % 10 else '{"other": 1}\n'
                           for n in range(50)), encoding="utf-8")
  code, _, err = _run(["prepare", "--task", "j", "--train", str(jsonl), "--input-field", "q",
                       "--target-field", "a", f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 2 and "5 bad line(s) in 1 file(s)" in err, err
  assert f"{jsonl}:1: no field 'q' (has: other); no field 'a' (has: other)" in err, err


def test_split_carves_exact_disjoint_repeatable_splits(tmp_path, capsys):
  path = _tatoeba(tmp_path / "all.tsv")
  carved = {}
  for name, seed, data_dir in (("first", 0, "a"), ("again", 0, "b"), ("other", 1, "a")):
    data_dir = str(tmp_path / data_dir)
    flags = ["--split", "validation=0.05,test=0.05"] + (["--seed", str(seed)] if seed else [])
    code, out, err = _run(["prepare", "--task", "t", "--train", path] + flags
                          + [f"--config.data.data_dir={data_dir}"], capsys)
    assert code == 0, err
    assert "(train 44, validation 3, test 3 examples" in out  # round(0.05 x 50) = 3 each
    entry = registry.prepared(data_dir)["t"]
    assert entry["carve"] == {"validation": 0.05, "test": 0.05} and entry["carve_seed"] == seed
    records = _splits(data_dir, "t")
    carved[name] = {split: [r["id"] for r in rs] for split, rs in records.items()}
  ids = carved["first"]
  assert [len(ids[s]) for s in ("train", "validation", "test")] == [44, 3, 3]
  assert sorted(sum(ids.values(), []), key=lambda i: int(i.split(":")[1])) == [
      f"all.tsv:{n}" for n in range(1, 51)]  # no overlap, nothing lost
  assert ids["train"] == sorted(ids["train"], key=lambda i: int(i.split(":")[1]))  # file order
  assert carved["again"] == ids
  assert carved["other"]["validation"] != ids["validation"]
  # Each seed is a config of its own: both stay prepared side by side.
  assert len(os.listdir(tmp_path / "a" / "refinedweb_own")) == 2


def test_carved_sizes_and_tiny_files(tmp_path):
  assert own_splits.sizes(50, {"validation": 0.05, "test": 0.05}) == dict(
      validation=3, test=3, train=44)
  assert own_splits.sizes(3, {"validation": 0.01, "test": 0.01}) == dict(
      validation=1, test=1, train=1)
  assert own_splits.sizes(10, {"validation": 0.5, "test": 0.45}) == dict(
      validation=4, test=5, train=1)
  with pytest.raises(ValueError, match="2 good train example.*needs at least 3"):
    own_splits.sizes(2, {"validation": 0.1, "test": 0.1})
  # The same ids and seed rank the same everywhere (SHA-256 of "seed:id").
  ids = [f"all.tsv:{n}" for n in range(1, 11)]
  assert own_splits.assign(ids, {"validation": 0.2, "test": 0.1}, 0) == GOLDEN_ASSIGN
  tiny = tmp_path / "tiny.tsv"
  tiny.write_text("a\tb\nc\td\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"cannot build own task 'tiny': 2 good train example"):
    own_data.build(str(tmp_path / "data"), task="tiny", format="tsv", train=[str(tiny)],
                   carve="validation=0.1,test=0.1")
  assert not (tmp_path / "data" / "refinedweb_own").exists()
  with pytest.raises(ValueError, match="validation is given twice"):
    own_data.make_config(task="t", format="tsv", train=[str(tiny)], validation=[str(tiny)],
                         carve={"validation": 0.1})


GOLDEN_ASSIGN = {1: "validation", 4: "validation", 2: "test"}  # positions -> split


@pytest.mark.parametrize("flags, message", [
    (["--split", "validation=1.5"], "--split fraction of validation must be in (0, 1), got '1.5'"),
    (["--split", "test=0"], "--split fraction of test must be in (0, 1), got '0'"),
    (["--split", "validation=0.6,test=0.4"], "--split fractions must sum to less than 1"),
    (["--split", "train=0.1"], "--split carves validation and test only, got split 'train'"),
    (["--split", "validation"], "bad --split entry 'validation'; use SPLIT=FRACTION"),
    (["--split", "test=0.1", "--test", "TRAIN"], "--split test=0.1 and --test FILE both give"),
    (["--seed", "3"], "--seed applies to --split only"),
])
def test_split_refusals_are_one_line(tmp_path, capsys, flags, message):
  train = _tatoeba(tmp_path / "all.tsv", n=5)
  flags = [train if f == "TRAIN" else f for f in flags]
  code, _, err = _run(["prepare", "--task", "t", "--train", train] + flags
                      + [f"--config.data.data_dir={tmp_path / 'data'}"], capsys)
  assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
  assert not (tmp_path / "data").exists()


ENGLISH = [f"Sentence number {i}: the quick brown fox jumps over the lazy dog."
           for i in range(200)] + ["Hello world, this is a sentence about cats and dogs."] * 50


def _english_tokenizer(tmp_path):
  return tokenizer.Tokenizer(tokenizer.train_tokenizer(ENGLISH, str(tmp_path / "en.model"),
                                                       vocab_size=320, fit=True))


def test_coverage_of_an_english_tokenizer(tmp_path):
  tok = _english_tokenizer(tmp_path)
  chinese = tokenizer.coverage(tok, CHINESE * 100)
  assert chinese.byte_fallback > 0.5 and chinese.unknown == 0 and chinese.example in CHINESE
  warning = tokenizer.coverage_warning("zh_task", "targets", chinese, "builtin")
  assert "'zh_task' targets" in warning and "are UTF-8 byte pieces" in warning
  assert "--config.data.tokenizer=mixture" in warning and len(warning.splitlines()) == 1
  english = tokenizer.coverage(tok, ENGLISH)
  assert english.unknown == english.byte_fallback == 0 and english.example is None
  assert tokenizer.coverage_warning("en_task", "inputs", english, "builtin") is None


def test_coverage_without_byte_fallback(tmp_path):
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(ENGLISH), model_writer=model, vocab_size=60, hard_vocab_limit=False,
      byte_fallback=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
  tok = tokenizer.Tokenizer(model_proto=model.getvalue())
  measured = tokenizer.coverage(tok, CHINESE)
  assert measured.unknown > 0.1 and measured.byte_fallback == 0
  warning = tokenizer.coverage_warning("zh", "targets", measured, "t5/spiece.model")
  assert "unknown (unk)" in warning and "e.g. an mT5 spiece.model" in warning


def test_prepare_warns_about_tokenizer_coverage(tmp_path, capsys):
  tok = _english_tokenizer(tmp_path)
  path = _tatoeba(tmp_path / "three.tsv")
  data_dir = str(tmp_path / "data")
  code, out, err = _run(["prepare", "--task", "t", "--train", path,
                         f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 0 and "tokenizer coverage" not in out, err  # no tokenizer to check yet
  code, out, err = _run(["prepare", "--task", "t", "--train", path,
                         f"--config.data.tokenizer={tok.model_path}",
                         f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 0, err
  warnings = [line for line in out.splitlines() if "tokenizer coverage" in line]
  assert len(warnings) == 1 and "worst t targets" in warnings[0], out
  assert f"{tok.model_path} does not cover" in warnings[0] and "mT5 spiece.model" in warnings[0]
  code, _, err = _run(["prepare", "--task", "t", "--train", path,
                       f"--config.data.tokenizer={tmp_path / 'nope.model'}",
                       f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 2 and "nope.model': no such file" in err


def test_a_tab_separated_txt_file_is_read_as_tsv(tmp_path, capsys):
  """manythings.org names its Tatoeba exports cmn.txt: one file of tab-separated lines is a
  TSV whatever its extension; aligned text files still come in pairs."""
  export = _tatoeba(tmp_path / "cmn.txt")
  data_dir = str(tmp_path / "data")
  code, out, err = _run(["prepare", "--task", "cmn", "--train", export, "--columns", "0,1",
                         "--split", "validation=0.1,test=0.1", "--seed", "0",
                         f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 0, err
  splits = _splits(data_dir, "cmn")
  assert [len(splits[s]) for s in ("train", "validation", "test")] == [40, 5, 5]
  assert splits["train"][0]["targets"].startswith(tuple(CHINESE))
  source, target = tmp_path / "a.txt", tmp_path / "b.txt"
  source.write_text("one\ntwo\n")
  target.write_text("eins\nzwei\n")
  assert inputs.guess_format(str(source), 2) == "text"
  code, _, err = _run(["prepare", "--task", "lonely", "--train", str(source),
                       f"--config.data.data_dir={data_dir}"], capsys)
  assert code == 2 and "takes --format tsv" in err and len(err.splitlines()) == 1, err
