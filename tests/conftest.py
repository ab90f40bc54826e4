"""Shared fixtures: a tiny built-in corpus and a tiny training config; the marker of tests
that read the public datasets (skipped, with the reason, where they are absent)."""

import os

import pytest

from refinedweb_jax import configs
from refinedweb_jax.data import fetch

PUBLIC_DATA = "public_data"


def pytest_configure(config):
  config.addinivalue_line(
      "markers", f"{PUBLIC_DATA}(*names): reads these public datasets (all of them when none "
      "is named) from the public data folder (refinedweb_jax/data/fetch.py data_root: "
      "$REFINEDWEB_SHARED_DATA, ../shared/data, ~/.cache/refinedweb_jax/public); skipped "
      "where one is missing")


def missing_public_data(names=()) -> str | None:
  """Why the public datasets `names` (all when empty) cannot be read, or None."""
  for name in names or fetch.NAMES:
    try:
      fetch.require(name)
    except fetch.FetchError as e:
      return str(e)
  return None


def pytest_collection_modifyitems(config, items):
  for item in items:
    marks = list(item.iter_markers(PUBLIC_DATA))
    if marks:
      reason = missing_public_data(tuple(n for m in marks for n in m.args))
      if reason:
        item.add_marker(pytest.mark.skip(reason=reason))


def tiny_config(data_dir: str):
  """A config small enough for a few train steps in seconds on 2 CPU cores."""
  c = configs.default_config()
  c.model.preset = "tiny"
  c.data.update(dict(data_dir=data_dir, num_train=400, num_validation=40, num_test=20,
                     vocab_size=600, input_length=64, target_length=32, batch_size=8))
  c.optimizer.warmup_steps = 2
  c.train.update(dict(num_steps=6, log_every=2, eval_every=3, checkpoint_every=3,
                      eval_examples=16, eval_batch_size=8, decode_examples_per_task=2,
                      max_decode_length=8, progress_bar=False, async_checkpointing=False))
  return c


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A built-in corpus + tokenizer prepared once per test session."""
  from refinedweb_jax.data import tokenizer
  data_dir = str(tmp_path_factory.mktemp("data"))
  d = tiny_config(data_dir).data
  tokenizer.prepare_builtin(data_dir, num_train=d.num_train, num_validation=d.num_validation,
                            num_test=d.num_test, seed=d.corpus_seed,
                            long_fraction=d.long_fraction, vocab_size=d.vocab_size)
  return data_dir


@pytest.fixture(scope="session")
def env(tmp_path_factory):
  """Environment for tests that run the CLI in subprocesses: one XLA compilation cache
  for all of them, so each tiny model compiles once per session."""
  cache = str(tmp_path_factory.mktemp("xla_cache"))
  return dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PLATFORMS="cpu",
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONUNBUFFERED="1")
