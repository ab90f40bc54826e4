"""Pallas splash attention (TPU) for the local and causal patterns.

On TPU, `local` self-attention and dense causal self-attention run through
jax.experimental.pallas.ops.tpu.splash_attention, which skips masked blocks
in a fused kernel. Elsewhere the blocked kernel of sparse_attention.py (local)
or jax.nn.dot_product_attention (causal) runs instead; `interpret=True` runs
the splash kernel in Pallas interpret mode (slow; used by the CPU tests).
"""

import functools
import importlib.util

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

BLOCK = 128  # splash's default query/key block: lengths must be multiples of it


def usable(length: int, *, interpret: bool = False) -> bool:
  """Whether splash can run here for this length."""
  if length % BLOCK:
    return False
  if not interpret and jax.default_backend() != "tpu":
    return False
  try:
    return importlib.util.find_spec(
        "jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_kernel") is not None
  except ImportError:
    return False


@functools.lru_cache(maxsize=32)
def _kernel(length: int, heads: int, window, causal: bool, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  if window is None:
    head_mask = sm.CausalMask((length, length))
  else:
    # Our window admits |i - j| < window, i.e. window - 1 keys on each side.
    head_mask = sm.LocalMask((length, length), (window - 1, 0 if causal else window - 1), 0)
  mask = sm.MultiHeadMask([head_mask] * heads)
  return sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1, interpret=interpret)


def attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, *, window=None,
              causal: bool = True, interpret: bool = False):
  """Local (window set) or causal (window None) attention through the splash kernel.

  Under a mesh, the kernel runs per shard (shard_map): batch split over
  (data, fsdp) and heads over tensor, as the activations already are.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return _local(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, window, causal, interpret)
  qkv_spec = P(("data", "fsdp"), None, "tensor", None)
  fn = functools.partial(_local, window=window, causal=causal, interpret=interpret)
  return jax.shard_map(fn, mesh=mesh, in_specs=(qkv_spec,) * 3 + (P(("data", "fsdp"), None),),
                       out_specs=qkv_spec, check_vma=False)(
                           q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN)


def _local(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, window, causal, interpret):
  """The splash kernel on arrays local to one device, vmapped over batch."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  _, length, heads, dim = q_BxNxHxK.shape
  kernel = _kernel(length, heads, window, causal, interpret)
  to_heads = lambda x: x.transpose(0, 2, 1, 3)
  q = to_heads(q_BxNxHxK * np.float32(dim ** -0.5).astype(q_BxNxHxK.dtype))

  def one(q, k, v, seg):
    return kernel(q, k, v, segment_ids=sk.SegmentIds(q=seg, kv=seg))

  out = jax.vmap(one)(q, to_heads(k_BxNxHxK), to_heads(v_BxNxHxK), segment_ids_BxN)
  return to_heads(out)
