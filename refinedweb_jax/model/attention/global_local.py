"""global_local (Longformer-style): a sliding window plus global positions.

Each query sees the keys within `window` positions; the example's positions in
`global_positions` see every key of the example and are seen by every query.
"""

import jax.numpy as jnp
import numpy as np

from refinedweb_jax.model.attention import blocked, local, masks
from refinedweb_jax.model.attention.spec import (Kind, Size, format_positions, label,
                                                 parse_positions)

GLOBAL_POSITIONS = Size("global_positions", "0-15", "global_local: own positions that see "
                        "and are seen by all, e.g. 0-15,40", parse=parse_positions)


def _positions(cfg) -> np.ndarray:
  return np.asarray(parse_positions(cfg.global_positions), np.int32)


def allowed(cfg, i, j, n, causal, layer=0):
  del n, layer  # the same pattern in every layer
  g = jnp.asarray(_positions(cfg))
  m = local.in_window(cfg, i, j) | jnp.isin(i, g) | jnp.isin(j, g)
  return m & ((j <= i) if causal else True)


def attend(cfg, q, k, v, lay, causal):
  g = _positions(cfg)
  window = local.window_part(cfg, q, k, v, lay, causal)
  # Per query block, the global keys of its example that the window does not reach.
  index = jnp.minimum(lay.first_block_BxR[..., None] * cfg.block_size + g, q.shape[1] - 1)
  found = g[None, None, :] < lay.length_BxN[:, ::cfg.block_size, None]
  far = lambda i, j: ~local.in_window(cfg, i, j)
  out = blocked.merge([window, blocked.keys_part(q, k, v, lay, index, found, far, causal)])
  return blocked.global_rows(out, q, k, v, lay, g, causal)


def splash_mask(cfg, length, causal, layer=0, n=None):
  """Splash mask, length x length: `allowed` on row indices, one example starting at row 0."""
  del layer, n  # the same pattern in every layer, for every example length
  g, is_global = _positions(cfg), np.zeros(length, bool)
  is_global[g[g < length]] = True

  def rule(i, j):  # allowed, in NumPy
    m = (np.abs(i - j) < cfg.window) | is_global[i] | is_global[j]
    return m & (j <= i) if causal else m

  def chunk(rows, cols):  # the window depends on the offset, the rest on the global positions
    inside = lambda r: tuple(np.flatnonzero(is_global[r[0]:r[-1] + 1]))
    return rows.size, cols.size, rows[0] - cols[0], inside(rows), inside(cols)

  return masks.PatternMask((length, length), rule, ("global_local", cfg, causal), chunk)


def check_length(cfg, length, where):
  bad = [p for p in parse_positions(cfg.global_positions) if p >= length]
  if bad:
    raise ValueError(f"{label(where, 'global_positions')} {format_positions(bad)} never occur in "
                     f"sequences of {length} tokens; allowed: 0..{length - 1}")


# Each example's global positions are its own: examples start on block boundaries.
KIND = Kind("global_local", sizes=(local.WINDOW, GLOBAL_POSITIONS, blocked.BLOCK_SIZE,
                                   blocked.QUERY_CHUNK),
            allowed=allowed, attend=attend, check_length=check_length, aligned=True,
            splash_mask=splash_mask)
