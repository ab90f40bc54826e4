"""Dense attention as pure functions: masks, rotary embeddings and the softmax kernels.

Shapes: B batch, T query length, S key length, H heads, K head dim.
Segment ids follow the packing convention: 0 is padding, 1.. are examples.
"""

import jax
import jax.numpy as jnp

DENSE_IMPLEMENTATIONS = ("xla", "cudnn", "einsum")  # dense_attention's; dispatch.py names all


def make_attention_mask(q_segment_ids_BxT, kv_segment_ids_BxS, *, causal: bool):
  """Boolean mask_Bx1xTxS: same segment, key not padding, and (causal) key not after query."""
  mask = q_segment_ids_BxT[:, :, None] == kv_segment_ids_BxS[:, None, :]
  # Padding keys are never attended, even by padding queries: otherwise padding
  # rows would mix each other and a padding-only batch row could look valid.
  mask &= (kv_segment_ids_BxS != 0)[:, None, :]
  if causal:
    q_index = jnp.arange(q_segment_ids_BxT.shape[1])[None, :]
    kv_index = jnp.arange(kv_segment_ids_BxS.shape[1])[None, :]
    mask &= kv_index[:, None, :] <= q_index[:, :, None]
  return mask[:, None, :, :]


def rotary_embedding(x_BxTxHxK, positions_BxT, max_wavelength: float = 10_000.0):
  """Applies RoPE (Su et al. 2021) on the last axis, rotating halves."""
  head_dim = x_BxTxHxK.shape[-1]
  if head_dim % 2:
    raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
  half = head_dim // 2
  inv_freq = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_BxTx1xK2 = positions_BxT.astype(jnp.float32)[:, :, None, None] * inv_freq
  sin, cos = jnp.sin(angles_BxTx1xK2), jnp.cos(angles_BxTx1xK2)
  x1, x2 = jnp.split(x_BxTxHxK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxHxK.dtype)


def _softmax_attention(q_BxTxHxK, k, v, mask_Bx1xTxS, kv_layout: str, bias=None):
  """softmax(QK^T/sqrt(K) + bias + mask) V with keys/values laid out as `kv_layout` (einsum letters)."""
  scale = q_BxTxHxK.shape[-1] ** -0.5
  scores_BxHxTxS = jnp.einsum(f"bthk,{kv_layout}->bhts", q_BxTxHxK, k,
                              preferred_element_type=jnp.float32) * scale
  if bias is not None:
    scores_BxHxTxS += bias
  if mask_Bx1xTxS is not None:
    # A finite minimum (not -inf) keeps fully masked padding rows finite.
    scores_BxHxTxS = jnp.where(mask_Bx1xTxS, scores_BxHxTxS, jnp.finfo(jnp.float32).min)
  probs_BxHxTxS = jax.nn.softmax(scores_BxHxTxS, axis=-1).astype(v.dtype)
  return jnp.einsum(f"bhts,{kv_layout}->bthk", probs_BxHxTxS, v)


def einsum_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_Bx1xTxS=None, bias=None):
  """Plain softmax(QK^T/sqrt(K) + bias + mask) V; the reference every other kernel is tested against.

  bias: float32, broadcastable to BxHxTxS (T5's relative position bias), or None.
  """
  return _softmax_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_Bx1xTxS, "bshk", bias)


def cached_attention(q_BxTxHxK, k_BxHxSxK, v_BxHxSxK, mask_Bx1xTxS, bias=None):
  """einsum_attention over a head-major key/value cache: no per-step transpose of the cache."""
  return _softmax_attention(q_BxTxHxK, k_BxHxSxK, v_BxHxSxK, mask_Bx1xTxS, "bhsk", bias)


def dense_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_Bx1xTxS=None, *,
                    implementation: str = "xla", bias=None):
  """Dense attention through jax.nn.dot_product_attention (cuDNN on GPU if asked) or einsum."""
  if implementation == "einsum":
    return einsum_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_Bx1xTxS, bias)
  if implementation not in DENSE_IMPLEMENTATIONS:
    raise ValueError(f"unknown dense attention implementation {implementation!r}; "
                     f"allowed: {', '.join(DENSE_IMPLEMENTATIONS)}")
  if bias is not None and implementation == "cudnn":  # cuDNN takes a full bias in q's dtype
    bias = jnp.broadcast_to(bias, (q_BxTxHxK.shape[0], q_BxTxHxK.shape[2], q_BxTxHxK.shape[1],
                                   k_BxSxHxK.shape[1])).astype(q_BxTxHxK.dtype)
  return jax.nn.dot_product_attention(
      q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, bias=bias, mask=mask_Bx1xTxS,
      implementation=implementation)
