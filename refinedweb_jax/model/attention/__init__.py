"""Attention: dense (dense.py), the sparse kinds (kinds.py, one module each) and their kernels.

self_attention and cross_attention run each layer on the kernel dispatch.choose picks
for the backend, dtype and pattern: XLA, Pallas flash (flash.py, GPU), splash (TPU),
cuDNN, or the blocked sparse kernel (blocked.py). Segments (packing and padding) reach
the fused kernels as segment ids, never as a dense mask.
"""

import jax
import jax.numpy as jnp

from refinedweb_jax.model.attention import dense, dispatch, flash, kinds, splash

FLASH_BLOCK = 128  # Pallas flash's query and key block (smaller lengths: their power of two)


def self_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, *, kind: str, causal: bool,
                   cfg=None, implementation: str = "auto", bias=None, layer=0,
                   packed: bool = True):
  """Self-attention of one kind: `dense` over the whole row, sparse kinds never O(N^2).

  cfg: the model's AttentionConfig (sparse kinds). Packed rows give every example
  the pattern it has alone. bias: T5's relative position bias (relative.RelativeBias)
  or None; within an example, offsets of row indices are offsets of own positions.
  layer: the layer's index (an int, or traced in a scan over layers). packed: whether a
  row may hold several examples (then no kernel that takes only lengths runs it).
  """
  if kind != "dense" and kind not in kinds.KINDS:
    raise ValueError(f"unknown attention kind {kind!r}; allowed: "
                     f"{', '.join(kinds.ATTENTION_KINDS)}")
  choice = dispatch.choose(kind, causal=causal, cross=False, dtype=q_BxNxHxK.dtype,
                           head_dim=q_BxNxHxK.shape[-1], bias=bias is not None,
                           implementation=implementation,
                           block_size=None if cfg is None else cfg.block_size, packed=packed)
  dispatch.record(f"{'decoder' if causal else 'encoder'} self-attention ({kind})", choice)
  if kind == "dense":
    return _dense(choice, q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, segment_ids_BxN,
                  causal=causal, bias=bias, cross=False)
  if choice.kernel == "splash":
    return splash.sparse(kind, cfg, q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN,
                         causal=causal, layer=layer, interpret=choice.interpret)
  return kinds.attend(kind, cfg, q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN,
                      causal=causal, bias=bias, layer=layer,
                      pallas=choice.kernel == "blocked+pallas")


def cross_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, q_segments_BxT, kv_segments_BxS, *,
                    implementation: str = "auto", packed: bool = True):
  """Dense cross-attention: each query sees the keys of its own example (segment), none of
  the padding. packed: as in self_attention."""
  choice = dispatch.choose("dense", causal=False, cross=True, dtype=q_BxTxHxK.dtype,
                           head_dim=q_BxTxHxK.shape[-1], bias=False,
                           implementation=implementation, packed=packed)
  dispatch.record("cross-attention", choice)
  return _dense(choice, q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, q_segments_BxT, kv_segments_BxS,
                causal=False, bias=None, cross=True)


def _dense(choice, q, k, v, q_segments, kv_segments, *, causal: bool, bias, cross: bool):
  """Dense attention within segments on the chosen kernel."""
  if choice.kernel == "splash":
    return splash.dense(q, k, v, q_segments, kv_segments if cross else None, causal=causal,
                        interpret=choice.interpret)
  if choice.kernel == "pallas":
    return _flash_dense(q, k, v, q_segments, kv_segments, causal, bias, choice.interpret)
  if choice.kernel == "cudnn":  # rows hold one example each: lengths say where it ends
    lengths = lambda seg: jnp.sum(seg != 0, axis=1).astype(jnp.int32)
    return jax.nn.dot_product_attention(
        q, k, v, is_causal=causal, query_seq_lengths=lengths(q_segments),
        key_value_seq_lengths=lengths(kv_segments), implementation="cudnn")
  mask = dense.make_attention_mask(q_segments, kv_segments, causal=causal)
  if bias is not None:
    rows = jnp.arange(q.shape[1])
    bias = bias.between(rows, rows)[None]
  return dense.dense_attention(q, k, v, mask, implementation=choice.kernel, bias=bias)


def _flash_dense(q, k, v, q_segments, kv_segments, causal, bias, interpret):
  """Pallas flash over every key block that can hold a same-segment key (flash.dense_table),
  lengths padded up to the block with segment 0 and cut back."""
  t, s = q.shape[1], k.shape[1]
  block = lambda n: min(FLASH_BLOCK, max(16, 1 << (n - 1).bit_length()))
  bq, bk = block(t), block(s)
  pad = lambda x, n, b: jnp.pad(x, [(0, 0), (0, -n % b)] + [(0, 0)] * (x.ndim - 2))
  q, q_segments = pad(q, t, bq), pad(q_segments, t, bq)
  k, v, kv_segments = pad(k, s, bk), pad(v, s, bk), pad(kv_segments, s, bk)
  table, valid = flash.dense_table(q_segments, kv_segments, bq, bk, causal)
  out, _ = flash.block_attention(q, k, v, q_segments, kv_segments, table, valid, block_q=bq,
                                 block_k=bk, causal=causal, bias=bias, interpret=interpret)
  return out[:, :t]
