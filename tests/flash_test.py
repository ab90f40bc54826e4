"""The Pallas block-table flash kernel equals masked dense softmax from the same definition.

The kernels run in Pallas interpret mode, where compiling dominates: tests that share
shapes and static settings share one compiled program (_run). The last test lowers
the kernels for CUDA (Triton) without a GPU.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax.model.attention import blocked, flash, relative

jax.config.update("jax_default_matmul_precision", "highest")

NEG = np.float32(-1e30)  # blocked.py's lse of a query with no key


def _packed(length, lengths_per_row):
  """Segment ids 1, 2, ... of the given example lengths per row, then padding (0)."""
  seg = np.zeros((len(lengths_per_row), length), np.int32)
  for row, lengths in enumerate(lengths_per_row):
    seg[row, : sum(lengths)] = np.repeat(np.arange(1, len(lengths) + 1), lengths)
  return seg


PACKED = _packed(64, [[57], [20, 9, 23]])  # row 0: padding at the end; row 1: 3 examples


def local_window(i, j):
  return jnp.abs(i - j) < 20


def near_or_first(i, j):
  return (j < 8) | (jnp.abs(i - j) < 5)  # depends on where in its example a token is


def _normal(shape, dtype=np.float32, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _qkv(t, s, batch=2, heads=2, dim=16, dtype=jnp.float32):
  return [_normal(shape, dtype, seed) for seed, shape in enumerate(
      [(batch, t, heads, dim), (batch, s, heads, dim), (batch, s, heads, dim)])]


def _reference(q, k, v, q_seg, kv_seg, table, valid, *, block_q, block_k, causal, rule=None,
               q_coords_BxT=None, kv_coords_BxS=None, bias=None):
  """Masked dense softmax: (out, lse), out 0 and lse -1e30 where a query has no key."""
  (batch, t, _, dim), s = q.shape, k.shape[1]
  listed = ((table[..., None] == jnp.arange(s // block_k)) & valid[..., None]).any(-2)
  mask = jnp.broadcast_to(listed, (batch,) + listed.shape[1:])
  mask = mask.repeat(block_q, 1).repeat(block_k, 2)
  i = jnp.broadcast_to(jnp.arange(t) if q_coords_BxT is None else q_coords_BxT, (batch, t))
  j = jnp.broadcast_to(jnp.arange(s) if kv_coords_BxS is None else kv_coords_BxS, (batch, s))
  i, j = i[:, :, None], j[:, None, :]
  mask &= (q_seg[:, :, None] == kv_seg[:, None, :]) & (kv_seg[:, None, :] != 0)
  if causal:
    mask &= j <= i
  if rule is not None:
    mask &= rule(i, j)
  scores = jnp.einsum("bthk,bshk->bhts", q.astype(jnp.float32), k.astype(jnp.float32))
  scores *= dim ** -0.5
  if bias is not None:
    scores += bias(j - i)  # [B, H, T, S]
  scores = jnp.where(mask[:, None], scores, NEG)
  lse = jax.nn.logsumexp(scores, axis=-1)
  probs = jnp.exp(scores - lse[..., None]) * mask[:, None]
  out = jnp.einsum("bhts,bshk->bthk", probs, v.astype(jnp.float32))
  return out.astype(q.dtype), lse.transpose(0, 2, 1)


def _kernel(*args, **kw):
  return flash.block_attention(*args, interpret=True, **kw)


@functools.partial(jax.jit, static_argnames=("fn", "static"))
def _run(fn, static, q, k, v, bias_table, side, ct_out, ct_lse):
  """fn's (out, lse) and the q, k, v (and bias table) gradients of <out, ct_out> + <lse, ct_lse>.

  static: fn's static keywords as sorted (name, value) pairs, plus `bidirectional`
  when there is a bias table; side: segments, table, valid and coordinates.
  """
  kw = dict(static)
  bidirectional = kw.pop("bidirectional", True)
  q_seg, kv_seg, table, valid, q_coords, kv_coords = side

  def attend(q, k, v, bias_table):
    bias = None if bias_table is None else relative.RelativeBias(
        bias_table, bidirectional=bidirectional, max_distance=20)
    return fn(q, k, v, q_seg, kv_seg, table, valid, q_coords_BxT=q_coords,
              kv_coords_BxS=kv_coords, bias=bias, **kw)

  (out, lse), vjp = jax.vjp(attend, q, k, v, bias_table)
  return out, lse, vjp((ct_out.astype(out.dtype), ct_lse))


def _side(q_seg, kv_seg, table, valid, q_coords=None, kv_coords=None):
  as_int = lambda x: None if x is None else jnp.asarray(x, jnp.int32)
  return (as_int(q_seg), as_int(kv_seg), as_int(table), jnp.asarray(valid, bool),
          as_int(q_coords), as_int(kv_coords))


def _compare(qkv, side, *, atol=1e-5, grad_atol=5e-5, bias_table=None, **static):
  """Outputs, lse and gradients of the kernel and the reference; True where a query has no key."""
  q = qkv[0]
  ct_out, ct_lse = _normal(q.shape, seed=7), _normal(q.shape[:3], seed=8)
  static = tuple(sorted(static.items()))
  out, lse, grads = _run(_kernel, static, *qkv, bias_table, side, ct_out, ct_lse)
  ref_out, ref_lse, ref_grads = _run(_reference, static, *qkv, bias_table, side, ct_out, ct_lse)
  assert out.dtype == q.dtype and lse.dtype == jnp.float32 and lse.shape == q.shape[:3]
  f32 = lambda x: np.asarray(x, np.float32)
  np.testing.assert_allclose(f32(out), f32(ref_out), atol=atol, rtol=atol)
  empty = f32(ref_lse) <= NEG / 2
  np.testing.assert_allclose(f32(lse)[~empty], f32(ref_lse)[~empty], atol=atol, rtol=atol)
  assert (f32(lse)[empty] == NEG).all() and (f32(out)[empty] == 0).all()
  differentiated = 3 if bias_table is None else 4  # q, k, v (and the bias table)
  for got, want in zip(grads[:differentiated], ref_grads[:differentiated]):
    assert got.dtype == want.dtype and np.isfinite(f32(got)).all()
    np.testing.assert_allclose(f32(got), f32(want), atol=grad_atol, rtol=grad_atol)
  return empty


DENSE = dict(block_q=16, block_k=16, causal=False)
CROSS = dict(block_q=16, block_k=32, causal=False)


@pytest.mark.parametrize("causal", [False, True])
def test_dense_packed_rows(causal):
  table, valid = flash.dense_table(PACKED, PACKED, 16, 16, causal)
  assert table.shape == (2, 4, 4) and not np.asarray(valid).all()  # blocks are skipped
  empty = _compare(_qkv(64, 64), _side(PACKED, PACKED, table, valid), **DENSE | {"causal": causal})
  assert empty[PACKED == 0].all() and not empty[PACKED != 0].any()  # padding queries


def test_cross_attention_with_a_query_segment_no_key_has():
  q_seg = _packed(64, [[30, 20, 14], [64]])
  kv_seg = _packed(128, [[50, 70], [100]])  # segment 3 of row 0 has no keys
  table, valid = flash.dense_table(q_seg, kv_seg, 16, 32, False)
  empty = _compare(_qkv(64, 128), _side(q_seg, kv_seg, table, valid), **CROSS)
  assert empty[0, 50:].all() and not empty[0, :50].any()


def test_random_per_row_tables_with_invalid_entries():
  rng = np.random.default_rng(0)
  table = np.stack([np.stack([rng.permutation(4) for _ in range(4)]) for _ in range(2)])
  valid = rng.random(table.shape) < 0.6
  valid[0, 1] = False  # a query block with no key block at all
  q_seg, kv_seg = _packed(64, [[40, 24], [64]]), _packed(128, [[80, 48], [128]])
  empty = _compare(_qkv(64, 128), _side(q_seg, kv_seg, table, valid), **CROSS)
  assert empty[0, 16:32].all()


def test_sliding_window_band_from_a_shared_table_and_a_rule():
  table, valid = blocked.relative_table(2, 8, causal=True)  # reach 2 blocks of 16: window 20
  seg = _packed(128, [[128], [70, 50]])
  _compare(_qkv(128, 128), _side(seg, seg, table, valid), block_q=16, block_k=16, causal=True,
           rule=local_window)


def test_own_position_coordinates_in_packed_rows():
  seg = _packed(64, [[30, 34], [16, 48]])
  pos = np.asarray(blocked.layout(jnp.asarray(seg), 16).position_BxN)
  table, valid = flash.dense_table(seg, seg, 16, 16, True, q_coords_BxT=pos, kv_coords_BxS=pos)
  _compare(_qkv(64, 64), _side(seg, seg, table, valid, pos, pos), block_q=16, block_k=16,
           causal=True, rule=near_or_first)


def test_t5_bias_and_its_table_gradient():
  seg = _packed(64, [[64], [20, 44]])
  table, valid = flash.dense_table(seg, seg, 16, 16, False)
  _compare(_qkv(64, 64), _side(seg, seg, table, valid), bias_table=_normal((8, 2), seed=4),
           **DENSE)  # 8 buckets over max_distance 20: exact, log-spaced and far offsets


@pytest.mark.parametrize("bidirectional", [False, True])
def test_bias_intervals_reproduce_t5_buckets(bidirectional):
  bias = relative.RelativeBias(_normal((32, 3), seed=5), bidirectional, max_distance=128)
  values, starts = flash._bias_intervals(bias, 3)
  offsets = np.arange(-300, 300)
  interval = (offsets[:, None] >= np.array(starts)[None, :]).sum(1)
  np.testing.assert_array_equal(np.asarray(values)[:, interval],
                                np.asarray(bias(jnp.asarray(offsets)[None]))[:, 0])


def test_bfloat16():
  table, valid = flash.dense_table(PACKED, PACKED, 16, 32, True)
  _compare(_qkv(64, 64, dtype=jnp.bfloat16), _side(PACKED, PACKED, table, valid), atol=2e-2,
           grad_atol=5e-2, block_q=16, block_k=32, causal=True)


def test_float16():
  table, valid = flash.dense_table(PACKED, PACKED, 16, 32, True)
  _compare(_qkv(64, 64, dtype=jnp.float16), _side(PACKED, PACKED, table, valid), atol=5e-3,
           grad_atol=2e-2, block_q=16, block_k=32, causal=True)


@pytest.mark.parametrize("causal", [False, True])
def test_tiles_smaller_than_the_table_blocks_with_bias_on_packed_rows(causal):
  """128-token table blocks cut into the kernels' 64 x 64 tiles; whole-segment tiles unmasked."""
  seg = _packed(256, [[256], [100, 60, 70]])
  table, valid = flash.dense_table(seg, seg, 128, 128, causal)
  assert flash.tiling("forward", 16, jnp.float32, 128, 128).block_q == 64
  _compare(_qkv(256, 256), _side(seg, seg, table, valid), bias_table=_normal((8, 2), seed=4),
           block_q=128, block_k=128, causal=causal, bidirectional=not causal)


