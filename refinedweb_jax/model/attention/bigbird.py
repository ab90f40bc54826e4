"""bigbird (Zaheer et al. 2020): block-sparse window, global and random blocks.

In blocks of `block_size` tokens of an example, query block qb sees key blocks
|qb - kb| <= window_blocks // 2, the first `global_blocks` blocks, and
`random_blocks` random others; the global blocks' queries see every key.
"""

import functools

import jax.numpy as jnp
import numpy as np

from refinedweb_jax.model.attention import blocked, masks
from refinedweb_jax.model.attention.spec import Kind, Size, label

GLOBAL_BLOCKS = Size("global_blocks", 1, "bigbird: first blocks that see and are seen by all",
                     minimum=0)
WINDOW_BLOCKS = Size("window_blocks", 3, "bigbird: key blocks around the query's (odd)",
                     minimum=1)
RANDOM_BLOCKS = Size("random_blocks", 3, "bigbird: random key blocks per query block",
                     minimum=0)
_NONE = np.uint32(0xFFFFFFFF)  # sorts after every candidate's 31-bit key


def _seed_word(seed, xp):
  """The seed's uint32 term of the hash; a traced seed (a scanned layer's) wraps the same way."""
  if isinstance(seed, (int, np.integer)):
    return xp.uint32((int(seed) * 0xC2B2AE3D + 0x27D4EB2F) & 0xFFFFFFFF)
  return jnp.asarray(seed).astype(jnp.uint32) * jnp.uint32(0xC2B2AE3D) + jnp.uint32(0x27D4EB2F)


def _hash(seed, query_block, key_block, xp):
  """A 31-bit key per (query block, key block): the same in NumPy and JAX (uint32 wrap-around)."""
  x = (xp.asarray(query_block).astype(xp.uint32) * xp.uint32(0x9E3779B1)) ^ (
      xp.asarray(key_block).astype(xp.uint32) * xp.uint32(0x85EBCA77)) ^ _seed_word(seed, xp)
  x = (x ^ (x >> 16)) * xp.uint32(0x85EBCA6B)
  x = (x ^ (x >> 13)) * xp.uint32(0xC2B2AE35)
  return (x ^ (x >> 16)) >> 1


def random_blocks(cfg, own_qb, num_blocks, candidates: int, causal: bool, xp=jnp,
                  layer=0):
  """Each query block's random key blocks, (own block numbers, valid) [..., random_blocks].

  The candidates are the example's blocks outside the window and the global blocks
  (and after the query block, if causal); the `random_blocks` with the smallest hash
  keys are taken, so a causal block's picks do not depend on the example's length.
  Layer i draws with seed + i (an int, or traced inside a scan over layers).
  """
  kb = xp.arange(candidates)
  qb = own_qb[..., None]
  ok = (xp.abs(kb - qb) > cfg.window_blocks // 2) & (kb >= cfg.global_blocks) & (
      kb < num_blocks[..., None])
  if causal:
    ok &= kb <= qb
  keys = xp.where(ok, _hash(cfg.seed + layer, qb, kb, xp), _NONE)
  order = xp.argsort(keys, axis=-1, stable=True)[..., : cfg.random_blocks]
  picked = xp.take_along_axis(keys, order, axis=-1)
  return order, picked != _NONE


@functools.lru_cache(maxsize=64)
def _random_table(cfg, num_blocks: int, causal: bool, layer: int = 0) -> np.ndarray:
  """bool [query block, key block] of an example of `num_blocks` blocks (NumPy, for `allowed`)."""
  picks, ok = random_blocks(cfg, np.arange(num_blocks), np.full(num_blocks, num_blocks),
                            num_blocks, causal, xp=np, layer=layer)
  table = np.zeros((num_blocks, num_blocks), bool)
  rows = np.repeat(np.arange(num_blocks)[:, None], picks.shape[1], 1)
  table[rows[ok], picks[ok]] = True
  return table


def _traced_random_table(cfg, num_blocks: int, causal: bool, layer) -> jnp.ndarray:
  """_random_table for a traced layer index (a decoding step inside a scan over layers)."""
  picks, ok = random_blocks(cfg, jnp.arange(num_blocks), jnp.full(num_blocks, num_blocks),
                            num_blocks, causal, layer=layer)
  hit = (picks[..., None] == jnp.arange(num_blocks)) & ok[..., None]
  return jnp.any(hit, axis=1)


