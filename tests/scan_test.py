"""Scanned layer stacks (model/scan.py) against unrolled ones: outputs, gradients, decoding,
the parameter layouts, and a program whose size does not grow with depth."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax import sharding
from refinedweb_jax.model import decode, quantize, scan
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder, flat_params
from refinedweb_jax.train import step as step_lib

jax.config.update("jax_default_matmul_precision", "highest")

SIZES = dict(window=3, block_size=2, stride=4, summary=1, random_blocks=1, global_blocks=1,
             global_positions="0,5")
# Small models that together hold every kind: name -> (encoder kind, layers, dense_every,
# decoder kind, layers, dense_every, sizes, position). Uniform stacks of 2 scan one layer
# twice (a traced layer index: BigBird's per-layer seeds); strided_groups's encoder is a
# cycle (strided, dense) and a shorter last group (strided).
CASES = {
    "bigbird_local": ("bigbird", 2, 0, "local", 2, 0, SIZES, "rope"),
    "globallocal_strided": ("global_local", 2, 0, "strided", 2, 0,
                            dict(SIZES, variant="strided"), "t5_bias"),
    "strided_groups": ("strided", 3, 2, "dense", 1, 0, SIZES, "rope"),
    "dense_t5": ("dense", 2, 0, "dense", 2, 0, SIZES, "t5_bias"),
    "bigbird_decoder": ("dense", 1, 0, "bigbird", 3, 2, SIZES, "rope"),
}


def _configs(case, **extra):
  enc, enc_layers, enc_every, dec, dec_layers, dec_every, sizes, position = CASES[case]
  fields = dict(encoder_attention=enc, decoder_attention=dec, encoder_dense_every=enc_every,
                decoder_dense_every=dec_every, num_encoder_layers=enc_layers,
                num_decoder_layers=dec_layers, attention=sizes, position=position, **extra)
  if position == "t5_bias":
    fields.update(relative_attention_num_buckets=8, relative_attention_max_distance=16,
                  scale_attention=False)
  return (ModelConfig.from_preset("tiny", scan_layers=True, **fields),
          ModelConfig.from_preset("tiny", scan_layers=False, **fields))


def _tokens(key, shape):
  return jax.random.randint(jax.random.key(key), shape, 3, 512)


def _random_params(model, inputs, targets, scale=0.3):
  """Parameters of the model's shapes, drawn with NumPy (no init program to compile)."""
  shapes = jax.eval_shape(lambda: nn.meta.unbox(
      model.init(jax.random.key(0), inputs, targets)["params"]))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(1.0 + scale * rng.standard_normal(s.shape), s.dtype)
                      if len(s.shape) == 1 or s.shape[-1] == 1 else
                      jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def _nest(flat: dict) -> dict:
  out = {}
  for path, value in flat.items():
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return out


def _scanned_params(unrolled_params, cfg):
  return _nest(scan.to_scanned(flat_params(unrolled_params), cfg))


