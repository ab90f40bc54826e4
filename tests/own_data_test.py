"""Own-data tasks from the shared real datasets, malformed-input reports, public TFDS specs."""

import gzip
import json
import logging
import os

import numpy as np
import pytest
from etils import epath
import tensorflow_datasets as tfds

from refinedweb_jax.data import fetch
from refinedweb_jax.data.datasets import own_data
from refinedweb_jax.data.datasets import public

SHARED = fetch.data_root()


def _shared(*parts):
  return os.path.abspath(os.path.join(SHARED, *parts))


def _all(source):
  return [source[i] for i in range(len(source))]


def _leftovers(data_dir):
  return [os.path.join(r, n) for r, ds, fs in os.walk(data_dir) for n in ds + fs]


@pytest.mark.public_data("multi30k")
def test_multi30k_aligned_gz(tmp_path):
  src, tgt = _shared("multi30k", "val.en.gz"), _shared("multi30k", "val.de.gz")
  settings = dict(task="multi30k_en_de", format="text", train=[(src, tgt)],
                  prefix="translate English to German: ")
  records = _all(own_data.data_source(str(tmp_path), "train", **settings))
  with gzip.open(src, "rt", encoding="utf-8") as f:
    first_en = f.readline().rstrip("\n")
  with gzip.open(tgt, "rt", encoding="utf-8") as f:
    last_de = f.read().splitlines()[-1]
  assert len(records) == 1014
  assert records[0]["inputs"] == "translate English to German: " + first_en
  assert records[-1]["targets"] == last_de
  assert records[0]["id"] == "val.en.gz:1" and records[-1]["id"] == "val.en.gz:1014"
  assert all(sorted(r) == sorted(own_data.FIELDS) and r["task"] == "multi30k_en_de"
             for r in records)
  with pytest.raises(ValueError, match="has no 'validation' split"):
    own_data.data_source(str(tmp_path), "validation", **settings)


@pytest.mark.public_data("tatoeba_cmn_eng")
def test_tatoeba_tsv_both_directions(tmp_path):
  dev = _shared("tatoeba_cmn_eng", "dev.tsv")
  with open(dev, encoding="utf-8") as f:
    english, chinese = f.readline().rstrip("\n").split("\t")
  en_zh = _all(own_data.data_source(str(tmp_path), "train", task="tatoeba_en_zh",
                                    format="tsv", train=[dev]))
  zh_en = _all(own_data.data_source(str(tmp_path), "train", task="tatoeba_zh_en",
                                    format="tsv", train=[dev], columns="1,0"))
  assert len(en_zh) == len(zh_en) == 1000
  assert en_zh[0]["inputs"] == "tatoeba_en_zh: " + english and en_zh[0]["targets"] == chinese
  assert zh_en[0]["inputs"] == "tatoeba_zh_en: " + chinese and zh_en[0]["targets"] == english
  assert len(os.listdir(tmp_path / "refinedweb_own")) == 2


@pytest.mark.public_data("dialogsum", "mbpp")
def test_jsonl_dialogsum_and_mbpp(tmp_path):
  dialogs = _all(own_data.data_source(
      str(tmp_path), "train", task="dialogsum", format="jsonl",
      train=[_shared("dialogsum", "dialogsum.dev.jsonl")], input_field="dialogue",
      target_field="summary", prefix="summarize: "))
  assert len(dialogs) == 500
  assert dialogs[0]["inputs"].startswith("summarize: #Person1#")
  code = _all(own_data.data_source(
      str(tmp_path), "train", task="mbpp", format="jsonl",
      train=[_shared("mbpp", "mbpp_sanitized.jsonl")], input_field="text", target_field="code"))
  assert len(code) == 427 and code[0]["id"] == "mbpp_sanitized.jsonl:1"
  assert code[0]["inputs"].startswith("mbpp: Write a function") and "def " in code[0]["targets"]


@pytest.mark.public_data("xquad")
def test_squad_xquad(tmp_path):
  records = _all(own_data.data_source(str(tmp_path), "train", task="xquad_en", format="squad",
                                      train=[_shared("xquad", "xquad.en.json")]))
  assert len(records) == 1190 and len({r["id"] for r in records}) == 1190
  first = records[0]
  assert first["inputs"].startswith("xquad_en: question: ") and " context: " in first["inputs"]
  answers = json.loads(first["answers"])
  assert answers[0] == first["targets"] and first["targets"] in first["inputs"]


