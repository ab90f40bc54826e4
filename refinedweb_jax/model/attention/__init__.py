"""Attention: dense (dense.py), the sparse kinds (kinds.py, one module each) and splash.

self_attention picks the kernel for a layer's kind; on TPU, dense causal and `local`
self-attention run through Pallas splash attention (splash.py), except with T5's
relative position bias (relative.py), which splash cannot add: those layers say so
once and run the XLA or blocked kernel.
"""

import functools
import logging

import jax.numpy as jnp

from refinedweb_jax.model.attention import dense, kinds, splash

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _say_no_splash(kind: str, length: int):
  log.warning("splash attention cannot add T5's relative position bias: %s attention over %d "
              "tokens runs on the %s kernel instead", kind, length,
              "XLA" if kind == "dense" else "blocked")


def self_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, *, kind: str, causal: bool,
                   cfg=None, implementation: str = "xla", bias=None, layer=0):
  """Self-attention of one kind: `dense` builds the N x N mask, sparse kinds never do.

  cfg: the layer's AttentionConfig (sparse kinds). Packed rows give every example
  the pattern it has alone. bias: T5's relative position bias (relative.RelativeBias)
  or None; within an example, offsets of row indices are offsets of own positions.
  layer: the layer's index (an int, or traced in a scan over layers).
  """
  length = q_BxNxHxK.shape[1]
  if kind == "dense":
    make_mask = (lambda cfg, length, causal: splash.causal_mask(length)) if causal else None
  elif kind in kinds.KINDS:
    make_mask = kinds.KINDS[kind].splash_mask
  else:
    raise ValueError(f"unknown attention kind {kind!r}; allowed: "
                     f"{', '.join(kinds.ATTENTION_KINDS)}")
  if make_mask is not None and splash.usable(length):
    if bias is None:
      return splash.attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN,
                              make_mask(cfg, length, causal))
    _say_no_splash(kind, length)
  if kind == "dense":
    mask = dense.make_attention_mask(segment_ids_BxN, segment_ids_BxN, causal=causal)
    row = jnp.arange(length)
    return dense.dense_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, mask,
                                 implementation=implementation,
                                 bias=None if bias is None else bias.between(row, row)[None])
  return kinds.attend(kind, cfg, q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN,
                      causal=causal, bias=bias, layer=layer)


def cross_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, q_segments_BxT, kv_segments_BxS, *,
                    implementation: str = "xla"):
  """Dense cross-attention: each query sees the keys of its own example, none of the padding."""
  mask = dense.make_attention_mask(q_segments_BxT, kv_segments_BxS, causal=False)
  return dense.dense_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask,
                               implementation=implementation)
