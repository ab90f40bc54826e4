"""Fused projections (q/k/v, the gated MLP's inputs), old checkpoints, the fused loss, RMSNorm."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from refinedweb_jax.model import fused, losses
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.layers import MLP, Projection, RMSNorm
from refinedweb_jax.model.transformer import EncoderDecoder, flat_params
from refinedweb_jax.train import losses as train_losses

CFG = dict(vocab_size=96, d_model=32, num_heads=4, head_dim=8, d_ff=48, num_encoder_layers=2,
           num_decoder_layers=2)


def _batch(seed=0, b=2, s=12, t=8, vocab=96):
  rng = np.random.default_rng(seed)
  tokens = lambda n: jnp.asarray(rng.integers(2, vocab, (b, n)), jnp.int32)
  targets = tokens(t)
  return {"encoder_input_tokens": tokens(s), "decoder_input_tokens": jnp.pad(
              targets[:, :-1], ((0, 0), (1, 0))), "decoder_target_tokens": targets,
          "encoder_segment_ids": jnp.ones((b, s), jnp.int32),
          "decoder_segment_ids": jnp.ones((b, t), jnp.int32),
          "encoder_positions": jnp.broadcast_to(jnp.arange(s), (b, s)),
          "decoder_positions": jnp.broadcast_to(jnp.arange(t), (b, t)),
          "decoder_loss_weights": jnp.ones((b, t), jnp.float32)}


def _init(cfg, batch):
  model = EncoderDecoder(cfg)
  params = model.init(jax.random.key(0), batch["encoder_input_tokens"],
                      batch["decoder_input_tokens"])["params"]
  return model, jax.tree.map(np.asarray, nn.meta.unbox(params))


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("parts,names", [(3, ("embed", None, "heads", "kv")),
                                         (2, ("embed", None, "heads", "kv"))])
def test_one_stacked_projection_equals_separate_ones_with_gradients(parts, names):
  x = jax.random.normal(jax.random.key(1), (2, 5, 16))
  stacked = Projection((parts, 4, 8), 1, names)
  kernel = stacked.init(jax.random.key(2), x)["params"]["kernel"].value
  one = Projection((4, 8), 1, ("embed", "heads", "kv"))

  def fused_out(kernel, x):
    return stacked.apply({"params": {"kernel": kernel}}, x)

  def separate_out(kernel, x):
    return jnp.stack([one.apply({"params": {"kernel": kernel[:, i]}}, x)
                      for i in range(parts)], axis=2)

  np.testing.assert_allclose(fused_out(kernel, x), separate_out(kernel, x), atol=1e-6)
  loss = lambda f: lambda k, x: jnp.sum(jnp.sin(f(k, x)))
  for a, b in zip(jax.grad(loss(fused_out), (0, 1))(kernel, x),
                  jax.grad(loss(separate_out), (0, 1))(kernel, x)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_gated_mlp_is_one_matmul_equal_to_its_two_projections():
  cfg = ModelConfig(**CFG, activation="gelu")
  x = jax.random.normal(jax.random.key(1), (2, 5, 32))
  mlp = MLP(cfg)
  params = mlp.init(jax.random.key(0), x, True)["params"]
  wi = params["wi"]["kernel"].value
  assert wi.shape == (32, 2, 48) and params["wi"]["kernel"].names == ("embed", None, "mlp")
  wo = params["wo"]["kernel"].value

  def fused_out(wi, x):
    return mlp.apply({"params": {"wi": {"kernel": wi}, "wo": {"kernel": wo}}}, x, True)

  def separate_out(wi, x):
    return (jax.nn.gelu(x @ wi[:, 0]) * (x @ wi[:, 1])) @ wo

  np.testing.assert_allclose(fused_out(wi, x), separate_out(wi, x), atol=1e-5)
  loss = lambda f: lambda w, x: jnp.sum(f(w, x) ** 2)
  for a, b in zip(jax.grad(loss(fused_out), (0, 1))(wi, x),
                  jax.grad(loss(separate_out), (0, 1))(wi, x)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_old_layout_params_fuse_to_the_same_model(scan_layers):
  cfg = ModelConfig(**CFG, scan_layers=scan_layers, position="t5_bias")
  batch = _batch()
  model, params = _init(cfg, batch)
  old = fused.split(params)
  flat_old, flat_new = flat_params(old), flat_params(params)
  assert fused.is_old(flat_old) and not fused.is_old(flat_new)
  attention = "encoder_group_0" if scan_layers else "encoder_0"
  layer = old[attention]["layer_0"] if scan_layers else old[attention]
  assert set(layer["attention"]) == {"query", "key", "value", "out"}
  assert set(layer["mlp"]) == {"wi_0", "wi_1", "wo"}
  back = fused.fuse(old)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  assert _max_diff(back, params) == 0.0
  logits = lambda p: model.apply({"params": p}, batch["encoder_input_tokens"],
                                 batch["decoder_input_tokens"])
  np.testing.assert_array_equal(logits(back), logits(params))


def test_a_checkpoint_in_the_old_layout_restores_fused_onto_the_shardings(tmp_path):
  cfg = ModelConfig(**CFG, scan_layers=True)
  batch = _batch()
  _, params = _init(cfg, batch)
  path = tmp_path / "old"
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, fused.split(params))
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("fsdp",))
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=spec),
                          params)

  def restore(a):
    with ocp.StandardCheckpointer() as ckptr:
      return ckptr.restore(path, a)

  with pytest.raises(Exception):
    restore(abstract)  # the fused layout alone does not read it
  restored = fused.restore_either(restore, abstract)
  assert jax.tree.structure(restored) == jax.tree.structure(params)
  assert _max_diff(restored, params) == 0.0
  assert all(x.sharding == spec for x in jax.tree.leaves(restored))


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-5), (jnp.bfloat16, 2e-2)])
def test_chunked_loss_equals_full_logits_loss_and_gradients(dtype, tol):
  rng = np.random.default_rng(0)
  n, d, v = 37, 16, 50  # 37 tokens in chunks of 8: a padded last chunk
  y = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(v, d)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, v, n), jnp.int32)
  kw = dict(label_smoothing=0.1, z_loss=1e-3)

  def full(y, w):
    logits = jax.lax.dot_general(y.astype(dtype), w.astype(dtype), (((1,), (1,)), ((), ())),
                                 preferred_element_type=jnp.float32) * 0.3
    loss, z = losses.cross_entropy(logits, targets, **kw)
    return jnp.sum(loss + z), (loss, z, losses.correct(logits, targets))

  def chunked(y, w):
    loss, z, hit = losses.projected_cross_entropy(y, w, targets, scale=0.3, dtype=dtype,
                                                  chunk=8, **kw)
    return jnp.sum(loss + z), (loss, z, hit)

  (a, aux_a), grads_a = jax.value_and_grad(full, (0, 1), has_aux=True)(y, w)
  (b, aux_b), grads_b = jax.value_and_grad(chunked, (0, 1), has_aux=True)(y, w)
  np.testing.assert_allclose(b, a, rtol=1e-6)
  for x, z in zip(aux_a, aux_b):
    np.testing.assert_allclose(z, x, atol=1e-5)
  for x, z in zip(grads_a, grads_b):  # bf16: the logits' gradient is rounded to bf16
    np.testing.assert_allclose(z, x, atol=tol * float(jnp.max(jnp.abs(x))))


@pytest.mark.parametrize("dtype,tied", [("float32", True), ("bfloat16", False)])
def test_train_loss_and_gradients_match_the_full_logits_path(dtype, tied):
  cfg = ModelConfig(**CFG, dtype=dtype, tie_embeddings=tied)
  batch = _batch()
  model, params = _init(cfg, batch)
  kw = dict(label_smoothing=0.1, z_loss=1e-4)

  def full(p):  # the loss as computed before: the whole float32 logits tensor
    logits = model.apply({"params": p}, batch["encoder_input_tokens"],
                         batch["decoder_input_tokens"])
    loss, z = losses.cross_entropy(logits, batch["decoder_target_tokens"], **kw)
    hit = losses.correct(logits, batch["decoder_target_tokens"])
    return jnp.sum(loss + z), {"accuracy": jnp.sum(hit), "z_loss": jnp.sum(z)}

  def fused_sum(p):
    value, aux = train_losses.cross_entropy_sums(p, batch, jax.random.key(0), model=model,
                                                 **kw)
    return value, {"accuracy": aux["accuracy"], "z_loss": aux["z_loss"]}

  (a, aux_a), grads_a = jax.jit(jax.value_and_grad(full, has_aux=True))(params)
  (b, aux_b), grads_b = jax.jit(jax.value_and_grad(fused_sum, has_aux=True))(params)
  rtol = 1e-5 if dtype == "float32" else 1e-2
  np.testing.assert_allclose(b, a, rtol=rtol)
  np.testing.assert_allclose(aux_b["z_loss"], aux_a["z_loss"], rtol=rtol)
  assert float(aux_b["accuracy"]) == float(aux_a["accuracy"])
  for x, z in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    scale = max(float(jnp.max(jnp.abs(x))), 1e-6)
    assert float(jnp.max(jnp.abs(x - z))) <= (1e-4 if dtype == "float32" else 5e-2) * scale
  # A train state's parameters are boxed (logical axis names): the same loss from them.
  boxed = model.init(jax.random.key(0), batch["encoder_input_tokens"],
                     batch["decoder_input_tokens"])["params"]
  value = jax.jit(lambda p: fused_sum(p)[0])(boxed)
  np.testing.assert_allclose(value, b, rtol=1e-6)


def _float32_vocab_dots(hlo_text: str, vocab: int) -> tuple:
  """(every dot of a StableHLO module with a `vocab`-sized dimension, those of them whose
  operands are both float32)."""
  dots = []
  for line in hlo_text.splitlines():
    if "stablehlo.dot_general" in line and re.search(rf"[<x]{vocab}x", line):
      operands = line.rsplit(" : (", 1)[1].split(") -> ")[0].split(", ")
      dots.append((line, all(t.endswith("xf32>") for t in operands)))
  return dots, [line for line, f32 in dots if f32]


@pytest.mark.parametrize("tied", [True, False])
def test_bf16_train_gradient_has_no_float32_matmul_of_vocabulary_size(tied):
  cfg = ModelConfig(**{**CFG, "vocab_size": 160}, dtype="bfloat16", tie_embeddings=tied)
  batch = _batch(vocab=160)
  model, params = _init(cfg, batch)
  grad = jax.grad(lambda p: train_losses.cross_entropy_sums(
      p, batch, jax.random.key(0), model=model, z_loss=1e-4)[0])
  dots, f32 = _float32_vocab_dots(jax.jit(grad).lower(params).as_text(), 160)
  assert len(dots) >= 3, dots  # the logits, and the two matmuls of their gradient
  assert not f32, f32


def test_rmsnorm_returns_the_compute_dtype_and_its_gradient_is_the_formula():
  x = jax.random.normal(jax.random.key(0), (2, 3, 16)) * 3
  norm = RMSNorm(1e-6, jnp.float32)
  params = norm.init(jax.random.key(1), x)["params"]
  scale = params["scale"].value + jax.random.normal(jax.random.key(2), (16,)) * 0.1

  def formula(scale, x):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * scale

  ours = lambda scale, x: norm.apply({"params": {"scale": scale}}, x)
  np.testing.assert_allclose(ours(scale, x), formula(scale, x), rtol=1e-6, atol=1e-6)
  loss = lambda f: lambda s, x: jnp.sum(jnp.sin(f(s, x)))
  for a, b in zip(jax.grad(loss(ours), (0, 1))(scale, x), jax.grad(loss(formula), (0, 1))(scale, x)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  out = RMSNorm(1e-6, jnp.bfloat16).apply({"params": {"scale": scale}}, x.astype(jnp.bfloat16))
  assert out.dtype == jnp.bfloat16
  dx = jax.grad(lambda x: jnp.sum(RMSNorm(1e-6, jnp.bfloat16).apply(
      {"params": {"scale": scale}}, x).astype(jnp.float32)))(x.astype(jnp.bfloat16))
  assert dx.dtype == jnp.bfloat16
