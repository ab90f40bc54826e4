"""Built-in TFDS dataset: build, read back through TFDS and Grain, determinism."""

import os

import grain
import pytest

from refinedweb_jax.data import corpus, tasks
from refinedweb_jax.data.datasets import builtin

SIZES = dict(num_train=200, num_validation=50, num_test=50, seed=3)
LENGTHS = {"train": 200, "validation": 50, "test": 50}


def _records(data_dir, split, **settings):
  source = builtin.data_source(str(data_dir), split, **settings)
  return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  return data_dir, builtin.build(str(data_dir), **SIZES)


def test_splits_have_requested_lengths_and_str_fields(built):
  data_dir, builder = built
  assert builder.info.file_format.value == "array_record"
  for split, n in LENGTHS.items():
    records = _records(data_dir, split, **SIZES)
    assert len(records) == n
    for r in records:
      assert type(r) is dict and sorted(r) == sorted(builtin.FIELDS)
      assert all(type(v) is str for v in r.values()), r
      assert r["task"] in tasks.BUILTIN
    assert len({r["id"] for r in records}) == n


def test_records_match_corpus_in_order(built):
  data_dir, _ = built
  expected = list(corpus.generate_split("validation", 50, seed=3, long_fraction=0.05))
  got = _records(data_dir, "validation", **SIZES)
  assert got == [{f: e[f] for f in builtin.FIELDS} for e in expected]
  assert list(builtin.data_source(str(data_dir), "validation", **SIZES)) == got


def test_grain_map_dataset(built):
  data_dir, _ = built
  source = builtin.data_source(str(data_dir), "train", **SIZES)
  ds = grain.MapDataset.source(source)
  assert len(ds) == 200
  assert ds[7] == source[7]
  ids = list(ds.shuffle(seed=0).map(lambda r: r["id"]))
  assert sorted(ids) == sorted(source[i]["id"] for i in range(200))
  batch = next(iter(ds.batch(4, batch_fn=list)))
  assert [type(r["inputs"]) for r in batch] == [str] * 4


def test_second_build_reuses_data(built):
  data_dir, builder = built
  files = {p: os.stat(p).st_mtime_ns for p in builder.data_path.glob("*")}
  again = builtin.build(str(data_dir), **SIZES)
  assert again.data_dir == builder.data_dir
  assert {p: os.stat(p).st_mtime_ns for p in again.data_path.glob("*")} == files


def test_same_seed_same_data_other_settings_side_by_side(built, tmp_path):
  data_dir, builder = built
  for split in LENGTHS:
    assert _records(tmp_path, split, **SIZES) == _records(data_dir, split, **SIZES)
  other = dict(SIZES, num_train=20, seed=4)
  other_builder = builtin.build(str(data_dir), **other)
  assert other_builder.data_dir != builder.data_dir
  assert len(builtin.data_source(str(data_dir), "train", **other)) == 20
  assert _records(data_dir, "test", **other) != _records(data_dir, "test", **SIZES)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="num_train"):
    builtin.make_config(num_train=0, num_validation=1, num_test=1)
  with pytest.raises(ValueError, match="long_fraction"):
    builtin.make_config(num_train=1, num_validation=1, num_test=1, long_fraction=1.5)
  with pytest.raises(ValueError, match="'dev'"):
    builtin.data_source("/nonexistent", "dev", **SIZES)
