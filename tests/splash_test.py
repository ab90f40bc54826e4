"""The TPU splash-attention path, run in Pallas interpret mode on CPU.

Each kernel is checked against dense.einsum_attention under dense.make_attention_mask
(and the kind's pattern): outputs on real queries and the gradients of a loss that
ignores padding queries, with every output finite.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax import sharding
from refinedweb_jax.model.attention import dense, dispatch, kinds, local, splash
from refinedweb_jax.model.attention.kinds import AttentionConfig

jax.config.update("jax_default_matmul_precision", "highest")

HEADS, DIM = 2, 64


def _qkv(t, s, batch=2, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(keys[0], (batch, t, HEADS, DIM))
  k, v = (jax.random.normal(key, (batch, s, HEADS, DIM)) for key in keys[1:3])
  return q, k, v, jax.random.normal(keys[3], q.shape)


def _segments(*rows):
  """Segment ids from runs: each row a list of (segment, count)."""
  return jnp.asarray([[seg for seg, n in row for _ in range(n)] for row in rows], jnp.int32)


def _out_and_grads(fn, q, k, v, cotangent):
  out, vjp = jax.vjp(fn, q, k, v)
  return out, vjp(cotangent)


def _check(got_fn, want_fn, q, k, v, cotangent, q_segment_ids):
  """Equal outputs on real queries and equal q/k/v gradients; everything finite."""
  real = np.asarray(q_segment_ids != 0)[:, :, None, None]
  cotangent = jnp.where(real, cotangent, 0)  # padding queries' outputs are ignored
  got, got_grads = jax.jit(lambda *a: _out_and_grads(got_fn, *a))(q, k, v, cotangent)
  want, want_grads = jax.jit(lambda *a: _out_and_grads(want_fn, *a))(q, k, v, cotangent)
  assert np.isfinite(np.asarray(got)).all()
  np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), atol=2e-5)
  for name, g, w in zip("qkv", got_grads, want_grads):
    assert np.isfinite(np.asarray(g)).all(), name
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=2e-5, err_msg=f"d{name}")


# Row 0: two packed examples and padding; row 1: one example and padding. 200 tokens
# pad to 2 blocks of 128 inside the kernel.
SELF_SEGMENTS = ((1, 90), (2, 90), (0, 20)), ((1, 150), (0, 50))


@pytest.mark.parametrize("causal,fused_bwd", [(True, None), (False, False)])
def test_dense_self_attention_equals_reference(causal, fused_bwd):
  q, k, v, ct = _qkv(200, 200)
  seg = _segments(*SELF_SEGMENTS)
  got = lambda q, k, v: splash.dense(q, k, v, seg, causal=causal, block_q=128, block_kv=128,
                                     fused_bwd=fused_bwd, interpret=True)
  want = lambda q, k, v: dense.einsum_attention(
      q, k, v, dense.make_attention_mask(seg, seg, causal=causal))
  _check(got, want, q, k, v, ct, seg)


def test_cross_attention_equals_reference():
  """T != S, default blocks; padding queries whose only same-segment keys are padding
  (row 0) or that have none at all (row 1: no padding keys) stay finite."""
  q, k, v, ct = _qkv(136, 256)
  q_seg = _segments(((1, 60), (2, 60), (0, 16)), ((1, 120), (0, 16)))
  kv_seg = _segments(((1, 100), (2, 90), (0, 66)), ((1, 256),))
  got = lambda q, k, v: splash.dense(q, k, v, q_seg, kv_seg, causal=False, interpret=True)
  want = lambda q, k, v: dense.einsum_attention(
      q, k, v, dense.make_attention_mask(q_seg, kv_seg, causal=False))
  _check(got, want, q, k, v, ct, q_seg)


SPARSE = [
    ("strided", AttentionConfig(stride=64, summary=8, variant="fixed", block_size=32)),
    ("strided", AttentionConfig(stride=64, variant="strided", block_size=32)),
    ("global_local", AttentionConfig(window=20, global_positions="0-3,70", block_size=32)),
    ("bigbird", AttentionConfig(block_size=32, window_blocks=3, global_blocks=1,
                                random_blocks=2)),
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind,cfg", SPARSE, ids=["fixed", "strided", "global_local", "bigbird"])
def test_sparse_kind_equals_reference_on_unpacked_rows(kind, cfg, causal):
  """One example per row from position 0, then padding; BigBird's layer 1 draws."""
  q, k, v, ct = _qkv(200, 200)
  seg = _segments(((1, 200),), ((1, 170), (0, 30)))
  layer = 1
  got = lambda q, k, v: splash.sparse(kind, cfg, q, k, v, seg, causal=causal, layer=layer,
                                      block=128, interpret=True)
  mask = dense.make_attention_mask(seg, seg, causal=False) & kinds.pattern(
      kind, cfg, 200, causal, layer)
  want = lambda q, k, v: dense.einsum_attention(q, k, v, mask)
  _check(got, want, q, k, v, ct, seg)


