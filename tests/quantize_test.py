"""Int8 weights for decoding (model/quantize.py) against the float32 model they come from."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax.model import decode, quantize
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder


@functools.lru_cache(maxsize=None)  # shared by the tests: one init per config
def _model(**overrides):
  cfg = ModelConfig.from_preset("tiny", **overrides)
  model = EncoderDecoder(cfg)
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.integers(2, cfg.vocab_size, (4, 16)), jnp.int32)
  targets = jnp.asarray(rng.integers(2, cfg.vocab_size, (4, 8)), jnp.int32)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), inputs, targets)["params"])
  return model, params, inputs, targets


def test_kernel_round_trip_is_within_half_a_step_per_output_channel():
  kernel = jax.random.normal(jax.random.key(1), (8, 4, 16)) * jnp.arange(1, 17)
  values, scale = quantize.quantize_kernel(kernel, num_contract=2)
  assert values.dtype == jnp.int8 and scale.shape == (16,)
  np.testing.assert_allclose(scale, np.abs(kernel).max(axis=(0, 1)) / 127, rtol=1e-6)
  error = np.abs(np.asarray(values, np.float32) * scale - kernel)
  assert np.all(error <= scale / 2 + 1e-6)


def test_int8_dot_equals_the_integer_reference():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((3, 5, 8)).astype(np.float32)
  w = rng.standard_normal((8, 6)).astype(np.float32)
  values, scale = quantize.quantize_kernel(jnp.asarray(w), 1)
  got = quantize.int8_dot(jnp.asarray(x), values, scale, ((2,), (0,)), jnp.float32)
  x_scale = np.abs(x).max(-1, keepdims=True) / 127
  xq = np.clip(np.round(x / x_scale), -127, 127)
  want = (xq @ np.asarray(values, np.float64)) * x_scale * np.asarray(scale)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # A zero row stays zero (no division by a zero scale).
  zero = quantize.int8_dot(jnp.zeros((1, 8)), values, scale, ((1,), (0,)), jnp.float32)
  assert np.all(np.asarray(zero) == 0)


def test_one_row_gives_what_it_gives_among_others():
  """Batch-1 decoding takes the padded one-row path; its result is the row's own."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((3, 1, 8)), jnp.float32)
  values, scale = quantize.quantize_kernel(jnp.asarray(rng.standard_normal((8, 5))), 1)
  together = quantize.int8_dot(x, values, scale, ((2,), (0,)), jnp.float32)
  alone = quantize.int8_dot(x[1:2], values, scale, ((2,), (0,)), jnp.float32)
  assert alone.shape == (1, 1, 5)
  np.testing.assert_array_equal(alone[0], together[1])


@pytest.mark.parametrize("shape, num_contract", [((1, 8), 1), ((1, 1, 8), 1), ((1, 1, 4, 8), 2)])
def test_one_row_padded_or_not_gives_the_same_result(shape, num_contract):
  """The zero row that goes with a single one on XLA:CPU (pad_one_row) changes nothing."""
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal(shape[-num_contract:] + (5,)), jnp.float32)
  values, scale = quantize.quantize_kernel(kernel, num_contract)
  contract = (tuple(range(x.ndim - num_contract, x.ndim)), tuple(range(num_contract)))
  dot = lambda pad: quantize.int8_dot(x, values, scale, contract, jnp.float32, pad_one_row=pad)
  padded, plain = dot(True), dot(False)
  assert padded.shape == plain.shape == shape[:-num_contract] + (5,)
  np.testing.assert_array_equal(padded, plain)
  np.testing.assert_array_equal(dot(None), padded)  # the default, whichever the backend


@pytest.mark.parametrize("tie", [True, False])
def test_quantized_model_tracks_the_float_model(tie):
  model, params, inputs, targets = _model(tie_embeddings=tie)
  q = jax.jit(quantize.quantize)(params)
  int8 = [k for k, v in jax.tree_util.tree_leaves_with_path(q) if v.dtype == jnp.int8]
  # Every projection kernel and the embedding; norms stay float32.
  assert len(int8) == sum(1 for k, _ in jax.tree_util.tree_leaves_with_path(params)
                          if "kernel" in jax.tree_util.keystr(k) or "embedding']" in
                          jax.tree_util.keystr(k))
  assert quantize.is_quantized(q) and not quantize.is_quantized(params)
  forward = jax.jit(lambda p: model.apply({"params": p}, inputs, targets))
  full, small = forward(params), forward(q)
  assert small.dtype == jnp.float32
  # Logits of unit spread move by about 1.5% on average (0.11 at most) at this size.
  spread = float(jnp.std(full))
  assert float(jnp.max(jnp.abs(full - small))) < 0.25 * spread
  assert float(jnp.mean(jnp.abs(full - small))) < 0.03 * spread
  assert float(jnp.mean(full.argmax(-1) == small.argmax(-1))) >= 0.85


def test_cached_decoding_runs_on_int8_weights():
  model, params, inputs, _ = _model(tie_embeddings=True)
  settings = decode.Decoding(max_new_tokens=6)
  fn = decode.make_decode_fn(model, settings, eos_id=-1)
  full = np.asarray(fn(params, inputs, jax.random.key(0)))
  small = np.asarray(fn(jax.jit(quantize.quantize)(params), inputs, jax.random.key(0)))
  assert small.shape == full.shape == (4, 6)
  assert np.mean(small == full) >= 0.75