def test_config_name_tracks_file_changes(tmp_path):
  path = tmp_path / "a.tsv"
  path.write_text("hello\tbonjour\n", encoding="utf-8")
  settings = dict(task="t", format="tsv", train=[str(path)])
  name = own_data.make_config(**settings).name
  assert name.startswith("t_") and own_data.make_config(**settings).name == name
  assert own_data.make_config(**settings, prefix="x: ").name != name
  path.write_text("hello\tsalut\n", encoding="utf-8")
  os.utime(path, ns=(1, 1))
  assert own_data.make_config(**settings).name != name


def _write(path, data: bytes):
  path.write_bytes(data)
  return str(path)


def _fails(data_dir, match, **settings):
  os.makedirs(data_dir, exist_ok=True)
  with pytest.raises(ValueError) as info:
    own_data.build(str(data_dir), **settings)
  assert _leftovers(data_dir) == [], "a failed build must leave nothing behind"
  for text in match:
    assert text in str(info.value), str(info.value)
  return str(info.value)


BAD_JSONL = (b'{"q": "one", "a": "1"}\n{"q": "caf\xe9", "a": "2"}\n{"q": "three"}\n'
             b'{"q": "four", "a": ""}\n{"q": "five", "a": 5,}\n\n{"q": "six", "a": "6"}\n')


def test_malformed_jsonl_reports_every_line(tmp_path):
  bad = _write(tmp_path / "bad.jsonl", BAD_JSONL)
  settings = dict(task="bad", format="jsonl", train=[bad], input_field="q", target_field="a")
  message = _fails(tmp_path / "out", [f"{bad}:2: invalid UTF-8", f"{bad}:3: no field 'a'",
                                      f"{bad}:4: empty target", f"{bad}:5: invalid JSON",
                                      "skip_malformed=True"], **settings)
  assert message.count(bad) == 4


def test_skip_malformed_keeps_good_lines(tmp_path, caplog):
  bad = _write(tmp_path / "bad.jsonl", BAD_JSONL)
  with caplog.at_level(logging.WARNING, logger=own_data.__name__):
    records = _all(own_data.data_source(str(tmp_path / "out"), "train", task="bad",
                                        format="jsonl", train=[bad], input_field="q",
                                        target_field="a", skip_malformed=True))
  assert [(r["inputs"], r["targets"], r["id"]) for r in records] == [
      ("bad: one", "1", "bad.jsonl:1"), ("bad: six", "6", "bad.jsonl:7")]
  assert "skipped 4 malformed line(s)" in caplog.text


def test_misaligned_text_fails_even_when_skipping(tmp_path):
  src = _write(tmp_path / "s.en", b"a\nb\nc\n")
  tgt = _write(tmp_path / "s.de", b"x\ny\n")
  for skip in (False, True):
    _fails(tmp_path / "out", [f"{tgt}:3: {src} has 3 lines but {tgt} has 2"],
           task="mis", format="text", train=[(src, tgt)], skip_malformed=skip)


def test_bad_tsv_columns_and_empty_input(tmp_path):
  # Line 2's third column is past the selected ones, so it is ignored.
  bad = _write(tmp_path / "bad.tsv", b"a\tb\nc\td\te\n\tf\n" + b"only one column\n" * 25)
  message = _fails(tmp_path / "out", [f"{bad}:3: empty input", "26 bad line(s) in 1 file(s)",
                                      f"{bad}:4: 1 column(s), expected at least 2",
                                      "... and 6 more in " + bad],
                   task="cols", format="tsv", train=[bad])
  assert f"{bad}:2:" not in message
  assert len(message.splitlines()) == 1 + own_data.MAX_SHOWN + 1


def test_bad_squad_json_and_empty_gz_split(tmp_path):
  bad = _write(tmp_path / "q.json", b'{"data": [\n{"paragraphs": []}\n,]}\n')
  _fails(tmp_path / "out", [f"{bad}:3: invalid JSON"], task="q", format="squad", train=[bad])
  gz = _write(tmp_path / "d.jsonl.gz", gzip.compress(b'{"q": "x", "a": ""}\n'))
  _fails(tmp_path / "out", [f"{gz}:1: empty target", "split 'train' has no usable records"],
         task="d", format="jsonl", train=[gz], input_field="q", target_field="a",
         skip_malformed=True)


