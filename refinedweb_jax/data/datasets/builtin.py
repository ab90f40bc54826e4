"""TFDS builder for the built-in synthetic corpus, stored as ArrayRecord for random access."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from typing import Any, Iterator, SupportsIndex

from etils import epath
import tensorflow_datasets as tfds

from refinedweb_jax.data import corpus, datasets

FIELDS = ("inputs", "targets", "task", "tests", "id")
SPLITS = ("train", "validation", "test")


def _not_our_config_warning(record: logging.LogRecord) -> bool:
  """Drops TFDS's "Using custom data configuration" warning for this project's builders,
  which always use custom configs (the corpus sizes, an own task's files)."""
  args = record.args if isinstance(record.args, tuple) else ()
  return not (str(record.msg).startswith("Using custom data configuration") and args
              and type(args[0]).__module__.startswith("refinedweb_jax"))


logging.getLogger("absl").addFilter(_not_our_config_warning)


@contextlib.contextmanager
def _no_progress_bar():
  """TFDS's progress bars off for a while (then as they were)."""
  from tensorflow_datasets.core.utils import tqdm_utils
  was = getattr(tqdm_utils, "_active", True)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(was)


@dataclasses.dataclass(eq=False)
class BuiltinConfig(tfds.core.BuilderConfig):
  """Sizes and seed of one generated copy of the corpus."""

  num_train: int = 0
  num_validation: int = 0
  num_test: int = 0
  seed: int = 0
  long_fraction: float = 0.05


def make_config(*, num_train: int, num_validation: int, num_test: int, seed: int = 0,
                long_fraction: float = 0.05) -> BuiltinConfig:
  """Validates the settings and returns a config whose name encodes all of them."""
  # TFDS refuses to write an empty split, hence sizes >= 1.
  for key, value, low in (("num_train", num_train, 1), ("num_validation", num_validation, 1),
                          ("num_test", num_test, 1), ("seed", seed, 0)):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
      raise ValueError(f"{key} must be an int >= {low}, got {value!r}")
  if not 0.0 <= long_fraction <= 1.0:
    raise ValueError(f"long_fraction must be in [0, 1], got {long_fraction!r}")
  long_fraction = float(long_fraction)
  # Every setting is in the name, so different sizes and seeds live side by side
  # in one data_dir; repr keeps distinct floats distinct, 'p' keeps it one word.
  name = (f"n{num_train}_v{num_validation}_t{num_test}_s{seed}"
          f"_l{repr(long_fraction).replace('.', 'p')}")
  return BuiltinConfig(
      name=name,
      description=f"train={num_train} validation={num_validation} test={num_test}"
                  f" seed={seed} long_fraction={long_fraction}",
      num_train=num_train, num_validation=num_validation, num_test=num_test,
      seed=seed, long_fraction=long_fraction)


class LocalBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the project's own builders: array_record output, no downloads.

  Abstract (no _info), so TFDS does not register it as a dataset.
  """

  # TFDS's default lookup of these imports importlib_resources, an optional
  # package that is not installed here (ModuleNotFoundError on first build).
  code_path = epath.Path(__file__)
  pkg_dir_path = epath.Path(__file__).parent

  def __init__(self, *, file_format: str = "array_record", **kwargs: Any):
    # TFDS defaults to TFRecord, which has no random access (Grain needs it).
    super().__init__(file_format=file_format, **kwargs)

  def download_and_prepare(self, *args, **kwargs):
    # One line instead of TFDS's "Downloading and preparing dataset Unknown size" and
    # its progress bars (a redraw per example in a log file).
    if not self.is_prepared():
      print(f"preparing {self.name}/{self.builder_config.name} in {self.data_dir_root}",
            file=sys.stderr, flush=True)
    with _no_progress_bar():
      return super().download_and_prepare(*args, **kwargs)

  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass


class RefinedWebBuiltin(LocalBuilder):
  """Synthetic multi-task corpus from `refinedweb_jax.corpus`; no downloads."""

  name = "refinedweb_builtin"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Synthetic multi-task text corpus generated locally.",
        features=tfds.features.FeaturesDict({f: tfds.features.Text() for f in FIELDS}),
        # Keeps generation order, so record i is the i-th example of
        # corpus.generate_split, and skips TFDS's shuffle pass.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated locally.
    config = self.builder_config
    if not isinstance(config, BuiltinConfig):
      raise ValueError(f"{self.name} needs a BuiltinConfig from make_config(), got {config!r}")
    sizes = {"train": config.num_train, "validation": config.num_validation,
             "test": config.num_test}
    return {split: self._generate_examples(split=split, num_examples=n)
            for split, n in sizes.items()}

  def _generate_examples(self, split: str, num_examples: int):
    config = self.builder_config
    # With shuffling disabled TFDS keys records by position and no longer
    # rejects repeated keys, so repeated ids are caught here.
    seen = set()
    for example in corpus.generate_split(split, num_examples, seed=config.seed,
                                         long_fraction=config.long_fraction):
      key = example["id"]
      if key in seen:
        raise ValueError(f"corpus produced duplicate id {key!r} in split {split!r}")
      seen.add(key)
      yield key, {f: example[f] for f in FIELDS}


def build(data_dir: str, *, num_train: int, num_validation: int, num_test: int, seed: int = 0,
          long_fraction: float = 0.05) -> RefinedWebBuiltin:
  """Generates the dataset under data_dir unless it is already there; returns the builder."""
  config = make_config(num_train=num_train, num_validation=num_validation, num_test=num_test,
                       seed=seed, long_fraction=long_fraction)
  builder = RefinedWebBuiltin(data_dir=data_dir, config=config)
  # Returns at once if the version directory exists: TFDS writes into a temporary
  # directory and renames it into place only after every split is complete.
  builder.download_and_prepare()
  return builder


class StrDataSource:
  """Random-access source (len and indexing, as Grain needs) yielding dicts of str.

  TFDS decodes Text features to bytes; this decodes them to str.
  """

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: SupportsIndex) -> dict[str, str]:
    return _to_str(self._source[index])

  def __getitems__(self, indices) -> list[dict[str, str]]:
    # Lets batched readers fetch many records with one ArrayRecord call.
    return [_to_str(r) for r in self._source.__getitems__(indices)]

  def __iter__(self) -> Iterator[dict[str, str]]:
    return datasets.iterate_in_batches(self)

  def __repr__(self) -> str:
    return f"StrDataSource({self._source!r})"


def _to_str(record: dict[str, Any]) -> dict[str, str]:
  return {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in record.items()}


def data_source(data_dir: str, split: str, **settings) -> StrDataSource:
  """Random-access source of one split; settings are build()'s, and it builds if missing."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  return StrDataSource(build(data_dir, **settings).as_data_source(split))
