"""Sparse attention inside the model: dense equivalence, cached decoding, config errors."""

import jax
import numpy as np
import pytest

from refinedweb_jax.model import decode
from refinedweb_jax.model.transformer import EncoderDecoder, ModelConfig

jax.config.update("jax_default_matmul_precision", "highest")


def _tokens(key, shape):
  return jax.random.randint(jax.random.key(key), shape, 3, 512)


def test_full_window_local_model_equals_dense_model():
  dense = EncoderDecoder(ModelConfig.from_preset("tiny"))
  local = EncoderDecoder(ModelConfig.from_preset(
      "tiny", encoder_attention="local", decoder_attention="local", attention_window=64,
      attention_block_size=8))
  inputs = _tokens(1, (2, 30)).at[0, 25:].set(0)
  targets = _tokens(2, (2, 13))
  params = dense.init(jax.random.key(0), inputs, targets)["params"]
  np.testing.assert_allclose(local.apply({"params": params}, inputs, targets),
                             dense.apply({"params": params}, inputs, targets), atol=1e-5)


@pytest.mark.parametrize("kind", ["local", "bigbird", "strided", "global_local"])
def test_sparse_decoder_cached_decoding_equals_full_forward(kind):
  cfg = ModelConfig.from_preset("tiny", decoder_attention=kind, encoder_attention=kind,
                                attention_window=3, attention_block_size=2, attention_stride=4,
                                attention_summary=1, attention_random_blocks=1,
                                attention_global_positions="0,5", decoder_dense_every=2)
  model = EncoderDecoder(cfg)
  inputs = _tokens(3, (2, 12))
  params = model.init(jax.random.key(0), inputs, inputs[:, :8])["params"]
  params = jax.tree.map(lambda x: x * 3.0, params)  # sharper, so tokens vary step to step
  cached = decode.make_greedy_fn(model, max_length=12, eos_id=1)(params, inputs)
  full = decode.full_forward_greedy(model, params, inputs, max_length=12, eos_id=1)
  np.testing.assert_array_equal(np.asarray(cached), np.asarray(full))


def test_dense_every_makes_chosen_layers_dense():
  cfg = ModelConfig.from_preset("tiny", encoder_attention="bigbird", encoder_dense_every=2)
  assert [cfg.attention_kind("encoder", i) for i in range(4)] == ["bigbird", "dense"] * 2
  assert cfg.attention_spec("encoder", 0).seed != cfg.attention_spec("encoder", 2).seed


@pytest.mark.parametrize("overrides, message", [
    (dict(encoder_attention="sparse"), "unknown attention kind 'sparse'"),
    (dict(encoder_attention="local", attention_window=0), "attention window must be > 0, got 0"),
    (dict(decoder_attention="strided", attention_stride=96, attention_block_size=64),
     "stride 96 must be a multiple of the block size 64"),
    (dict(encoder_attention="global_local", attention_global_positions="0-x"),
     "bad model.attention_global_positions '0-x'"),
    (dict(encoder_attention="bigbird", attention_window_blocks=4), "must be odd"),
    (dict(encoder_dense_every=-1), "model.encoder_dense_every must be >= 0"),
])
def test_bad_sparse_config_names_the_value(overrides, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig.from_preset("tiny", **overrides)
