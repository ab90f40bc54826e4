"""The kernels a model layer gets on this backend, in the dtype training computes in there,
against float32 references: sparse == masked dense, the fused dense kernel == plain dense
on packed rows (with T5's bias), cached == full decoding. On a CPU these are the XLA
paths; benchmarks/accelerator_check.sh runs the same file on a GPU or TPU, where the
dispatcher picks Pallas flash, splash or the blocked Pallas kernel and bfloat16. Each
test compiles one executable.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax import backend
from refinedweb_jax.model import attention, decode
from refinedweb_jax.model.attention import dense, kinds, relative
from refinedweb_jax.model.attention.kinds import AttentionConfig
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder
import reference

DTYPE = jnp.dtype(backend.auto_dtype())
# bf16 inputs carry ~3 significant digits; the kernels accumulate in fp32 either way.
ATOL = 3e-2 if DTYPE == jnp.bfloat16 else 1e-4
LENGTH, HEAD_DIM = 256, 64  # the sizes the fused GPU kernels take (powers of two >= 16)

CONFIGS = {
    "local": ("local", AttentionConfig(window=48, block_size=32)),
    "strided_fixed": ("strided", AttentionConfig(stride=64, summary=4, block_size=32)),
    "strided_strided": ("strided", AttentionConfig(stride=64, variant="strided", block_size=32)),
    "bigbird": ("bigbird", AttentionConfig(block_size=32, global_blocks=1, window_blocks=3,
                                           random_blocks=2, seed=3)),
    "global_local": ("global_local", AttentionConfig(window=40, block_size=32,
                                                     global_positions="0,1,97")),
}


def _qkv(length=LENGTH, batch=2, heads=4, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  return [jax.random.normal(k, (batch, length, heads, HEAD_DIM), jnp.float32) for k in keys]


def _segments(length=LENGTH, block=32):
  """Row 0: one example and padding; row 1: three examples packed on block boundaries."""
  seg = np.zeros((2, length), np.int32)
  seg[0, : length - 21] = 1
  at = 0
  for number, n in enumerate((length // 3 - 5, 40, length // 3), start=1):
    seg[1, at: at + n] = number
    at += -(-n // block) * block
  return seg


def _mask(seg, causal, kind=None, cfg=None):
  """[B, 1, N, N]: each example's own pattern (dense: all of it) on the block diagonal."""
  mask = np.zeros(seg.shape + seg.shape[1:], bool)
  for row in range(seg.shape[0]):
    for number in set(seg[row].tolist()) - {0}:
      where = np.flatnonzero(seg[row] == number)
      n = len(where)
      own = (kinds.pattern(kind, cfg, n, causal) if kind else
             np.tril(np.ones((n, n), bool)) if causal else np.ones((n, n), bool))
      mask[row][np.ix_(where, where)] = own
  return mask[:, None]


def _bias(causal, heads=4):
  table = jax.random.normal(jax.random.key(5), (32, heads))
  return relative.RelativeBias(table, bidirectional=not causal, max_distance=128)


def _compare(cases, seg):
  """Outputs and q/k/v gradients of each case (layer, reference, [B, N] real queries), all
  in one jitted function (one executable per test): the layer's inputs cast to DTYPE, the
  reference in float32, compared on each case's real query positions."""

  def cast(fn):
    return lambda q, k, v: fn(q.astype(DTYPE), k.astype(DTYPE), v.astype(DTYPE)).astype(
        jnp.float32)

  def pair(q, k, v, cotangent, layer_fn, reference_fn, real):
    ct = cotangent * real[:, :, None, None]
    return [(fn(q, k, v), jax.grad(lambda *a: jnp.sum(fn(*a) * ct), (0, 1, 2))(q, k, v))
            for fn in (cast(layer_fn), reference_fn)]

  run = jax.jit(lambda *qkvc: [pair(*qkvc, *case) for case in cases.values()])
  results = run(*_qkv(seg.shape[1]))
  for (name, (_, _, real)), ((out, grads), (out_ref, grads_ref)) in zip(cases.items(), results):
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(out_ref)[real], atol=ATOL,
                               err_msg=name)
    for g, g_ref in zip(grads, grads_ref):
      np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), atol=ATOL, err_msg=name)


# On a CPU the sparse kinds run the float32 XLA path sparse_attention_test checks for every
# kind at smaller sizes; here two of them, the others on accelerators.
SPARSE = sorted(CONFIGS) if backend.platform() != "cpu" else ["bigbird", "local"]


@pytest.mark.parametrize("causal", [False, True])
def test_sparse_layers_equal_masked_dense(causal):
  seg = _segments()
  cases = {}
  for name in SPARSE:
    kind, cfg = CONFIGS[name]
    layer = functools.partial(_self_attention, seg=seg, kind=kind, causal=causal, cfg=cfg)
    ref = functools.partial(dense.einsum_attention, mask_Bx1xTxS=_mask(seg, causal, kind, cfg))
    cases[name] = (layer, ref, seg != 0)
  _compare(cases, seg)


def test_dense_layers_equal_plain_dense_on_packed_rows():
  """The dense kernel auto picks (flash on GPU, splash on TPU, XLA on CPU) on packed rows:
  encoder self-attention, causal decoder self-attention with T5's bias, cross-attention."""
  seg = _segments()
  rows = jnp.arange(LENGTH)
  bias = _bias(causal=True)
  kv_seg = np.roll(seg, 3, axis=1)  # keys packed at other offsets than the queries
  kv_seg[:, :3] = 0
  cross_mask = (seg[:, :, None] == kv_seg[:, None, :]) & (seg[:, :, None] != 0)
  cases = {
      "encoder self-attention": (
          functools.partial(_self_attention, seg=seg, kind="dense", causal=False),
          functools.partial(dense.einsum_attention, mask_Bx1xTxS=_mask(seg, False)), seg != 0),
      "decoder self-attention with T5's bias": (
          functools.partial(_self_attention, seg=seg, kind="dense", causal=True, bias=bias),
          functools.partial(dense.einsum_attention, mask_Bx1xTxS=_mask(seg, True),
                            bias=bias.between(rows, rows)[None]), seg != 0),
      "cross-attention": (
          lambda q, k, v: attention.cross_attention(q, k, v, jnp.asarray(seg),
                                                    jnp.asarray(kv_seg)),
          functools.partial(dense.einsum_attention, mask_Bx1xTxS=cross_mask[:, None]),
          cross_mask.any(-1)),
  }
  _compare(cases, seg)


def _self_attention(q, k, v, *, seg, **kwargs):
  return attention.self_attention(q, k, v, jnp.asarray(seg), **kwargs)


def test_cached_decoding_equals_full_decoding():
  """The KV-cached decoder against re-running the whole decoder each step, in float32 (a
  bf16 argmax may break ties either way)."""
  config = ModelConfig.from_preset("tiny", vocab_size=512, dtype="float32")
  model = EncoderDecoder(config)
  inputs = jax.random.randint(jax.random.key(1), (3, 12), 2, 512).at[1, 7:].set(0)
  params = jax.jit(model.init)(jax.random.key(0), inputs, inputs[:, :5])["params"]
  params = jax.tree.map(lambda x: x * 3.0, params)  # sharper: outputs vary step to step
  fn = decode.make_decode_fn(model, decode.Decoding(max_new_tokens=10), eos_id=1)
  cached = np.asarray(fn(params, inputs, jax.random.key(0)))
  full = reference.full_forward_greedy(model, params, inputs, max_length=10, eos_id=1)
  np.testing.assert_array_equal(cached, np.asarray(full))
  assert len(np.unique(cached)) > 3