@pytest.mark.parametrize("causal", [False, True])
def test_local_mask_on_packed_rows_equals_blocked_local(causal):
  """`local` is the same at every offset: exact on packed rows; 200 tokens grow its mask."""
  q, k, v, _ = _qkv(200, 200)
  seg = _segments(*SELF_SEGMENTS)
  cfg = AttentionConfig(window=40, block_size=64)
  got = splash.attention(q, k, v, seg, local.splash_mask(cfg, 200, causal), block_q=128,
                         block_kv=128, interpret=True)
  want = kinds.attend("local", cfg, q, k, v, seg, causal=causal)
  real = np.asarray(seg != 0)[:, :, None, None]
  np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), atol=2e-5)


def _blockwise(mask, block):
  """The mask read as splash reads it, one block at a time (twice: the second from memory)."""
  n = mask.shape[0]
  for _ in range(2):
    out = np.block([[np.asarray(mask[i:i + block, j:j + block]) for j in range(0, n, block)]
                    for i in range(0, n, block)])
  return out


@pytest.mark.parametrize("kind,cfg", SPARSE + [
    ("local", AttentionConfig(window=20)),
    # Periods, global positions and blocks that splash's blocks cut at varying places.
    ("strided", AttentionConfig(stride=96, summary=8, variant="fixed", block_size=32)),
    ("strided", AttentionConfig(stride=96, variant="strided", block_size=32)),
    ("global_local", AttentionConfig(window=50, global_positions="5,300-302,900",
                                     block_size=32)),
    ("bigbird", AttentionConfig(block_size=96, window_blocks=1, global_blocks=2,
                                random_blocks=3)),
])
def test_sparse_masks_are_the_kinds_patterns(kind, cfg):
  for causal in (False, True):
    for length, block in ((200, 256), (1000, 128)):
      for layer in (0, 3):
        mask = splash.sparse_mask(kind, cfg, length, causal, layer, -(-length // block) * block)
        got = _blockwise(mask, block)[:length, :length]
        np.testing.assert_array_equal(got, kinds.pattern(kind, cfg, length, causal, layer))
  bigbird = dict(SPARSE)["bigbird"]
  assert splash.sparse_mask("bigbird", bigbird, 256, False, 0) != splash.sparse_mask(
      "bigbird", bigbird, 256, False, 1)
  with pytest.raises(TypeError, match="layer index as an int"):
    splash.sparse_mask("bigbird", bigbird, 256, False, jnp.int32(1))
  with pytest.raises(ValueError, match="'dense'"):
    splash.sparse_mask("dense", cfg, 256, False)


def test_mesh_path_equals_plain_and_reuses_kernels_across_traces():
  """Under a 1x1x1 mesh the kernel runs in shard_map; the cached kernel serves a new trace."""
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  q, k, v, _ = _qkv(200, 200)
  seg = _segments(*SELF_SEGMENTS)
  fn = lambda q, k, v, seg: splash.dense(q, k, v, seg, causal=True, block_q=128, block_kv=128,
                                         interpret=True)
  plain = jax.jit(fn)(q, k, v, seg)
  with sharding.use_mesh(mesh):
    sharded = jax.jit(fn)(q, k, v, seg)
    first_row = jax.jit(fn)(q[:1], k[:1], v[:1], seg[:1])  # a new trace, the same kernel
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(plain), atol=1e-6)
  np.testing.assert_allclose(np.asarray(first_row), np.asarray(plain[:1]), atol=1e-6)


def test_every_kind_reaches_splash_through_the_kinds_table():
  # Each Kind in KINDS carries its splash mask (and splash's facts about it); splash and
  # the dispatcher read them there, with no list of kinds of their own.
  cfg = AttentionConfig(window=24, stride=32, summary=4, block_size=16, window_blocks=3,
                        global_blocks=1, random_blocks=2, global_positions="0-3,50")
  for name, kind in kinds.KINDS.items():
    assert kind.splash_mask is not None, f"{name}: no splash mask in its Kind"
    for causal in (False, True):
      for length in (96, 100):
        want = kinds.pattern(name, cfg, length, causal, 1)
        mask = kind.splash_mask(cfg, length, causal, 1, n=length)
        np.testing.assert_array_equal(np.asarray(mask[0:length, 0:length]), want, err_msg=name)
        padded = splash.sparse_mask(name, cfg, length, causal, 1, 128)
        np.testing.assert_array_equal(np.asarray(padded[0:length, 0:length]), want,
                                      err_msg=name)
        if kind.splash_packed:  # one mask for every example of a packed row: the same
          np.testing.assert_array_equal(np.asarray(mask[30:80, 30:80]),  # at every offset
                                        kinds.pattern(name, cfg, 50, causal, 1), err_msg=name)
    limit = splash.sparse_block_limit(name, cfg)
    assert splash.BLOCK <= limit <= splash.MAX_BLOCK and limit & (limit - 1) == 0
    choice = dispatch.choose(name, causal=False, cross=False, dtype=jnp.bfloat16, head_dim=64,
                             bias=False, block_size=16, platform="tpu")
    assert (choice.kernel == "splash") == kind.splash_packed, (name, choice)


def test_block_sizes_follow_the_length():
  # The largest power of two in [128, 512] dividing the length rounded up to 128.
  assert [splash.block_size(n) for n in (1, 200, 384, 640, 768, 1000, 4096, 4224)] == [
      128, 256, 128, 128, 256, 512, 512, 128]
  assert splash.block_size(4096, limit=256) == 256
  assert splash.sparse_block_limit("bigbird", AttentionConfig(block_size=64)) == 128
  assert splash.sparse_block_limit("bigbird", AttentionConfig(block_size=256)) == 256
  assert splash.sparse_block_limit("bigbird", AttentionConfig(block_size=1024)) == 512
  assert splash.sparse_block_limit("strided", AttentionConfig(block_size=64)) == 512
  fused = splash.block_sizes(512, 512, 4096)
  assert fused.use_fused_bwd_kernel and fused.block_q_dq is None and fused.block_kv_dkv == 512
  split = splash.block_sizes(256, 512, 8192)
  assert not split.use_fused_bwd_kernel and (split.block_q_dq, split.block_kv_dq) == (256, 512)
  with pytest.raises(ValueError, match="block_q=100"):
    splash.block_sizes(100, 128, 256)
  assert splash._kernel.cache_info().maxsize is not None  # bounded, whatever the lengths


def test_splash_is_used_only_where_it_can_run():
  assert not splash.usable(256)  # this CPU backend: the blocked/XLA kernels run instead
  assert "TPU" in splash.why_not()
  assert splash.usable(200, interpret=True) and splash.why_not(interpret=True) == ""
  bias = object()  # T5's relative position bias
  assert not splash.usable(256, interpret=True, bias=bias)
  assert "relative position bias" in splash.why_not(interpret=True, bias=bias)
