"""Model behaviour: shapes, causality, packing isolation, overfitting, cached decoding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from refinedweb_jax.model import losses
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder, count_params
import reference

CFG = ModelConfig.from_preset("tiny")


def _tokens(key, shape, vocab=CFG.vocab_size):
  return jax.random.randint(jax.random.key(key), shape, 3, vocab)


@pytest.fixture(scope="module")
def model_and_params():
  model = EncoderDecoder(CFG)
  params = model.init(jax.random.key(0), _tokens(1, (2, 12)), _tokens(2, (2, 7)))["params"]
  return model, params


def test_output_shapes_and_logical_axes(model_and_params):
  model, params = model_and_params
  logits = model.apply({"params": params}, _tokens(1, (3, 12)), _tokens(2, (3, 7)))
  assert logits.shape == (3, 7, CFG.vocab_size) and logits.dtype == jnp.float32
  enc = model.apply({"params": params}, _tokens(1, (3, 12)), method="encode")
  assert enc.shape == (3, 12, CFG.d_model)
  # Every parameter carries logical axis names, one per dimension.
  boxed = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert boxed and all(isinstance(b, nn.Partitioned) and len(b.names) == b.value.ndim
                       for b in boxed)
  assert count_params(params) > 0


def test_decoder_is_causal(model_and_params):
  model, params = model_and_params
  inputs, targets = _tokens(1, (2, 12)), _tokens(2, (2, 9))
  base = model.apply({"params": params}, inputs, targets)
  for t in (0, 4, 8):
    changed = targets.at[:, t].set((targets[:, t] + 7) % CFG.vocab_size)
    out = model.apply({"params": params}, inputs, changed)
    np.testing.assert_allclose(out[:, :t], base[:, :t], atol=1e-6)
    assert not np.allclose(out[:, t:], base[:, t:], atol=1e-6)


def test_padding_does_not_change_outputs(model_and_params):
  model, params = model_and_params
  inputs, targets = _tokens(1, (1, 10)), _tokens(2, (1, 6))
  base = model.apply({"params": params}, inputs, targets)
  padded = jnp.pad(inputs, ((0, 0), (0, 5)))
  np.testing.assert_allclose(model.apply({"params": params}, padded, targets), base, atol=1e-5)


def test_packed_segments_never_attend_across(model_and_params):
  """Two examples packed in one row give exactly their unpacked outputs."""
  model, params = model_and_params
  a_in, a_tg = _tokens(3, (1, 5)), _tokens(4, (1, 4))
  b_in, b_tg = _tokens(5, (1, 6)), _tokens(6, (1, 3))
  shift = lambda t: jnp.pad(t[:, :-1], ((0, 0), (1, 0)))
  solo_a = model.apply({"params": params}, a_in, shift(a_tg))
  solo_b = model.apply({"params": params}, b_in, shift(b_tg))
  packed_in = jnp.concatenate([a_in, b_in, jnp.zeros((1, 2), jnp.int32)], 1)
  packed_dec = jnp.concatenate([shift(a_tg), shift(b_tg), jnp.zeros((1, 1), jnp.int32)], 1)
  in_seg = jnp.array([[1] * 5 + [2] * 6 + [0] * 2])
  in_pos = jnp.array([list(range(5)) + list(range(6)) + [0, 0]])
  dec_seg = jnp.array([[1] * 4 + [2] * 3 + [0]])
  dec_pos = jnp.array([list(range(4)) + list(range(3)) + [0]])
  packed = model.apply({"params": params}, packed_in, packed_dec, in_seg, dec_seg, in_pos, dec_pos)
  np.testing.assert_allclose(packed[:, :4], solo_a, atol=1e-5)
  np.testing.assert_allclose(packed[:, 4:7], solo_b, atol=1e-5)


def test_tiny_model_overfits_one_batch():
  model = EncoderDecoder(CFG)
  inputs, targets = _tokens(7, (4, 10)), _tokens(8, (4, 6))
  decoder_inputs = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))
  params = model.init(jax.random.key(0), inputs, decoder_inputs)["params"]
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      logits = model.apply({"params": p}, inputs, decoder_inputs)
      return jnp.mean(losses.cross_entropy(logits, targets)[0])
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  first = None
  for _ in range(150):
    params, opt_state, loss = step(params, opt_state)
    first = loss if first is None else first
  assert first > 5.0 and loss < 0.05, (first, loss)


def test_cached_greedy_equals_full_forward_greedy(model_and_params):
  model, params = model_and_params
  # Sharpen the random model so greedy outputs vary from step to step.
  params = jax.tree.map(lambda x: x * 3.0, params)
  inputs = _tokens(9, (3, 12)).at[1, 7:].set(0)
  cached = reference.greedy(model, params, inputs, max_length=10, eos_id=1)
  full = reference.full_forward_greedy(model, params, inputs, max_length=10, eos_id=1)
  np.testing.assert_array_equal(np.asarray(cached), np.asarray(full))
  assert len(np.unique(np.asarray(cached))) > 3


def test_bfloat16_compute_keeps_float32_params():
  cfg = ModelConfig.from_preset("tiny", dtype="bfloat16")
  model = EncoderDecoder(cfg)
  params = model.init(jax.random.key(0), _tokens(1, (2, 8)), _tokens(2, (2, 4)))["params"]
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.meta.unbox(params)))
  logits = model.apply({"params": params}, _tokens(1, (2, 8)), _tokens(2, (2, 4)))
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("bad, message", [
    (dict(preset="huge"), "unknown model preset 'huge'"),
    (dict(preset="tiny", encoder_attention="sparse9"), "unknown attention kind 'sparse9'"),
    (dict(preset="tiny", dtype="int8"), "unknown model.dtype 'int8'"),
    (dict(preset="tiny", d_model=0), "model.d_model must be > 0"),
])
def test_bad_model_config_names_the_value(bad, message):
  preset = bad.pop("preset")
  with pytest.raises(ValueError, match=message):
    ModelConfig.from_preset(preset, **bad)