def test_a_bom_is_dropped_and_nul_bytes_and_overlong_lines_are_reported(tmp_path):
  bom = _write(tmp_path / "bom.tsv", b"\xef\xbb\xbfhello\thallo\nbye\ttschuess\n")
  records = _all(own_data.data_source(str(tmp_path / "out"), "train", task="bom", format="tsv",
                                      train=[bom], prefix=""))
  assert [r["inputs"] for r in records] == ["hello", "bye"]
  bad = _write(tmp_path / "bad.tsv", b"ok\tfine\nnul\x00here\tx\n" + b"long" * 30 + b"\ty\n")
  _fails(tmp_path / "out2", [f"{bad}:2: NUL byte at byte 4", f"{bad}:3: line of 122 bytes, "
                            "more than max_line_bytes=100"],
         task="nul", format="tsv", train=[bad], max_line_bytes=100)


@pytest.mark.parametrize("squad, problem", [
    ({"data": [{"paragraphs": 5}]}, "data[0].paragraphs: expected a list, got int"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": "no"}]}]},
     "data[0].paragraphs[0].qas: expected a list, got str"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": 3}]}]}]},
     "data[0].paragraphs[0].qas[0].answers: expected a list, got int"),
    ({"data": ["not an article"]}, "data[0]: expected a JSON object, got str"),
])
def test_malformed_squad_structures_are_reported(tmp_path, squad, problem):
  path = _write(tmp_path / "q.json", json.dumps(squad).encode())
  _fails(tmp_path / "out", [f"{path}:{problem}"], task="q", format="squad", train=[path])


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
  good = _write(tmp_path / "good.tsv", b"a\tb\nc\td\n")

  def broken(self, split):
    yield "good.tsv:1", dict(inputs="a", targets="b", task="t", id="good.tsv:1")
    raise RuntimeError("disk full")

  monkeypatch.setattr(own_data.RefinedWebOwn, "_generate_examples", broken)
  with pytest.raises(RuntimeError, match="disk full"):
    own_data.build(str(tmp_path / "new"), task="t", format="tsv", train=[good])
  assert not (tmp_path / "new").exists()


def test_bad_arguments_are_named(tmp_path):
  good = _write(tmp_path / "good.tsv", b"a\tb\n")
  with pytest.raises(ValueError, match="format must be one of"):
    own_data.make_config(task="t", format="csv", train=[good])
  with pytest.raises(ValueError, match="task must be"):
    own_data.make_config(task="a/b", format="tsv", train=[good])
  with pytest.raises(FileNotFoundError, match="validation file not found: .*nope.tsv"):
    own_data.make_config(task="t", format="tsv", train=[good], validation=["nope.tsv"])
  with pytest.raises(ValueError, match="needs input_field and target_field"):
    own_data.make_config(task="t", format="jsonl", train=[good])
  with pytest.raises(ValueError, match="columns must be"):
    own_data.make_config(task="t", format="tsv", train=[good], columns=(1, 1))
  with pytest.raises(ValueError, match=r"\(source, target\) pairs"):
    own_data.make_config(task="t", format="text", train=[good])


