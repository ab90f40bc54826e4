"""local: every query sees the keys within `window` positions on either side."""

import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

from refinedweb_jax.model.attention import blocked
from refinedweb_jax.model.attention.spec import Kind, Size

WINDOW = Size("window", 256, "keys with |i - j| < window", minimum=1)


def in_window(cfg, i, j):
  """The sliding window: |i - j| < window (exclusive: window - 1 keys on each side)."""
  return jnp.abs(i - j) < cfg.window


def allowed(cfg, i, j, n, causal, layer=0):
  del n, layer  # the same pattern in every layer
  return in_window(cfg, i, j) & ((j <= i) if causal else True)


def window_part(cfg, q, k, v, lay, causal):
  """The blocked part of a sliding window: the key blocks it can reach on either side."""
  reach = -(-(cfg.window - 1) // cfg.block_size)
  table, valid = blocked.relative_table(reach, lay.num_query_blocks, causal)
  rule = lambda i, j: in_window(cfg, i, j)
  return blocked.blocked_part(q, k, v, lay, table, valid, rule, causal, cfg.query_chunk)


def attend(cfg, q, k, v, lay, causal):
  return window_part(cfg, q, k, v, lay, causal)[0]


def splash_mask(cfg, length, causal, layer=0, n=None):
  """Splash's own local mask, length x length (the same for every layer and example length)."""
  del layer, n
  side = cfg.window - 1
  return sm.LocalMask((length, length), (side, 0 if causal else side), 0)


# The window is the same at every offset: splash's one mask is exact on packed rows too.
KIND = Kind("local", sizes=(WINDOW, blocked.BLOCK_SIZE, blocked.QUERY_CHUNK), allowed=allowed,
            attend=attend, splash_mask=splash_mask, splash_packed=True)
