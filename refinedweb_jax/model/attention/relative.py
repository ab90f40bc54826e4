"""T5's relative position bias: a learned scalar per head for each bucket of key - query offsets.

Offsets below half the buckets (of one direction) get a bucket each; longer ones share
log-spaced buckets up to `max_distance`, and everything beyond shares the last. The
encoder's buckets are bidirectional (half for keys after the query), the decoder's
causal. Every attention path adds bias(j - i) for exactly the pairs it computes, from
the positions it already has, so no path builds an N x N table it would not build
anyway (blocked.py's parts use their blocks' offsets).
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

POSITIONS = ("rope", "t5_bias")


@functools.lru_cache(maxsize=32)
def distance_buckets(num_buckets: int, max_distance: int) -> np.ndarray:
  """The bucket of each distance 0..max_distance in one direction (int32).

  The arithmetic is T5's in float32 (Hugging Face's and Mesh TensorFlow's), so that
  the rounding at bucket boundaries is theirs.
  """
  max_exact = num_buckets // 2
  distance = np.arange(max_distance + 1)
  scaled = (np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(num_buckets - max_exact))
  large = np.minimum(max_exact + scaled.astype(np.int64), num_buckets - 1)
  return np.where(distance < max_exact, distance, large).astype(np.int32)


def buckets(relative, *, bidirectional: bool, num_buckets: int, max_distance: int):
  """T5's bucket of each key - query offset `relative` (an int array of any shape)."""
  if bidirectional:
    num_buckets //= 2
    offset = jnp.where(relative > 0, num_buckets, 0)
    distance = jnp.abs(relative)
  else:
    offset = 0
    distance = jnp.maximum(-relative, 0)
  table = jnp.asarray(distance_buckets(num_buckets, max_distance))
  return offset + table[jnp.minimum(distance, max_distance)]


def check(num_buckets: int, max_distance: int, where: str = "model"):
  """Raises unless the sizes make T5's buckets: >= 4 buckets, max distance beyond the exact ones."""
  if num_buckets < 4:
    raise ValueError(f"{where}.relative_attention_num_buckets must be >= 4, got {num_buckets}")
  if max_distance <= num_buckets // 2:
    raise ValueError(f"{where}.relative_attention_max_distance must be > "
                     f"relative_attention_num_buckets // 2 = {num_buckets // 2}, got "
                     f"{max_distance}")


@dataclasses.dataclass(frozen=True)
class RelativeBias:
  """bias(relative) -> float32 [..., H, Q, E] for key - query offsets relative [..., Q, E]."""
  table_NxH: jax.Array  # N buckets x H heads
  bidirectional: bool
  max_distance: int

  def __call__(self, relative):
    index = buckets(relative, bidirectional=self.bidirectional,
                    num_buckets=self.table_NxH.shape[0], max_distance=self.max_distance)
    values = jnp.take(self.table_NxH.astype(jnp.float32), index, axis=0)  # [..., Q, E, H]
    return jnp.moveaxis(values, -1, -3)

  def between(self, query_positions, key_positions):
    """The bias of every (query, key) pair: [..., Q] and [..., E] -> [..., H, Q, E]."""
    return self(key_positions[..., None, :] - query_positions[..., :, None])