@pytest.mark.parametrize("case", ["bigbird_local", "globallocal_strided", "strided_groups"])
def test_scanned_stack_equals_unrolled_outputs_and_gradients(case):
  scanned_cfg, unrolled_cfg = _configs(case)
  scanned, unrolled = EncoderDecoder(scanned_cfg), EncoderDecoder(unrolled_cfg)
  inputs = _tokens(1, (2, 16)).at[1, 11:].set(0)
  targets = _tokens(2, (2, 12))
  params = _random_params(unrolled, inputs, targets)
  params_s = _scanned_params(params, scanned_cfg)
  assert set(flat_params(params_s)) == set(flat_params(_random_params(scanned, inputs, targets)))

  def loss(model, p):
    logits = model.apply({"params": p}, inputs, targets)
    return jnp.sum(jax.nn.log_softmax(logits)[..., 5] * jnp.arange(12.0)), logits

  (value_u, logits_u), grads_u = jax.jit(jax.value_and_grad(
      lambda p: loss(unrolled, p), has_aux=True))(params)
  (value_s, logits_s), grads_s = jax.jit(jax.value_and_grad(
      lambda p: loss(scanned, p), has_aux=True))(params_s)
  np.testing.assert_allclose(logits_s, logits_u, atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(value_s, value_u, rtol=1e-5)
  back = scan.to_unrolled(flat_params(grads_s), scanned_cfg)
  for path, g in flat_params(grads_u).items():
    # Sums over the batch run in another order inside a scan: relative to the largest entry.
    scale = max(1.0, float(np.max(np.abs(g))))
    np.testing.assert_allclose(back[path], g, atol=5e-5 * scale, err_msg=str(path))


@pytest.mark.parametrize("case", ["dense_t5", "bigbird_decoder"])
def test_scanned_stack_decodes_like_the_unrolled_one(case):
  scanned_cfg, unrolled_cfg = _configs(case)
  scanned, unrolled = EncoderDecoder(scanned_cfg), EncoderDecoder(unrolled_cfg)
  inputs = _tokens(3, (2, 12))
  params = _random_params(unrolled, inputs, inputs[:, :8], scale=1.0)  # tokens vary by step
  params_s = _scanned_params(params, scanned_cfg)
  methods = [decode.Decoding(max_new_tokens=10), decode.Decoding(max_new_tokens=10, beam_size=3)]
  trees = [(params, params_s)]
  if case == "dense_t5":  # int8 weights: each scanned layer quantized on its own
    trees.append((quantize.quantize(params), quantize.quantize(params_s)))
    assert trees[1][1]["encoder_group_0"]["layer_0"]["mlp"]["wo"]["kernel_scale"].shape == (2, 32)
  for method in methods:
    for tree_u, tree_s in trees[:1 if method.beam_size > 1 else None]:
      out_u = decode.make_decode_fn(unrolled, method, eos_id=1)(tree_u, inputs,
                                                                jax.random.key(0))
      out_s = decode.make_decode_fn(scanned, method, eos_id=1)(tree_s, inputs,
                                                               jax.random.key(0))
      np.testing.assert_array_equal(np.asarray(out_s), np.asarray(out_u))


def test_groups_follow_the_dense_layers_and_layouts_round_trip():
  cfg = ModelConfig.from_preset("tiny", encoder_attention="local", encoder_dense_every=3,
                                num_encoder_layers=7, attention=dict(window=3, block_size=2))
  assert scan.groups(cfg, "encoder") == (
      scan.Group(("local", "local", "dense"), 2, 0), scan.Group(("local",), 1, 6))
  assert scan.groups(cfg, "decoder") == (scan.Group(("dense",), 2, 0),)
  unrolled = EncoderDecoder(ModelConfig.from_preset(
      "tiny", encoder_attention="local", encoder_dense_every=3, num_encoder_layers=7,
      attention=dict(window=3, block_size=2), scan_layers=False))
  params = flat_params(_random_params(unrolled, jnp.ones((1, 8), jnp.int32),
                                     jnp.ones((1, 4), jnp.int32)))
  stacked = scan.to_scanned(params, cfg)
  assert stacked[("encoder_group_0", "layer_2", "mlp", "wo", "kernel")].shape == (2, 64, 32)
  np.testing.assert_array_equal(stacked[("encoder_group_0", "layer_1", "mlp", "wo", "kernel")][1],
                                params[("encoder_4", "mlp", "wo", "kernel")])
  back = scan.to_unrolled(stacked, cfg)
  assert set(back) == set(params)
  for path, value in params.items():
    np.testing.assert_array_equal(back[path], value)
  assert scan.is_scanned(stacked) and not scan.is_scanned(params)


def test_scanned_parameters_carry_the_layers_axis_and_shard_as_the_rules_say():
  cfg = ModelConfig.from_preset("tiny")
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  abstract = step_lib.abstract_params(EncoderDecoder(cfg), mesh, input_length=8,
                                      target_length=4)
  boxed = jax.eval_shape(lambda: EncoderDecoder(cfg).init(
      jax.random.key(0), jnp.ones((1, 8), jnp.int32), jnp.ones((1, 4), jnp.int32)))["params"]
  names = boxed["encoder_group_0"]["layer_0"]["mlp"]["wi"]["kernel"].names
  assert names == ("layers", "embed", None, "mlp")  # the gated MLP's two inputs, fused
  kernel = nn.meta.unbox(abstract)["encoder_group_0"]["layer_0"]["mlp"]["wi"]["kernel"]
  assert kernel.shape == (2, 32, 2, 64)
  # layers whole, as the rules say; the fused axis whole too
  assert tuple(kernel.sharding.spec) == (None, "fsdp", None, "tensor")


def _dots(cfg) -> int:
  model = EncoderDecoder(cfg)
  x, y = jnp.ones((2, 16), jnp.int32), jnp.ones((2, 8), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, y))["params"]
  grad = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x, y))))
  return grad.lower(params).as_text().count("dot_general")


def test_the_program_does_not_grow_with_depth_when_scanned():
  shallow = ModelConfig.from_preset("tiny", num_encoder_layers=2, num_decoder_layers=2)
  deep = ModelConfig.from_preset("tiny", num_encoder_layers=12, num_decoder_layers=12)
  assert _dots(deep) == _dots(shallow)
  unrolled = lambda cfg: ModelConfig.from_preset(
      "tiny", num_encoder_layers=cfg.num_encoder_layers,
      num_decoder_layers=cfg.num_decoder_layers, scan_layers=False)
  assert _dots(unrolled(deep)) > 3 * _dots(unrolled(shallow))
