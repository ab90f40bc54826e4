"""Pallas splash attention (TPU) for patterns it has a mask for: dense causal and `local`.

On TPU these run through jax.experimental.pallas.ops.tpu.splash_attention, which
skips masked blocks in a fused kernel; the mask comes from the kind's definition
(Kind.splash_mask). Elsewhere the blocked kernel (kinds.py) or
jax.nn.dot_product_attention runs instead; `interpret=True` runs the splash kernel
in Pallas interpret mode (slow; used by the CPU tests).
"""

import functools
import importlib.util

import jax
import numpy as np

from refinedweb_jax import sharding

BLOCK = 128  # splash's default query/key block: lengths must be multiples of it
_KERNEL = "jax.experimental.pallas.ops.tpu.splash_attention"


def usable(length: int, *, interpret: bool = False) -> bool:
  """Whether splash can run here for this length."""
  if length % BLOCK:
    return False
  if not interpret and jax.default_backend() != "tpu":
    return False
  try:
    return importlib.util.find_spec(f"{_KERNEL}.splash_attention_kernel") is not None
  except ImportError:
    return False


def causal_mask(length: int):
  """Dense causal attention's splash mask."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  return sm.CausalMask((length, length))


@functools.lru_cache(maxsize=32)
def _kernel(head_mask, heads: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  mask = sm.MultiHeadMask([head_mask] * heads)
  return sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1, interpret=interpret)


def attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, head_mask, *,
              interpret: bool = False):
  """Attention over `head_mask` (a splash mask, the same for every head) within segments.

  Under a mesh, the kernel runs per shard (shard_map) with the activations' own
  sharding (batch and heads, from the logical-axis rules).
  """
  mesh = jax.sharding.get_abstract_mesh()
  fn = functools.partial(_local, head_mask=head_mask, interpret=interpret)
  if mesh.empty or mesh.size == 1:
    return fn(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN)
  qkv_spec = sharding.spec(("batch", "length", "heads", "kv"))
  return jax.shard_map(fn, mesh=mesh, in_specs=(qkv_spec,) * 3 + (sharding.spec(
      ("batch", "length")),), out_specs=qkv_spec, check_vma=False)(
          q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN)


def _local(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, head_mask, interpret):
  """The splash kernel on arrays local to one device, vmapped over batch."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  _, _, heads, dim = q_BxNxHxK.shape
  kernel = _kernel(head_mask, heads, interpret)
  to_heads = lambda x: x.transpose(0, 2, 1, 3)
  q = to_heads(q_BxNxHxK * np.float32(dim ** -0.5).astype(q_BxNxHxK.dtype))

  def one(q, k, v, seg):
    return kernel(q, k, v, segment_ids=sk.SegmentIds(q=seg, kv=seg))

  out = jax.vmap(one)(q, to_heads(k_BxNxHxK), to_heads(v_BxNxHxK), segment_ids_BxN)
  return to_heads(out)
