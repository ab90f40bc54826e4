"""Every sparse kind equals dense attention restricted to its explicit pattern M."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax.model import attention
from refinedweb_jax.model.attention.sparse import SparseSpec, pattern, sparse_attention

jax.config.update("jax_default_matmul_precision", "highest")

SPECS = {
    "local": SparseSpec("local", window=20, block_size=8),
    "strided_fixed": SparseSpec("strided", stride=16, summary=3, block_size=8),
    "strided_strided": SparseSpec("strided", stride=16, variant="strided", block_size=8),
    "bigbird": SparseSpec("bigbird", block_size=8, num_global_blocks=1, num_window_blocks=3,
                          num_random_blocks=2, seed=3),
    "global_local": SparseSpec("global_local", window=12, block_size=8,
                               global_positions=(0, 1, 37)),
}


def _qkv(length, batch=2, heads=2, dim=8, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(k, (batch, length, heads, dim)) for k in keys]


def _segments(length, kind):
  """Padding only, or two packed segments plus padding, per batch row."""
  seg = np.ones((2, length), np.int32)
  seg[0, length - 7:] = 0
  if kind == "packed":
    seg[1, length // 3:] = 2
    seg[1, length - 5:] = 0
  return jnp.asarray(seg)


def _dense_reference(spec, q, k, v, seg, causal):
  m = pattern(spec, q.shape[1], causal)
  mask = (jnp.asarray(m)[None] & (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0))
  return attention.einsum_attention(q, k, v, mask[:, None]), mask


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("length", [64, 77])  # a multiple of the block size and not
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("segments", ["padding", "packed"])
def test_sparse_equals_dense_with_pattern(name, length, causal, segments):
  spec = SPECS[name]
  q, k, v = _qkv(length)
  seg = _segments(length, segments)
  cotangent = jax.random.normal(jax.random.key(9), q.shape)

  def loss(fn, q, k, v):
    out = fn(q, k, v)
    return jnp.sum(out * cotangent * (seg != 0)[:, :, None, None]), out

  sparse_fn = lambda q, k, v: sparse_attention(spec, q, k, v, seg, seg, causal=causal)
  dense_fn = lambda q, k, v: _dense_reference(spec, q, k, v, seg, causal)[0]
  (_, out_s), grads_s = jax.value_and_grad(lambda *a: loss(sparse_fn, *a), (0, 1, 2),
                                           has_aux=True)(q, k, v)
  (_, out_d), grads_d = jax.value_and_grad(lambda *a: loss(dense_fn, *a), (0, 1, 2),
                                           has_aux=True)(q, k, v)
  real = np.asarray(seg != 0)
  np.testing.assert_allclose(np.asarray(out_s)[real], np.asarray(out_d)[real], atol=1e-5)
  for gs, gd in zip(grads_s, grads_d):
    np.testing.assert_allclose(np.asarray(gs), np.asarray(gd), atol=1e-5)


def test_local_with_window_covering_everything_equals_dense():
  length = 50
  q, k, v = _qkv(length)
  seg = _segments(length, "packed")
  spec = SparseSpec("local", window=length, block_size=16)
  for causal in (False, True):
    mask = attention.make_attention_mask(seg, seg, causal=causal)
    dense = attention.dense_attention(q, k, v, mask)
    sparse = sparse_attention(spec, q, k, v, seg, seg, causal=causal)
    real = np.asarray(seg != 0)
    np.testing.assert_allclose(np.asarray(sparse)[real], np.asarray(dense)[real], atol=1e-5)


def test_local_window_bound_is_exclusive():
  m = pattern(SparseSpec("local", window=4, block_size=4), 12)
  assert m[5, 2] and m[5, 8] and not m[5, 1] and not m[5, 9]
  assert m.sum(1).max() == 7


def test_patterns_are_sparse_at_8k():
  sizes = dict(window=256, block_size=64, stride=256, summary=8, num_global_blocks=1,
               num_window_blocks=3, num_random_blocks=3, global_positions=tuple(range(16)))
  for kind, extra in [("local", {}), ("strided", {}), ("strided", {"variant": "strided"}),
                      ("bigbird", {}), ("global_local", {})]:
    m = pattern(SparseSpec(kind, **{**sizes, **extra}), 8192)
    assert m.mean() <= 0.10, (kind, extra, m.mean())


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="sliding"), "unknown sparse attention kind 'sliding'"),
    (dict(kind="local", window=0), "attention window must be > 0, got 0"),
    (dict(kind="strided", stride=100, block_size=64), "stride 100 must be a multiple"),
    (dict(kind="bigbird", num_window_blocks=2), "num_window_blocks must be odd"),
])
def test_bad_spec_names_the_value(kwargs, message):
  with pytest.raises(ValueError, match=message):
    SparseSpec(**kwargs)


def test_global_positions_out_of_range():
  spec = SparseSpec("global_local", global_positions=(0, 99))
  with pytest.raises(ValueError, match=r"global positions \[99\] out of range for length 64"):
    pattern(spec, 64)
