"""Attention: dense (dense.py), the sparse kinds (kinds.py, one module each) and splash.

self_attention picks the kernel for a layer's kind; on TPU, dense causal and `local`
self-attention run through Pallas splash attention (splash.py).
"""

from refinedweb_jax.model.attention import dense, kinds, splash


def self_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, *, kind: str, causal: bool,
                   cfg=None, implementation: str = "xla"):
  """Self-attention of one kind: `dense` builds the N x N mask, sparse kinds never do.

  cfg: the layer's AttentionConfig (sparse kinds). Packed rows give every example
  the pattern it has alone.
  """
  length = q_BxNxHxK.shape[1]
  if kind == "dense":
    if causal and splash.usable(length):
      return splash.attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN,
                              splash.causal_mask(length))
    mask = dense.make_attention_mask(segment_ids_BxN, segment_ids_BxN, causal=causal)
    return dense.dense_attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, mask,
                                 implementation=implementation)
  elif kind in kinds.KINDS:
    make_mask = kinds.KINDS[kind].splash_mask
    if make_mask is not None and splash.usable(length):
      return splash.attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN,
                              make_mask(cfg, length, causal))
    return kinds.attend(kind, cfg, q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN,
                        causal=causal)
  raise ValueError(f"unknown attention kind {kind!r}; allowed: {', '.join(kinds.ATTENTION_KINDS)}")
