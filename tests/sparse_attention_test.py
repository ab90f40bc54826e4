"""Every sparse kind equals dense attention restricted to its pattern, example by example."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax.model.attention import dense, kinds, relative
from refinedweb_jax.model.attention.kinds import AttentionConfig

jax.config.update("jax_default_matmul_precision", "highest")

CONFIGS = {
    "local": ("local", AttentionConfig(window=20, block_size=8)),
    "strided_fixed": ("strided", AttentionConfig(stride=16, summary=3, block_size=8)),
    "strided_strided": ("strided", AttentionConfig(stride=16, variant="strided", block_size=8)),
    "bigbird": ("bigbird", AttentionConfig(block_size=8, global_blocks=1, window_blocks=3,
                                           random_blocks=2, seed=3)),
    "global_local": ("global_local", AttentionConfig(window=12, block_size=8,
                                                     global_positions="0,1,37")),
}


def _qkv(length, batch=2, heads=2, dim=8, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(k, (batch, length, heads, dim)) for k in keys]


def _segments(length, block=8):
  """Row 0: one example and padding; row 1: three examples packed on block boundaries."""
  seg = np.zeros((2, length), np.int32)
  seg[0, : length - 7] = 1
  at = 0
  for number, n in enumerate((length // 3 - 2, 9, length // 2 - 3), start=1):
    seg[1, at: at + n] = number
    at += -(-n // block) * block
  return seg


def _reference_mask(kind, cfg, seg, causal):
  """The block-diagonal mask of each example's own pattern, [B, 1, N, N]."""
  mask = np.zeros(seg.shape + seg.shape[1:], bool)
  for row in range(seg.shape[0]):
    for number in set(seg[row].tolist()) - {0}:
      where = np.flatnonzero(seg[row] == number)
      mask[row][np.ix_(where, where)] = kinds.pattern(kind, cfg, len(where), causal)
  return mask[:, None]


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("length", [64, 77])  # a multiple of the block size and not
@pytest.mark.parametrize("causal", [False, True])
def test_sparse_equals_dense_with_each_examples_pattern(name, length, causal):
  kind, cfg = CONFIGS[name]
  q, k, v = _qkv(length)
  seg = _segments(length)
  real = seg != 0
  cotangent = jax.random.normal(jax.random.key(9), q.shape) * real[:, :, None, None]
  sparse_fn = lambda q, k, v: kinds.attend(kind, cfg, q, k, v, jnp.asarray(seg), causal=causal)
  mask = _reference_mask(kind, cfg, seg, causal)
  dense_fn = lambda q, k, v: dense.einsum_attention(q, k, v, mask)

  @jax.jit
  def outputs_and_grads(q, k, v):
    return [(fn(q, k, v), jax.grad(lambda *a: jnp.sum(fn(*a) * cotangent), (0, 1, 2))(q, k, v))
            for fn in (sparse_fn, dense_fn)]

  (out_s, grads_s), (out_d, grads_d) = outputs_and_grads(q, k, v)
  np.testing.assert_allclose(np.asarray(out_s)[real], np.asarray(out_d)[real], atol=1e-5)
  for gs, gd in zip(grads_s, grads_d):
    np.testing.assert_allclose(np.asarray(gs), np.asarray(gd), atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("causal", [False, True])
def test_sparse_with_t5_bias_equals_dense_with_bias(name, causal):
  """T5's relative bias is added on every part of every kind: outputs and all gradients
  (the bias table's too) equal masked dense attention plus the dense bias."""
  kind, cfg = CONFIGS[name]
  length = 77
  q, k, v = _qkv(length)
  seg = _segments(length)
  real = seg != 0
  table = jax.random.normal(jax.random.key(4), (8, q.shape[2]))  # 8 buckets: exact, log, far
  cotangent = jax.random.normal(jax.random.key(9), q.shape) * real[:, :, None, None]
  make_bias = lambda t: relative.RelativeBias(t, bidirectional=not causal, max_distance=20)
  row = jnp.arange(length)
  sparse_fn = lambda q, k, v, t: kinds.attend(kind, cfg, q, k, v, jnp.asarray(seg),
                                              causal=causal, bias=make_bias(t))
  mask = _reference_mask(kind, cfg, seg, causal)
  dense_fn = lambda q, k, v, t: dense.einsum_attention(q, k, v, mask,
                                                       make_bias(t).between(row, row)[None])

  @jax.jit
  def outputs_and_grads(q, k, v, t):
    return [(fn(q, k, v, t),
             jax.grad(lambda *a: jnp.sum(fn(*a) * cotangent), (0, 1, 2, 3))(q, k, v, t))
            for fn in (sparse_fn, dense_fn)]

  (out_s, grads_s), (out_d, grads_d) = outputs_and_grads(q, k, v, table)
  np.testing.assert_allclose(np.asarray(out_s)[real], np.asarray(out_d)[real], atol=1e-5)
  for gs, gd in zip(grads_s, grads_d):
    np.testing.assert_allclose(np.asarray(gs), np.asarray(gd), atol=1e-4)


def test_local_with_window_covering_everything_equals_dense():
  length = 50
  q, k, v = _qkv(length)
  seg = jnp.asarray(_segments(length, block=16))
  cfg = AttentionConfig(window=length, block_size=16)
  for causal in (False, True):
    mask = dense.make_attention_mask(seg, seg, causal=causal)
    want = dense.dense_attention(q, k, v, mask)
    got = kinds.attend("local", cfg, q, k, v, seg, causal=causal)
    real = np.asarray(seg != 0)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=1e-5)


