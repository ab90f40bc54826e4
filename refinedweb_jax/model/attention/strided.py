"""strided (Child et al. 2019): a local pattern plus keys every `stride` positions.

variant "fixed": each query sees its own stride period and the last `summary`
positions of every period; variant "strided": keys within `stride` positions
and every stride-th key before and after.
"""

import jax
import jax.numpy as jnp
import numpy as np

from refinedweb_jax.model.attention import blocked, masks
from refinedweb_jax.model.attention.spec import Kind, Size, label

STRIDE = Size("stride", 256, "period of the strided keys (a multiple of block_size)", minimum=1)
SUMMARY = Size("summary", 8, "fixed variant: the last positions of each period all see",
               minimum=1)
VARIANT = Size("variant", "fixed", "fixed (period + summary) or strided (window + every "
               "stride-th key)", choices=("fixed", "strided"))


def _same_period(cfg, i, j):
  return (i // cfg.stride) == (j // cfg.stride)


def _summary(cfg, j):
  return (j % cfg.stride) >= cfg.stride - cfg.summary


def allowed(cfg, i, j, n, causal, layer=0):
  del n, layer  # the same pattern in every layer
  if cfg.variant == "fixed":
    m = _same_period(cfg, i, j) | _summary(cfg, j)
  else:
    m = (jnp.abs(i - j) < cfg.stride) | (((i - j) % cfg.stride) == 0)
  return m & ((j <= i) if causal else True)


def attend(cfg, q, k, v, lay, causal):
  if cfg.variant == "strided":
    reach = -(-(cfg.stride - 1) // cfg.block_size)
    table, valid = blocked.relative_table(reach, lay.num_query_blocks, causal)
    window = lambda i, j: jnp.abs(i - j) < cfg.stride
    return blocked.merge([
        blocked.blocked_part(q, k, v, lay, table, valid, window, causal, cfg.query_chunk),
        blocked.residue_part(q, k, v, lay, cfg.stride, causal)])
  # Fixed: the key blocks of the query block's own period (of its own example) ...
  per = cfg.stride // cfg.block_size
  own = lay.own_block_BxR
  start = own - own % per
  table = (lay.first_block_BxR + start)[..., None] + np.arange(per)
  valid = (start[..., None] + np.arange(per)) < lay.num_blocks_BxR[..., None]
  period = blocked.blocked_part(q, k, v, lay, jnp.minimum(table, lay.num_query_blocks - 1),
                                valid, lambda i, j: _same_period(cfg, i, j), causal,
                                cfg.query_chunk, own_positions=True)
  # ... and every summary position of its example outside that period. At most
  # n * summary / stride of a row's n tokens are summary positions.
  summary = (lay.segment_BxN > 0) & _summary(cfg, lay.position_BxN)
  size = max(1, lay.segment_BxN.shape[1] * cfg.summary // cfg.stride)
  index = jax.vmap(lambda m: jnp.nonzero(m, size=size, fill_value=0)[0])(summary)
  found = jnp.arange(size)[None, :] < jnp.sum(summary, axis=1, keepdims=True)
  rest = blocked.keys_part(q, k, v, lay, index, found,
                           lambda i, j: ~_same_period(cfg, i, j), causal, own_positions=True)
  return blocked.merge([period, rest])


def splash_mask(cfg, length, causal, layer=0, n=None):
  """Splash mask, length x length: `allowed` on row indices, one example starting at row 0."""
  del layer, n  # the same pattern in every layer, for every example length

  def rule(i, j):  # allowed, in NumPy
    if cfg.variant == "fixed":
      m = _same_period(cfg, i, j) | _summary(cfg, j)
    else:
      m = (np.abs(i - j) < cfg.stride) | (((i - j) % cfg.stride) == 0)
    return m & (j <= i) if causal else m

  # Both variants are the same after shifting i and j by the stride: a block is fixed by
  # its offset and where its rows start in their period.
  chunk = lambda rows, cols: (rows.size, cols.size, rows[0] - cols[0], rows[0] % cfg.stride)
  return masks.PatternMask((length, length), rule, ("strided", cfg, causal), chunk)


def check(cfg, where):
  if cfg.stride % cfg.block_size:
    raise ValueError(f"{label(where, 'stride')}={cfg.stride} must be a multiple of "
                     f"{label(where, 'block_size')}={cfg.block_size}")
  if cfg.variant == "fixed" and cfg.summary > cfg.stride:
    raise ValueError(f"{label(where, 'summary')}={cfg.summary} must be <= "
                     f"{label(where, 'stride')}={cfg.stride}")


# The fixed variant's periods follow each example's own positions: examples start on
# block boundaries (the stride is a multiple of the block).
KIND = Kind("strided", sizes=(STRIDE, SUMMARY, VARIANT, blocked.BLOCK_SIZE, blocked.QUERY_CHUNK),
            allowed=allowed, attend=attend, check=check, aligned=True, splash_mask=splash_mask)
