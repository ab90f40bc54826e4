"""Public TFDS datasets by name, read as {"inputs", "targets", "task", "id"} records.

The data must already be prepared as ArrayRecord (random access) in data_dir, e.g.
`tfds build wmt14_translate/de-en --file_format=array_record --data_dir=D`, or
be a copy such as data_dir="gs://my-bucket/tensorflow_datasets". Nothing is
downloaded here. Feature names follow the TFDS 4.9.10 builders.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterator, SupportsIndex

import numpy as np

from refinedweb_jax.data import datasets, tasks


def _str(value: Any) -> str:
  """TFDS Text features arrive as bytes (or numpy bytes/str scalars)."""
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8")
  return str(value)


def _strs(values: Any) -> list[str]:
  """A Sequence(Text) feature (list or numpy array) as a list of str."""
  return [_str(v) for v in np.asarray(values, dtype=object).reshape(-1)]


@dataclasses.dataclass(frozen=True)
class Spec:
  """How one public dataset becomes a text-to-text task."""

  tfds_name: str  # "name/config" as in tfds.data_source / tfds build.
  inputs: Callable[[dict], str]  # Record -> input text, before the prefix.
  targets: Callable[[dict], str]
  prefix: str
  language: str  # Of the targets (picks the metric tokenisation, e.g. zh).
  metrics: tuple  # tasks.METRICS that score its outputs
  splits: tuple = ("train", "validation", "test")
  extra: Callable[[dict], dict] | None = None  # Record -> further str fields.
  prepare: str = ""  # Command that prepares the data; default: tfds build.

  def command(self, data_dir: str) -> str:
    """The command that prepares this dataset in data_dir."""
    return (self.prepare or "tfds build {name} --file_format=array_record "
            "--data_dir={data_dir}").format(name=self.tfds_name, data_dir=data_dir)


def _translation(year: int, pair: str, source: str, target: str, splits: tuple) -> Spec:
  # Translation features are one Text per language: {"de": ..., "en": ...}.
  return Spec(f"wmt{year}_translate/{pair}", lambda r: _str(r[source]),
              lambda r: _str(r[target]), tasks.translation_prefix(source, target),
              target, ("bleu", "chrf"), splits)


def _squad_extra(record: dict) -> dict:
  # Same encoding as own_data's SQuAD records: every acceptable answer, JSON list.
  return {"answers": json.dumps(_strs(record["answers"]["text"]), ensure_ascii=False)}


def _mbpp_inputs(record: dict) -> str:
  # The tests name the function the answer must define, as in the MBPP paper's prompt.
  return _str(record["text"]) + "\n" + "\n".join(_strs(record["test_list"]))


WMT14_SPLITS = ("train", "validation", "test")  # test = newstest2014.
WMT19_SPLITS = ("train", "validation")  # TFDS's wmt19 has no test split.

PUBLIC: dict[str, Spec] = {
    "wmt14_en_de": _translation(14, "de-en", "en", "de", WMT14_SPLITS),
    "wmt14_de_en": _translation(14, "de-en", "de", "en", WMT14_SPLITS),
    "wmt14_en_fr": _translation(14, "fr-en", "en", "fr", WMT14_SPLITS),
    "wmt14_fr_en": _translation(14, "fr-en", "fr", "en", WMT14_SPLITS),
    "wmt19_zh_en": _translation(19, "zh-en", "zh", "en", WMT19_SPLITS),
    "wmt19_en_zh": _translation(19, "zh-en", "en", "zh", WMT19_SPLITS),
    # highlights: one sentence a line, kept as TFDS joins them.
    "cnn_dailymail": Spec("cnn_dailymail", lambda r: _str(r["article"]),
                          lambda r: _str(r["highlights"]), tasks.prefix("summarize"), "en",
                          ("rouge",)),
    "xsum": Spec("xsum", lambda r: _str(r["document"]), lambda r: _str(r["summary"]),
                 tasks.prefix("summarize"), "en", ("rouge",),
                 prepare="tfds build {name} --file_format=array_record --data_dir={data_dir}"
                         "\n(first put xsum-extracts-from-downloads.tar.gz, see the TFDS xsum "
                         "page, in {data_dir}/downloads/manual/)"),
    # Features: id, title, context, question, answers{text, answer_start}.
    "squad": Spec("squad/v1.1", lambda r: tasks.qa_input(_str(r["question"]), _str(r["context"])),
                  lambda r: _strs(r["answers"]["text"])[0], tasks.prefix("qa"), "en", ("squad",),
                  ("train", "validation"), extra=_squad_extra),
    # Not in the TFDS catalog; TFDS's Hugging Face bridge writes it as mbpp/full
    # (features task_id, text, code, test_list, test_setup_code, challenge_test_list),
    # which is then read from the files alone.
    "mbpp": Spec("mbpp/full", _mbpp_inputs, lambda r: _str(r["code"]), tasks.prefix("code"), "en",
                 ("pass@1",), ("train", "validation", "test", "prompt"),
                 extra=lambda r: {"tests": "\n".join(_strs(r["test_list"]))},
                 prepare="pip install datasets && tfds build huggingface:mbpp/full "
                         "--file_format=array_record --data_dir={data_dir}"),
}


def convert(name: str, record: dict, record_id: str) -> dict[str, str]:
  """One TFDS record of dataset `name` as a text-to-text record."""
  spec = PUBLIC[name]
  out = {"inputs": spec.prefix + spec.inputs(record), "targets": spec.targets(record),
         "task": name, "id": record_id}
  if spec.extra is not None:
    out.update(spec.extra(record))
  return out


class PublicSource:
  """Random-access view (len and indexing, as Grain needs) converting records lazily."""

  def __init__(self, name: str, split: str, source):
    self.name, self.split, self._source = name, split, source

  def __len__(self) -> int:
    return len(self._source)

  def _id(self, index: int) -> str:
    return f"{self.name}/{self.split}:{index}"

  def __getitem__(self, index: SupportsIndex) -> dict[str, str]:
    i = int(index)
    i = i + len(self) if i < 0 else i
    return convert(self.name, self._source[i], self._id(i))

  def __getitems__(self, indices) -> list[dict[str, str]]:
    # Lets batched readers fetch many records with one ArrayRecord call.
    records = self._source.__getitems__(indices)
    return [convert(self.name, r, self._id(int(i))) for i, r in zip(indices, records)]

  def __iter__(self) -> Iterator[dict[str, str]]:
    return datasets.iterate_in_batches(self)

  def __repr__(self) -> str:
    return f"PublicSource({self.name!r}, {self.split!r}, {self._source!r})"


def _not_prepared(name: str, split: str, data_dir: str, why: str) -> FileNotFoundError:
  spec = PUBLIC[name]
  command = spec.command(data_dir).replace("\n", "\n  ")
  return FileNotFoundError(
      f"public dataset {name!r} ({spec.tfds_name}, split {split!r}) is not prepared in "
      f"data_dir {data_dir!r} ({why}). Nothing is downloaded at training time; prepare it "
      f"once where there is network (as ArrayRecord, for random access):\n"
      f"  {command}\n"
      f"or pass the data_dir of a prepared copy, e.g. gs://<bucket>/tensorflow_datasets.")


def data_source(name: str, split: str, data_dir: str) -> PublicSource:
  """Random-access source of {"inputs", "targets", "task", "id"} (plus extras) records.

  Equivalent to tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir,
  download=False), with a clear error when the data is missing or not ArrayRecord.
  """
  if name not in PUBLIC:
    raise ValueError(f"unknown public dataset {name!r}; known: {', '.join(PUBLIC)}")
  spec = PUBLIC[name]
  if split not in spec.splits:
    raise ValueError(f"{name} has no split {split!r}; it has {spec.splits}")
  if not data_dir:
    raise ValueError(f"public dataset {name!r} needs a data_dir, got {data_dir!r}")
  import tensorflow_datasets as tfds  # Slow import; only needed here.
  try:
    # Without TensorFlow most of these builders cannot be imported; TFDS then
    # reads the prepared files alone (dataset_info.json + features.json).
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise _not_prepared(name, split, data_dir, f"no {spec.tfds_name} files found") from None
  if not builder.is_prepared():
    raise _not_prepared(name, split, data_dir, f"{builder.data_path} is missing")
  file_format = builder.info.file_format
  if file_format is None or file_format.value != "array_record":
    raise ValueError(
        f"public dataset {name!r} in {builder.data_path} is stored as "
        f"{file_format.value if file_format else 'unknown'}, which has no random access; "
        f"rebuild it as array_record:\n  {spec.command(data_dir)}")
  if split not in builder.info.splits:
    raise ValueError(f"{name} in {builder.data_path} has no split {split!r}; it has "
                     f"{tuple(builder.info.splits)}")
  return PublicSource(name, split, builder.as_data_source(split=split))