def test_local_window_bound_is_exclusive():
  m = kinds.pattern("local", AttentionConfig(window=4, block_size=4), 12)
  assert m[5, 2] and m[5, 8] and not m[5, 1] and not m[5, 9]
  assert m.sum(1).max() == 7


def test_bigbird_picks_distinct_random_blocks_outside_window_and_globals():
  cfg = AttentionConfig(block_size=1, global_blocks=2, window_blocks=3, random_blocks=4)
  m = kinds.pattern("bigbird", cfg, 40)
  for i in range(2, 40):
    far = [j for j in np.flatnonzero(m[i]) if abs(j - i) > 1 and j >= 2]
    assert len(far) == 4, (i, far)
  causal = kinds.pattern("bigbird", cfg, 40, causal=True)
  longer = kinds.pattern("bigbird", cfg, 64, causal=True)
  assert (causal == longer[:40, :40]).all()  # a causal row does not depend on the length


def test_patterns_are_sparse_at_8k():
  cfg = AttentionConfig(window=256, block_size=64, stride=256, summary=8, global_blocks=1,
                        window_blocks=3, random_blocks=3, global_positions="0-15")
  for kind, variant in [("local", "fixed"), ("strided", "fixed"), ("strided", "strided"),
                        ("bigbird", "fixed"), ("global_local", "fixed")]:
    m = kinds.pattern(kind, dataclasses.replace(cfg, variant=variant), 8192)
    assert m.mean() <= 0.10, (kind, variant, m.mean())


@pytest.mark.parametrize("kind, sizes, message", [
    ("local", dict(window=0), "model.attention.window must be >= 1, got 0"),
    ("strided", dict(stride=100, block_size=64), "stride=100 must be a multiple"),
    ("strided", dict(variant="odd"), "unknown model.attention.variant 'odd'"),
    ("bigbird", dict(window_blocks=2), "window_blocks must be odd"),
    ("global_local", dict(global_positions="0-x"), "bad model.attention.global_positions"),
])
def test_bad_sizes_name_the_value(kind, sizes, message):
  with pytest.raises(ValueError, match=message):
    kinds.check(kind, AttentionConfig(**sizes))


def test_global_positions_a_length_cannot_hold():
  cfg = AttentionConfig(global_positions="0,99-120")
  with pytest.raises(ValueError, match=r"global_positions 99-120 never occur in sequences of 64"):
    kinds.check_length("global_local", cfg, 64)
