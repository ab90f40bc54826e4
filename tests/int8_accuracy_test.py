"""benchmarks/int8_accuracy.py: its teacher-forced half compares int8 with float32 logits."""

import importlib.util
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from refinedweb_jax import api
from refinedweb_jax.data import corpus
from refinedweb_jax.model import quantize
from refinedweb_jax.train import resume, setup
from conftest import tiny_config

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "int8_accuracy.py"


def _script():
  spec = importlib.util.spec_from_file_location("int8_accuracy", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_teacher_forced_logits_of_int8_differ_from_float32(tiny_data_dir, tmp_path):
  """A tiny model at its random initialisation, whose logits int8 weights move: the script
  reports that movement (not 0.000, as when it ran the float32 parameters on both sides)."""
  config = resume.settle(None, base=tiny_config(tiny_data_dir)).config
  run = setup.build(config)
  d = config.data
  inputs = jnp.ones((2, d.input_length), jnp.int32)
  targets = jnp.ones((2, d.target_length), jnp.int32)
  params = nn.meta.unbox(jax.jit(run.model.init)(jax.random.key(0), inputs, targets)["params"])
  trained = setup.Trained(run, params, 0, str(tmp_path))
  full, int8 = api.RefinedWeb(trained), api.RefinedWeb(trained, weights="int8")
  assert quantize.is_quantized(int8.decode_params)
  examples = list(corpus.generate_split("validation", 8, d.corpus_seed,
                                        long_fraction=d.long_fraction))
  worst, mean, count, agree = _script().teacher_forced(full, int8, examples, batch_size=4)
  assert count > 0 and worst > 0 and mean > 0
  assert 0 < mean <= worst and 0.5 <= agree <= 1
  # float32 against float32 (decoding parameters are float32 on CPU): nothing moves.
  same = _script().teacher_forced(full, full, examples, batch_size=4)
  assert same[0] == 0 and same[3] == 1 and same[2] == count