def test_parts_merge_through_blocked_merge():
  """Even and odd key blocks as two parts: merged, they are softmax over all, gradients too."""
  qkv = _qkv(64, 64)
  table, valid = flash.dense_table(PACKED, PACKED, 16, 16, False)
  even = np.arange(4) % 2 == 0
  ct = _normal(qkv[0].shape, seed=7)
  static = tuple(sorted(DENSE.items()))
  zero_out, zero_lse = jnp.zeros_like(ct), jnp.zeros(ct.shape[:3])
  run = lambda valid, ct_out, ct_lse: _run(_kernel, static, *qkv, None,
                                           _side(PACKED, PACKED, table, valid), ct_out, ct_lse)
  parts = [run(valid & keep, zero_out, zero_lse)[:2] for keep in (even, ~even)]
  merged, merge_vjp = jax.vjp(blocked.merge, parts)
  (part_cts,) = merge_vjp(ct)  # cotangents of each part's out and lse
  grads = [run(valid & keep, *cts)[2] for keep, cts in zip((even, ~even), part_cts)]
  want, _, want_grads = _run(_reference, static, *qkv, None, _side(PACKED, PACKED, table, valid),
                             ct, zero_lse)
  np.testing.assert_allclose(merged, want, atol=1e-5)
  for got_even, got_odd, w in zip(grads[0][:3], grads[1][:3], want_grads[:3]):
    np.testing.assert_allclose(got_even + got_odd, w, atol=5e-5)