def allowed(cfg, i, j, n, causal, layer=0):
  b, half = cfg.block_size, cfg.window_blocks // 2
  qb, kb = i // b, j // b
  blocks = -(-int(n) // b)
  rand = (jnp.asarray(_random_table(cfg, blocks, causal, int(layer)))
          if isinstance(layer, (int, np.integer)) else
          _traced_random_table(cfg, blocks, causal, layer))
  m = ((jnp.abs(qb - kb) <= half) | (kb < cfg.global_blocks) | (qb < cfg.global_blocks)
       | rand[jnp.clip(qb, 0, rand.shape[0] - 1), jnp.clip(kb, 0, rand.shape[1] - 1)])
  return m & ((j <= i) if causal else True)


def attend(cfg, q, k, v, lay, causal):
  half, g = cfg.window_blocks // 2, cfg.global_blocks
  own, first, count = lay.own_block_BxR, lay.first_block_BxR, lay.num_blocks_BxR
  nb = lay.num_query_blocks
  # Key blocks of each query block, in the example's own block numbers: the window,
  # the global blocks the window does not hold, and the random picks (disjoint).
  window = own[..., None] + np.arange(-half, half + 1)
  glob = np.arange(g)[None, None, :] + jnp.zeros_like(own)[..., None]
  rand, rand_ok = random_blocks(cfg, own, count, nb, causal, layer=lay.layer)
  table = jnp.concatenate([window, glob, rand], axis=-1)
  valid = jnp.concatenate([(window >= 0) & (window < count[..., None]),
                           (glob < count[..., None]) & (jnp.abs(glob - own[..., None]) > half),
                           rand_ok], axis=-1)
  if causal:
    valid &= table <= own[..., None]
  table = jnp.clip(first[..., None] + table, 0, nb - 1)
  out, _ = blocked.blocked_part(q, k, v, lay, table, valid, None, causal, cfg.query_chunk)
  return blocked.global_rows(out, q, k, v, lay, np.arange(g * cfg.block_size), causal)


def splash_mask(cfg, length, causal, layer=0, n=None):
  """Splash mask, length x length: `allowed` for an example of n (default length) tokens at row 0.

  layer: a Python int (the random blocks are drawn with seed + layer). Not causal, the
  random blocks come from the example's n tokens: exact for a shorter example only if
  it has as many blocks.
  """
  if not isinstance(layer, (int, np.integer)):
    raise TypeError(f"bigbird's splash mask needs the layer index as an int, got {layer!r}")
  n = length if n is None else n
  b, half, g = cfg.block_size, cfg.window_blocks // 2, cfg.global_blocks
  blocks = -(-int(n) // b)
  rand = _random_table(cfg, blocks, causal, int(layer))

  qb, kb = np.ogrid[:-(-length // b), :-(-length // b)]
  # allowed without the causal part, on block numbers (those past the example's last
  # block are its last block's)
  table = ((np.abs(qb - kb) <= half) | (kb < g) | (qb < g)
           | rand[np.minimum(qb, blocks - 1), np.minimum(kb, blocks - 1)])

  def rule(i, j):  # allowed, in NumPy
    m = table[i // b, j // b]
    return m & (j <= i) if causal else m

  def chunk(rows, cols):  # the blocks it covers, where it cuts them, the offset
    q0, q1, k0, k1 = rows[0] // b, rows[-1] // b + 1, cols[0] // b, cols[-1] // b + 1
    return (rows.size, cols.size, rows[0] % b, cols[0] % b, causal and rows[0] - cols[0],
            q1 - q0, table[q0:q1, k0:k1].tobytes())

  return masks.PatternMask((length, length), rule, ("bigbird", cfg, causal, int(layer), blocks),
                            chunk)


def check(cfg, where):
  if cfg.window_blocks % 2 == 0:
    raise ValueError(f"{label(where, 'window_blocks')} must be odd, got {cfg.window_blocks}")


def splash_block(cfg):
  """The largest splash block: one that does not straddle BigBird's own blocks.

  A splash block over several BigBird blocks holds a random mix of their random picks,
  so nearly every partly-set block would differ and be stored; within one BigBird
  block (or two of 64) there are a handful.
  """
  return cfg.block_size & -cfg.block_size  # the largest power of two dividing it


# The block grid, the global blocks and the random picks are the example's own:
# examples start on block boundaries. The random blocks are drawn among the example's
# blocks: a position's keys depend on its length.
KIND = Kind("bigbird", sizes=(GLOBAL_BLOCKS, WINDOW_BLOCKS, RANDOM_BLOCKS, blocked.SEED,
                              blocked.BLOCK_SIZE, blocked.QUERY_CHUNK),
            allowed=allowed, attend=attend, check=check, aligned=True, length_dependent=True,
            splash_mask=splash_mask, splash_block=splash_block)