# Public TFDS datasets: records shaped as the TFDS 4.9.10 builders write them
# (Text -> bytes, Sequence(Text) -> array of bytes).
TFDS_RECORDS = {
    "wmt14_translate/de-en": {"de": b"Hallo Welt", "en": b"Hello world"},
    "wmt14_translate/fr-en": {"fr": b"Bonjour", "en": b"Hello"},
    "wmt19_translate/zh-en": {"zh": "你好".encode(), "en": b"Hello"},
    "cnn_dailymail": {"article": b"Long story.", "highlights": b"Short.\nStory.",
                      "publisher": b"cnn", "id": b"abc"},
    "xsum": {"document": b"A document.", "summary": b"A summary."},
    "squad/v1.1": {"id": b"q1", "title": b"T", "context": b"Paris is in France.",
                   "question": b"Where is Paris?",
                   "answers": {"text": np.array([b"France", b"in France"], dtype=object),
                               "answer_start": np.array([12, 9], np.int32)}},
    "mbpp/full": {"task_id": 2, "text": b"Add two numbers.", "code": b"def add(a, b):\n  return a+b",
                  "test_list": np.array([b"assert add(1, 2) == 3"], dtype=object),
                  "test_setup_code": b"", "challenge_test_list": np.array([], dtype=object)},
}
EXPECTED = {
    "wmt14_en_de": ("translate English to German: Hello world", "Hallo Welt"),
    "wmt14_de_en": ("translate German to English: Hallo Welt", "Hello world"),
    "wmt14_fr_en": ("translate French to English: Bonjour", "Hello"),
    "wmt19_en_zh": ("translate English to Chinese: Hello", "你好"),
    "cnn_dailymail": ("summarize: Long story.", "Short.\nStory."),
    "xsum": ("summarize: A document.", "A summary."),
    "squad": ("question: Where is Paris? context: Paris is in France.", "France"),
    "mbpp": ("write python: Add two numbers.\nassert add(1, 2) == 3",
             "def add(a, b):\n  return a+b"),
}


def test_public_specs_convert_tfds_shaped_records():
  for name, spec in public.PUBLIC.items():
    out = public.convert(name, TFDS_RECORDS[spec.tfds_name], f"{name}/train:0")
    assert all(type(v) is str for v in out.values()), out
    assert out["task"] == name and out["inputs"].startswith(spec.prefix)
    if name in EXPECTED:
      assert (out["inputs"], out["targets"]) == EXPECTED[name]
  squad = public.convert("squad", TFDS_RECORDS["squad/v1.1"], "x")
  assert json.loads(squad["answers"]) == ["France", "in France"]
  assert public.convert("mbpp", TFDS_RECORDS["mbpp/full"], "x")["tests"] == (
      "assert add(1, 2) == 3")
  assert public.PUBLIC["wmt19_en_zh"].language == "zh"


def test_public_missing_data_is_explained(tmp_path):
  for name, spec in public.PUBLIC.items():
    with pytest.raises(FileNotFoundError) as info:
      public.data_source(name, "train", str(tmp_path))
    message = str(info.value)
    for text in (repr(name), str(tmp_path), "tfds build", spec.tfds_name.split("/")[0],
                 "--file_format=array_record"):
      assert text in message, message
  assert _leftovers(tmp_path) == []
  with pytest.raises(ValueError, match="unknown public dataset 'wmt99'"):
    public.data_source("wmt99", "train", str(tmp_path))
  with pytest.raises(ValueError, match="no split 'test'"):
    public.data_source("squad", "test", str(tmp_path))


def _local_tfds(data_dir, name, config, version, features, records):
  """Prepares records under data_dir with the real dataset's name, config and version."""

  class Local(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version(version)
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config)]
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      yield from enumerate(records)

  Local.name = name
  Local(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_public_data_source_reads_prepared_array_record(tmp_path):
  from tensorflow_datasets.question_answering import qa_utils
  pairs = [{"de": f"Hallo {i}", "en": f"Hello {i}"} for i in range(3)]
  _local_tfds(tmp_path, "wmt14_translate", "de-en", "1.0.0",
              tfds.features.Translation(languages=("de", "en")), pairs)
  source = public.data_source("wmt14_en_de", "train", str(tmp_path))
  assert len(source) == 3
  assert source[-1] == {"inputs": "translate English to German: Hello 2", "targets": "Hallo 2",
                        "task": "wmt14_en_de", "id": "wmt14_en_de/train:2"}
  assert [r["targets"] for r in source] == ["Hallo 0", "Hallo 1", "Hallo 2"]
  question = dict(id="q", title="T", context="Paris is in France.", question="Where is Paris?",
                  answers={"text": ["France", "in France"], "answer_start": [12, 9]})
  # squad's builder code is importable without TensorFlow, so this also covers
  # TFDS reading through the registered class rather than the files alone.
  _local_tfds(tmp_path, "squad", "v1.1", "3.0.0", qa_utils.squadlike_features(), [question])
  record = public.data_source("squad", "train", str(tmp_path))[0]
  assert record["targets"] == "France" and json.loads(record["answers"]) == ["France", "in France"]
