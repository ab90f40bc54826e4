"""Fetching the public datasets: file:// mirrors built from ../shared/data stand in for upstream."""

import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import urllib.request
import zipfile

import pytest

from refinedweb_jax import configs
from refinedweb_jax.data import fetch
from refinedweb_jax.data.datasets import own_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = fetch.data_root()  # every dataset there, for the tests marked public_data()
PINNED = dict(fetch.DATASETS)  # before the fixture swaps the pins of synthesized inputs
M30K = [o.name for o in fetch.DATASETS["multi30k"].outputs]


def _read(*parts) -> bytes:
  with open(os.path.join(*parts), "rb") as f:
    return f.read()


def _text(*parts) -> bytes:
  """A file's text: its bytes, decompressed for .gz."""
  data = _read(*parts)
  return gzip.decompress(data) if parts[-1].endswith(".gz") else data


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _lines(data: bytes) -> list:
  assert data.endswith(b"\n")
  return data[:-1].split(b"\n")


def _put(root, upstream: fetch.Upstream, data: bytes) -> None:
  path = os.path.join(root, upstream.repo, upstream.commit, upstream.path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def _cmn_txt() -> bytes:
  """A cmn.txt whose dev/test lines sit where tatoeba_split() says; unused lines are stand-ins."""
  dev, test, unused = fetch.tatoeba_split()
  at = dict(zip(dev, _lines(_read(SHARED, "tatoeba_cmn_eng", "dev.tsv"))))
  at.update(zip(test, _lines(_read(SHARED, "tatoeba_cmn_eng", "test.tsv"))))
  at.update((i, b"unused %d\tx" % i) for i in unused)
  train = _lines(_read(SHARED, "tatoeba_cmn_eng", "train.tsv"))
  rest = iter(train)
  return b"".join((at[i] if i in at else next(rest)) + b"\n" for i in range(len(at) + len(train)))


def _dialogsum_zip() -> bytes:
  """A zip laid out like DialogSum_Data.zip, its train file as Python dict reprs."""
  train = _text(SHARED, "dialogsum", "dialogsum.train.jsonl.gz")
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as z:
    z.writestr("DialogSum_Data/dialogsum.train.jsonl",
               "\n".join(repr(json.loads(x)) for x in _lines(train)))
  return buffer.getvalue()


def _upstream_mirror(root) -> dict:
  """Writes a raw.githubusercontent.com layout under root; {name: Dataset with re-pinned inputs}.

  Files upstream has byte for byte (or, for .gz, text for text) are copied from ../shared/data,
  so their pins are the real ones. cmn.txt and the DialogSum zip cannot be rebuilt from it; the
  stand-ins get their own pins, and the derived files must still match the real output pins.
  """
  for dataset in PINNED.values():
    for output in dataset.outputs + dataset.licence_files:
      if output.upstream:
        _put(root, output.upstream, _read(SHARED, dataset.name, output.name))
  repinned = {}
  for name, data in (("tatoeba_cmn_eng", _cmn_txt()), ("dialogsum", _dialogsum_zip())):
    upstream = dataclasses.replace(PINNED[name].inputs[0], sha256=_sha(data))
    _put(root, upstream, data)
    repinned[name] = dataclasses.replace(PINNED[name], inputs=(upstream,))
  return repinned


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
  root = tmp_path_factory.mktemp("upstream")
  repinned = _upstream_mirror(root)
  with pytest.MonkeyPatch.context() as patch:
    for name, dataset in repinned.items():
      patch.setitem(fetch.DATASETS, name, dataset)
    yield root


@pytest.fixture(scope="module")
def fetched(mirror, tmp_path_factory):
  out = tmp_path_factory.mktemp("fetched")
  log = []
  written = fetch.fetch(out=str(out), source=mirror.as_uri(), log=log.append)
  return out, written, log


@pytest.mark.public_data()
def test_layout_checksums_and_licences(fetched):
  out, written, log = fetched
  for name, dataset in PINNED.items():
    files = [o.name for o in dataset.outputs + dataset.licence_files]
    assert written[name] == files
    assert sorted(os.listdir(out / name)) == sorted(files + ["SOURCE.txt"])  # no temp files
    for output in dataset.outputs + dataset.licence_files:
      assert _sha(_text(out, name, output.name)) == output.sha256[0], (name, output.name)
    source = (out / name / "SOURCE.txt").read_text(encoding="utf-8")
    upstreams = [o.upstream for o in dataset.outputs if o.upstream] + list(dataset.inputs)
    assert all(up.commit in source and up.repo in source for up in upstreams)
    assert f"Licence: {dataset.licence}" in source
    assert f"{name}: licence: {dataset.licence}" in log
  assert [x for x in log if "licence:" in x and "non-commercial" in x] == [
      f"multi30k: licence: {PINNED['multi30k'].licence}",
      f"dialogsum: licence: {PINNED['dialogsum'].licence}"]


@pytest.mark.public_data()
def test_what_is_byte_identical_and_what_is_derived(fetched):
  out = fetched[0]
  identical = {"multi30k": [o.name for o in PINNED["multi30k"].outputs],
               "tatoeba_cmn_eng": ["dev.tsv", "test.tsv"], "dialogsum": ["dialogsum.dev.jsonl"],
               "xquad": ["xquad.en.json", "xquad.zh.json", "LICENSE-CC-BY-SA4.0.txt"],
               "mbpp": ["mbpp_sanitized.jsonl"], "humaneval": ["LICENSE"]}
  for name, files in identical.items():
    for file in files:
      assert _read(out, name, file) == _read(SHARED, name, file), (name, file)
  for name, file in (("dialogsum", "dialogsum.train.jsonl.gz"),
                     ("humaneval", "HumanEval.jsonl.gz")):
    assert _text(out, name, file) == _text(SHARED, name, file)  # the same text, other gzip bytes
  # The Tatoeba train split: the reference copy's pairs, ordered by SHA-256 of the line.
  train = _lines(_read(out, "tatoeba_cmn_eng", "train.tsv"))
  assert train == sorted(_lines(_read(SHARED, "tatoeba_cmn_eng", "train.tsv")),
                         key=lambda x: hashlib.sha256(x).digest())
  assert len(train) == 17133
  dev, test, unused = fetch.tatoeba_split()
  assert len(set(dev + test + unused)) == 3000 and max(dev + test + unused) < 20133


@pytest.mark.public_data()
def test_a_second_fetch_downloads_nothing(fetched, mirror, monkeypatch):
  out = fetched[0]
  before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

  def no_download(url, *args, **kwargs):
    raise AssertionError(f"downloaded {url}")

  monkeypatch.setattr(urllib.request, "urlopen", no_download)
  log = []
  assert fetch.fetch(out=str(out), source=mirror.as_uri(), log=log.append) == {
      name: [] for name in fetch.NAMES}
  assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
  assert f"mbpp: up to date in {out / 'mbpp'}" in log


@pytest.mark.public_data()
def test_a_mirror_laid_out_like_the_output(tmp_path):
  written = fetch.fetch(out=str(tmp_path), source=SHARED, log=lambda line: None)
  for name, dataset in PINNED.items():
    assert written[name] == [o.name for o in dataset.outputs + dataset.licence_files]
    for output in dataset.outputs + dataset.licence_files:
      assert _read(tmp_path, name, output.name) == _read(SHARED, name, output.name)


@pytest.mark.public_data()
def test_only_missing_or_damaged_files_are_fetched_again(fetched, mirror, tmp_path):
  shutil.copytree(fetched[0], tmp_path, dirs_exist_ok=True)
  (tmp_path / "xquad" / "xquad.zh.json").unlink()
  (tmp_path / "mbpp" / "mbpp_sanitized.jsonl").write_text("{}\n")
  (tmp_path / "multi30k" / "val.de.gz").write_bytes(b"\x1f\x8b truncated")
  (tmp_path / "tatoeba_cmn_eng" / "dev.tsv").unlink()
  written = fetch.fetch(out=str(tmp_path), source=str(mirror), log=lambda line: None)
  assert {k: v for k, v in written.items() if v} == {
      "multi30k": ["val.de.gz"], "tatoeba_cmn_eng": ["dev.tsv"], "xquad": ["xquad.zh.json"],
      "mbpp": ["mbpp_sanitized.jsonl"]}
  for name in written:
    for file in os.listdir(tmp_path / name):
      if file != "SOURCE.txt":
        assert _read(tmp_path, name, file) == _read(fetched[0], name, file)


@pytest.mark.public_data()
@pytest.mark.parametrize("name, upstream_file, file", [
    ("mbpp", "data/mbpp.jsonl", "mbpp_sanitized.jsonl"),
    ("multi30k", "data/task1/raw/val.en.gz", "val.en.gz"),
    ("tatoeba_cmn_eng", "data/cmn.txt", "cmn.txt")])
def test_a_corrupted_mirror_file_is_refused(fetched, mirror, tmp_path, name, upstream_file, file):
  bad = tmp_path / "mirror"
  shutil.copytree(mirror, bad)
  [path] = bad.rglob(upstream_file)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 1
  path.write_bytes(bytes(data))
  with pytest.raises(fetch.FetchError) as info:
    fetch.fetch([name], out=str(tmp_path / "out"), source=bad.as_uri(), log=lambda line: None)
  message = str(info.value)
  pinned = fetch.DATASETS[name]
  expected = (pinned.inputs[0].sha256 if pinned.inputs else
              next(o.sha256[0] for o in pinned.outputs if o.upstream.path == upstream_file))
  if upstream_file.endswith(".gz"):  # a flipped bit in deflate data: a CRC error or other text
    assert f"{file}: SHA-256 of the decompressed text is " in message
  else:
    assert f"{file}: SHA-256 is {_sha(bytes(data))}, expected {expected}" in message
  assert expected in message and message.endswith("; the file was not kept")
  assert "\n" not in message
  left = [p.name for p in (tmp_path / "out").rglob("*")]
  assert file not in left and not [x for x in left if x.endswith(".part") or "inputs" in x]


def test_unknown_names_and_sources_are_refused(tmp_path):
  allowed = "allowed: multi30k, tatoeba_cmn_eng, dialogsum, xquad, mbpp, humaneval"
  with pytest.raises(fetch.FetchError, match=f"unknown dataset 'wmt14'; {allowed}$"):
    fetch.fetch(["multi30k", "wmt14"], out=str(tmp_path))
  with pytest.raises(fetch.FetchError, match="unknown dataset 'squad'"):
    fetch.require("squad")
  with pytest.raises(fetch.FetchError, match="scheme 'ftp' is not one of https, http, file"):
    fetch.fetch(["mbpp"], out=str(tmp_path), source="ftp://example.org/x")
  with pytest.raises(fetch.FetchError, match="is neither a folder nor a URL"):
    fetch.fetch(["mbpp"], out=str(tmp_path), source=str(tmp_path / "nowhere"))
  with pytest.raises(fetch.FetchError, match="not found"):
    fetch.fetch(["mbpp"], out=str(tmp_path / "out"), source=tmp_path.as_uri(),
                log=lambda line: None)
  assert os.listdir(tmp_path / "out" / "mbpp") == []


@pytest.mark.public_data()
def test_data_root_and_the_missing_data_message(fetched, tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.delenv(fetch.ENV, raising=False)
  default = str(tmp_path / "home" / ".cache" / "refinedweb_jax" / "public")
  monkeypatch.setattr(fetch, "PROJECT_SHARED", str(tmp_path / "no_shared"))
  assert fetch.data_root() == fetch.default_out() == default
  with pytest.raises(fetch.FetchError) as info:
    fetch.require("multi30k")
  assert str(info.value) == (
      f"dataset 'multi30k' is missing from {default} (no {', '.join(M30K)}): run "
      f"`refinedweb fetch multi30k`, or set {fetch.ENV} to a folder that has it")
  elsewhere = tmp_path / "elsewhere"
  with pytest.raises(fetch.FetchError, match=f"run `refinedweb fetch xquad --out {elsewhere}`"):
    fetch.require("xquad", root=str(elsewhere))
  monkeypatch.setattr(fetch, "PROJECT_SHARED", SHARED)
  assert fetch.data_root() == SHARED and fetch.default_out() == default
  monkeypatch.setenv(fetch.ENV, str(fetched[0]))
  assert fetch.data_root() == fetch.default_out() == str(fetched[0])
  assert fetch.require("humaneval") == str(fetched[0] / "humaneval")
  assert fetch.fetch_command(["xquad"], str(fetched[0])) == "refinedweb fetch xquad"


@pytest.mark.public_data()
def test_the_project_readers_parse_the_fetched_files(fetched):
  out = fetched[0]
  read = lambda fmt, *files, **kw: own_data.read_examples(task="t", format=fmt, files=list(files),
                                                          **kw)
  m30k = out / "multi30k"
  for split, n in (("train", 29000), ("val", 1014), ("test_2016_flickr", 1000)):
    for lang in ("de", "fr"):
      pair = (str(m30k / f"{split}.en.gz"), str(m30k / f"{split}.{lang}.gz"))
      assert len(read("text", pair)) == n
  for split, n in (("train", 17133), ("dev", 1000), ("test", 1000)):
    assert len(read("tsv", str(out / "tatoeba_cmn_eng" / f"{split}.tsv"))) == n
  for file, n in (("dialogsum.train.jsonl.gz", 12460), ("dialogsum.dev.jsonl", 500)):
    assert len(read("jsonl", str(out / "dialogsum" / file), input_field="dialogue",
                    target_field="summary")) == n
  for lang in ("en", "zh"):
    assert len(read("squad", str(out / "xquad" / f"xquad.{lang}.json"))) == 1190
  assert len(read("jsonl", str(out / "mbpp" / "mbpp_sanitized.jsonl"), input_field="text",
                  target_field="code")) == 427
  problems = read("jsonl", str(out / "humaneval" / "HumanEval.jsonl.gz"), input_field="prompt",
                  target_field="canonical_solution")
  assert len(problems) == 164 and problems[0]["inputs"].startswith("from typing import List")


@pytest.mark.public_data()
def test_the_multi30k_experiment_reads_the_fetched_files(fetched, monkeypatch):
  monkeypatch.setenv(fetch.ENV, str(fetched[0]))
  config = configs.load_config(os.path.join(ROOT, "experiments", "train_small_multi30k.py:smoke"))
  for task in config.own_tasks:
    for split, n in (("validation", 1014), ("test", 1000)):
      files = [tuple(pair) for pair in task[split]]
      assert files[0][0].startswith(str(fetched[0] / "multi30k"))
      assert len(own_data.read_examples(task=task["task"], format=task["format"],
                                        files=files)) == n