@pytest.mark.parametrize("t, s, block_q, block_k, dim, message", [
    (60, 64, 16, 16, 16, "query length 60 must be a multiple of block_q=16"),
    (64, 72, 16, 16, 16, "key length 72 of block_k=16"),
    (64, 64, 24, 16, 16, "block_q must be a power of two >= 16.*got 24"),
    (64, 64, 16, 8, 16, "block_k must be a power of two >= 16.*got 8"),
    (64, 64, 16, 16, 12, "head dim K must be a power of two >= 16.*got 12"),
])
def test_bad_shapes_name_the_value(t, s, block_q, block_k, dim, message):
  q, k, v = [np.zeros((2, n, 2, dim), np.float32) for n in (t, s, s)]
  table = np.zeros((1, max(t // block_q, 1), 1), np.int32)
  with pytest.raises(ValueError, match=message):
    flash.block_attention(q, k, v, np.ones((2, t), np.int32), np.ones((2, s), np.int32), table,
                          np.ones(table.shape, bool), block_q=block_q, block_k=block_k,
                          causal=False, interpret=True)


def test_bad_table_dtype_and_bias_name_the_value():
  q = np.zeros((2, 64, 2, 16), np.float32)
  seg = np.ones((2, 64), np.int32)
  table, valid = np.zeros((1, 4, 2), np.int32), np.ones((1, 4, 2), bool)
  call = lambda q, table, valid, **kw: flash.block_attention(
      q, q, q, seg, seg, table, valid, block_q=16, block_k=16, causal=False, **kw)
  with pytest.raises(ValueError, match=r"must both be \[1 or 2, 4, M\].*got \(3, 4, 2\)"):
    call(q, np.zeros((3, 4, 2), np.int32), np.ones((3, 4, 2), bool))
  with pytest.raises(ValueError, match="all bfloat16 or all float16, got int32"):
    call(q.astype(np.int32), table, valid)
  with pytest.raises(ValueError, match="bias table has 3 heads, the queries 2"):
    call(q, table, valid,
         bias=relative.RelativeBias(jnp.zeros((8, 3)), bidirectional=True, max_distance=20))
  with pytest.raises(TypeError, match="bias must be a relative.RelativeBias or None, got ndarray"):
    call(q, table, valid, bias=np.zeros((8, 2)))


def test_kernels_lower_for_cuda_triton():
  """Forward, dq and dk/dv kernels, with a rule, coordinates and T5's bias, lower to Triton."""
  q = jax.ShapeDtypeStruct((2, 128, 2, 64), jnp.bfloat16)
  seg = jax.ShapeDtypeStruct((2, 128), jnp.int32)

  def loss(q, k, v, seg, bias_table):
    table, valid = flash.dense_table(seg, seg, 64, 32, True, q_coords_BxT=seg, kv_coords_BxS=seg)
    out, lse = flash.block_attention(
        q, k, v, seg, seg, table, valid, block_q=64, block_k=32, causal=True, rule=local_window,
        q_coords_BxT=seg, kv_coords_BxS=seg,
        bias=relative.RelativeBias(bias_table, bidirectional=False, max_distance=128))
    return jnp.sum(out.astype(jnp.float32)) + jnp.sum(lse)

  grad = jax.jit(jax.grad(loss, (0, 1, 2, 4)))
  try:
    text = grad.trace(q, q, q, seg, jax.ShapeDtypeStruct((32, 2), jnp.float32)).lower(
        lowering_platforms=("cuda",)).as_text()
  except RuntimeError as e:  # newer jaxlibs compile to PTX while lowering: that needs CUDA
    if "Triton compilation handler" in str(e):
      pytest.skip(str(e))
    raise
  assert text.count("triton") >= 3
