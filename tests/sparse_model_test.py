"""Sparse attention inside the model: dense equivalence, cached decoding, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax.model.attention import kinds
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder
import reference

jax.config.update("jax_default_matmul_precision", "highest")


def _tokens(key, shape):
  return jax.random.randint(jax.random.key(key), shape, 3, 512)


def test_full_window_local_model_equals_dense_model():
  dense = EncoderDecoder(ModelConfig.from_preset("tiny"))
  local = EncoderDecoder(ModelConfig.from_preset(
      "tiny", encoder_attention="local", decoder_attention="local",
      attention=dict(window=64, block_size=8)))
  inputs = _tokens(1, (2, 30)).at[0, 25:].set(0)
  targets = _tokens(2, (2, 13))
  params = dense.init(jax.random.key(0), inputs, targets)["params"]
  np.testing.assert_allclose(local.apply({"params": params}, inputs, targets),
                             dense.apply({"params": params}, inputs, targets), atol=1e-5)


@pytest.mark.parametrize("kind", ["local", "bigbird", "strided", "global_local"])
def test_sparse_decoder_cached_decoding_equals_full_forward(kind):
  cfg = ModelConfig.from_preset("tiny", decoder_attention=kind, encoder_attention=kind,
                                attention=dict(window=3, block_size=2, stride=4, summary=1,
                                               random_blocks=1, global_positions="0,5"),
                                decoder_dense_every=2)
  model = EncoderDecoder(cfg)
  inputs = _tokens(3, (2, 12))
  params = model.init(jax.random.key(0), inputs, inputs[:, :8])["params"]
  params = jax.tree.map(lambda x: x * 3.0, params)  # sharper, so tokens vary step to step
  cached = reference.greedy(model, params, inputs, max_length=12, eos_id=1)
  full = reference.full_forward_greedy(model, params, inputs, max_length=12, eos_id=1)
  np.testing.assert_array_equal(np.asarray(cached), np.asarray(full))


def test_dense_every_makes_chosen_layers_dense():
  cfg = ModelConfig.from_preset("tiny", encoder_attention="bigbird", encoder_dense_every=2)
  assert [cfg.attention_kind("encoder", i) for i in range(4)] == ["bigbird", "dense"] * 2
  # BigBird's random blocks differ per layer (seed + layer index).
  assert (kinds.pattern("bigbird", cfg.attention, 1024, layer=0)
          != kinds.pattern("bigbird", cfg.attention, 1024, layer=2)).any()


@pytest.mark.parametrize("overrides, message", [
    (dict(encoder_attention="sparse"), "unknown attention kind 'sparse'"),
    (dict(encoder_attention="local", attention=dict(window=0)),
     "model.attention.window must be >= 1, got 0"),
    (dict(decoder_attention="strided", attention=dict(stride=96, block_size=64)),
     "model.attention.stride=96 must be a multiple of model.attention.block_size=64"),
    (dict(encoder_attention="global_local", attention=dict(global_positions="0-x")),
     "bad model.attention.global_positions '0-x'"),
    (dict(encoder_attention="bigbird", attention=dict(window_blocks=4)), "must be odd"),
    (dict(attention=dict(windw=4)), "unknown model.attention key"),
    (dict(encoder_dense_every=-1), "model.encoder_dense_every must be >= 0"),
])
def test_bad_sparse_config_names_the_value(overrides, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig.from_preset("tiny", **overrides)


# Sizes that make a packed example's pattern differ from one built on row positions.
PACKED_KINDS = {
    "local": ("local", dict(window=5)),
    "strided_fixed": ("strided", dict(stride=8, summary=2)),
    "strided_strided": ("strided", dict(stride=8, variant="strided")),
    "bigbird": ("bigbird", dict(global_blocks=1, window_blocks=3, random_blocks=2)),
    "global_local": ("global_local", dict(window=3, global_positions="0,5")),
}


def _pack(examples, block, length):
  """Examples (1-D token arrays) packed into one row, each starting on a block boundary."""
  tokens, segments, positions = (np.zeros((1, length), np.int32) for _ in range(3))
  offsets, at = [], 0
  for number, ex in enumerate(examples, start=1):
    offsets.append(at)
    tokens[0, at: at + len(ex)] = ex
    segments[0, at: at + len(ex)] = number
    positions[0, at: at + len(ex)] = np.arange(len(ex))
    at += -(-len(ex) // block) * block
  assert at <= length
  return tokens, segments, positions, offsets


def _alone(examples, length):
  """The same examples unpacked: one per row, padded to `length`, with their segment ids."""
  tokens = np.zeros((len(examples), length), np.int32)
  for row, ex in enumerate(examples):
    tokens[row, : len(ex)] = ex
  return tokens, (tokens != 0).astype(np.int32)


def _max_scaled_difference(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


@pytest.mark.parametrize("name", sorted(PACKED_KINDS))
def test_packed_examples_equal_their_unpacked_outputs_and_gradients(name):
  kind, sizes = PACKED_KINDS[name]
  # One layer per stack: the property is per layer, and compiling stays short.
  cfg = ModelConfig.from_preset("tiny", encoder_attention=kind, decoder_attention=kind,
                                num_encoder_layers=1, num_decoder_layers=1,
                                attention=dict(block_size=4, **sizes))
  model = EncoderDecoder(cfg)
  rng = np.random.default_rng(0)
  # Two packed rows; lengths that are not multiples of the block, the long one last and first.
  layouts = (([13, 6, 9], [5, 7, 4]), ([6, 9, 13], [7, 4, 5]))
  inputs = [[rng.integers(3, 512, n).astype(np.int32) for n in lengths] for lengths, _ in layouts]
  targets = [[rng.integers(3, 512, n).astype(np.int32) for n in lengths] for _, lengths in layouts]
  packed_enc = [_pack(row, 4, 36) for row in inputs]
  packed_dec = [_pack(row, 4, 24) for row in targets]
  enc, enc_seg, enc_pos = (np.concatenate([p[i] for p in packed_enc]) for i in range(3))
  dec, dec_seg, dec_pos = (np.concatenate([p[i] for p in packed_dec]) for i in range(3))
  flat_inputs, flat_targets = sum(inputs, []), sum(targets, [])
  alone_enc, alone_enc_seg = _alone(flat_inputs, 16)
  alone_dec, alone_dec_seg = _alone(flat_targets, 8)
  params = model.init(jax.random.key(0), enc, dec)["params"]
  cotangents = [rng.normal(size=(len(t), cfg.vocab_size)).astype(np.float32)
                for t in flat_targets]

  def packed_loss(p):
    logits = model.apply({"params": p}, enc, dec, enc_seg, dec_seg, enc_pos, dec_pos)
    outs = [logits[row, at: at + len(t)] for row, (_, _, _, offsets) in enumerate(packed_dec)
            for at, t in zip(offsets, targets[row])]
    return sum(jnp.sum(o * c) for o, c in zip(outs, cotangents)), outs

  def alone_loss(p):
    logits = model.apply({"params": p}, alone_enc, alone_dec, alone_enc_seg, alone_dec_seg)
    outs = [logits[row, : len(t)] for row, t in enumerate(flat_targets)]
    return sum(jnp.sum(o * c) for o, c in zip(outs, cotangents)), outs

  (_, packed), packed_grads = jax.jit(jax.value_and_grad(packed_loss, has_aux=True))(params)
  (_, alone), alone_grads = jax.jit(jax.value_and_grad(alone_loss, has_aux=True))(params)
  for p, a in zip(packed, alone):
    np.testing.assert_allclose(np.asarray(p), np.asarray(a), atol=1e-5)
  # Gradients sum over every token: float32 rounding grows with their size.
  for p, a in zip(jax.tree.leaves(packed_grads), jax.tree.leaves(alone_grads)):
    assert _max_scaled_difference(p, a) <= 1e-5
