"""The blocked sparse-attention kernel: parts that each compute a disjoint share of a pattern.

A kind (local.py, strided.py, bigbird.py, global_local.py) builds its pattern M from
these parts, each in O(N * keys-per-query) time and memory, never as an N x N array:

  blocked_part   per query block, the key blocks of a table row (a sliding window, a
                 stride period, BigBird's window/global/random blocks), chunk by chunk;
  keys_part      a list of key positions (summary columns, global tokens), per row or
                 per query block, outside the blocked part;
  residue_part   every stride-th key, attended within residue classes;
  global_rows    queries that attend to every key of their example.

Parts are merged through their log-sum-exps (as in flash attention), so the result is
exactly softmax over M. A layout may carry T5's relative position bias
(relative.RelativeBias): each part adds it for the pairs it computes, from their
key - query offsets. Patterns are defined on each example's own positions: a
packed row gives every example the outputs it has alone. Kinds whose pattern depends
on an example's block grid or its first positions (Kind.aligned) need every example
to start on a block boundary, which the packer ensures (stream.py, pipeline.pack_rows).

Shapes: B batch, N length (a multiple of the block), H heads, K head dim, R query
blocks (N / block), C query blocks per chunk, M key blocks per query block, E keys
in a key list.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from refinedweb_jax.model.attention import masks
from refinedweb_jax.model.attention.spec import Size

BLOCK_SIZE = Size("block_size", 64, "tokens per block of the blocked kernel", minimum=1)
QUERY_CHUNK = Size("query_chunk", 0, "query blocks computed together (memory vs speed; "
                   "0: 8 on CPU, 64 on GPU/TPU)", minimum=0, pattern=False)
# Query blocks per step of the blocked part's loop: small steps fit the CPU's caches, large
# ones keep an accelerator busy (a 32k row is 64 steps of 8 blocks of 64).
AUTO_CHUNK = {"cpu": 8}
ACCELERATOR_CHUNK = 64
SEED = Size("seed", 0, "seed of the random blocks (layer i uses seed + i)", minimum=0)
_NEG = masks.NEG  # finite "minus infinity": fully masked rows stay NaN-free


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where the examples of (packed) rows lie: per token and, for aligned rows, per block.

  position/length: each token's position in its own example and that example's
  length (0 for padding). first_block/num_blocks/own_block: per query block, the
  first block of its example, the example's number of blocks and the block's
  index within it (meaningful when examples start on block boundaries). bias: T5's
  relative position bias (relative.RelativeBias), or None. layer: the layer's index (an
  int, or traced in a scan over layers), which seeds BigBird's random blocks.
  """
  segment_BxN: jax.Array
  position_BxN: jax.Array
  length_BxN: jax.Array
  block: int
  first_block_BxR: jax.Array
  num_blocks_BxR: jax.Array
  bias: Callable | None = None
  layer: Any = 0
  pallas: bool = False  # blocked parts in the Pallas flash kernel (flash.py) instead of XLA

  @property
  def own_block_BxR(self):
    return jnp.arange(self.first_block_BxR.shape[1]) - self.first_block_BxR

  @property
  def num_query_blocks(self) -> int:
    return self.segment_BxN.shape[1] // self.block


def layout(segment_BxN, block: int, bias=None, layer=0, pallas: bool = False) -> Layout:
  """The Layout of rows whose segments are contiguous runs of ids 1, 2, ... (0 = padding)."""
  n = segment_BxN.shape[1]
  index = jnp.arange(n, dtype=jnp.int32)

  def one(seg_N):
    first = jnp.full((n + 1,), n, jnp.int32).at[seg_N].min(index)
    count = jnp.zeros((n + 1,), jnp.int32).at[seg_N].add(1)
    return index - first[seg_N], count[seg_N]

  position, length = jax.vmap(one)(segment_BxN)
  real = segment_BxN > 0
  position, length = jnp.where(real, position, 0), jnp.where(real, length, 0)
  start_BxN = index - position
  return Layout(segment_BxN, position, length, block, start_BxN[:, ::block] // block,
                -(-length[:, ::block] // block), bias, layer, pallas)


def relative_table(reach: int, num_blocks: int, causal: bool):
  """Key blocks qb - reach .. qb + reach (.. qb when causal): (table, valid), each 1 x R x M."""
  offsets = np.arange(-reach, 1 if causal else reach + 1)
  table = np.arange(num_blocks)[:, None] + offsets[None, :]
  valid = (table >= 0) & (table < num_blocks)
  return np.clip(table, 0, num_blocks - 1)[None], valid[None]


def _softmax_part(scores, mask, v_values, einsum_out):
  """A part's output, normalised over its own keys, and its log-sum-exp (_NEG for none).

  The mask is folded into the scores and exp runs once: masked scores become _NEG, whose
  exp relative to a row's real maximum is 0; a row with no key keeps a maximum of 0, so
  its probabilities are exp(_NEG) = 0 too.
  """
  scores = jnp.where(mask, scores, _NEG)
  top = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
  top = jnp.where(top > _NEG / 2, top, 0.0)
  probs = jnp.exp(scores - top)
  total = jnp.sum(probs, axis=-1)
  lse = jnp.where(total > 0, top[..., 0] + jnp.log(jnp.maximum(total, 1e-37)), _NEG)
  probs = probs / jnp.maximum(total, 1e-37)[..., None]
  return jnp.einsum(einsum_out, probs.astype(v_values.dtype), v_values), lse


def _pair_mask(rule, queries, keys, causal):
  """rule(i, j), same example, key not padding, and j <= i if causal.

  queries / keys: (segment ids, coordinates) of queries [..., Q] and keys [..., E];
  coordinates are row indices or own positions: within one example they differ by
  the example's start, so relative rules (i - j) and causality hold on either.
  """
  (sq, i), (sk, j) = queries, keys
  i, j = i[..., :, None], j[..., None, :]
  mask = (sq[..., :, None] == sk[..., None, :]) & (sk[..., None, :] != 0)
  if rule is not None:
    mask &= rule(i, j)
  if causal:
    mask &= j <= i
  return mask


def _gather_blocks(blocks_BxRxb, table):
  """The blocks of each table entry: [B, R, block, ...], table [B or 1, C, M] -> [B, C, M, block, ...]."""
  if table.shape[0] == 1:
    return blocks_BxRxb[:, table[0]]
  return jax.vmap(lambda b_, t: b_[t])(blocks_BxRxb, table)


def blocked_part(q, k, v, lay: Layout, table, valid, rule, causal: bool, chunk: int, *,
                 own_positions: bool = False):
  """Per query block, the pairs of rule(i, j) in the key blocks of its table row.

  table/valid: key block numbers and which are used, [1 or B, R, M] (NumPy for a
  table shared by all rows, traced when it depends on where examples lie). rule sees
  row indices, or each example's own positions with `own_positions` (rules on where
  in its example a token is, not only on i - j).
  """
  from refinedweb_jax import backend
  if lay.pallas:  # interpret mode where no Pallas backend runs (the CPU tests)
    from refinedweb_jax.model.attention import flash
    coords = lay.position_BxN if own_positions else None
    return flash.block_attention(q, k, v, lay.segment_BxN, lay.segment_BxN, table, valid,
                                 block_q=lay.block, block_k=lay.block, causal=causal,
                                 rule=rule, q_coords_BxT=coords, kv_coords_BxS=coords,
                                 bias=lay.bias, interpret=backend.platform() == "cpu")
  b, (batch, n, heads, dim) = lay.block, q.shape
  nb = n // b
  if not chunk:
    chunk = AUTO_CHUNK.get(backend.platform(), ACCELERATOR_CHUNK)
  chunk = min(chunk, nb)
  pad_blocks = -nb % chunk
  nc = (nb + pad_blocks) // chunk
  table, valid = jnp.asarray(table), jnp.asarray(valid)
  pad_rows = lambda x: jnp.pad(x, ((0, 0), (0, pad_blocks)) + ((0, 0),) * (x.ndim - 2))
  table, valid = pad_rows(table), pad_rows(valid)
  blocks = lambda x: x.reshape((batch, nb, b) + x.shape[2:])
  seq = lambda x: pad_rows(blocks(x))
  # Block views made once, outside the chunk loop: reshaping inside it costs ~30% more
  # in the backward pass on CPU.
  k_blocks, v_blocks = blocks(k), blocks(v)
  seg_blocks, pos_blocks = blocks(lay.segment_BxN), blocks(lay.position_BxN)
  scale = dim ** -0.5

  @jax.checkpoint
  def one_chunk(xs):
    q_c, seg_c, pos_c, t_c, valid_c, first = xs  # q_c [B, C, b, H, K]; t_c [1 or B, C, M]
    gather = lambda x: _gather_blocks(x, t_c).reshape((batch, chunk, -1) + x.shape[3:])
    k_c, v_c = gather(k_blocks), gather(v_blocks)  # [B, C, M*b, H, K]
    if own_positions:
      i, j = pos_c, gather(pos_blocks)
    else:
      i = ((first + jnp.arange(chunk))[:, None] * b + jnp.arange(b))[None]  # [1, C, b]
      j = (t_c[..., None] * b + jnp.arange(b)).reshape(t_c.shape[:2] + (-1,))  # [1/B, C, M*b]
    mask = _pair_mask(rule, (seg_c, i), (gather(seg_blocks), j), causal)  # [B, C, b, M*b]
    mask &= jnp.repeat(valid_c, b, axis=-1)[:, :, None, :]
    scores = jnp.einsum("bcqhd,bckhd->bchqk", q_c, k_c,
                        preferred_element_type=jnp.float32) * scale
    if lay.bias is not None:
      scores += lay.bias.between(i, j)  # within an example, row and own offsets agree
    return _softmax_part(scores, mask[:, :, None], v_c, "bchqk,bckhd->bcqhd")

  to_chunks = lambda x: x.reshape((x.shape[0], nc, chunk) + x.shape[2:]).swapaxes(0, 1)
  xs = (to_chunks(seq(q)), to_chunks(seq(lay.segment_BxN)), to_chunks(seq(lay.position_BxN)),
        to_chunks(table), to_chunks(valid), jnp.arange(nc) * chunk)
  out, lse = jax.lax.map(one_chunk, xs)  # [nc, B, C, b, H, K], [nc, B, C, H, b]
  out = out.swapaxes(0, 1).reshape(batch, nc * chunk * b, heads, dim)[:, :n]
  lse = lse.swapaxes(0, 1).transpose(0, 1, 2, 4, 3).reshape(batch, nc * chunk * b, heads)[:, :n]
  return out, lse


def keys_part(q, k, v, lay: Layout, index, valid, rule, causal: bool, *,
              own_positions: bool = False):
  """The pairs of rule(i, j) between queries and a list of keys (coordinates: blocked_part).

  index/valid: key positions [B, E] shared by a row's queries, or [B, R, E] per query block.
  """
  batch, n, heads, dim = q.shape
  take = jax.vmap(lambda x, i: x[i])
  k_e, v_e = take(k, index), take(v, index)
  coords = lay.position_BxN if own_positions else jnp.broadcast_to(jnp.arange(n), (batch, n))
  queries = (lay.segment_BxN, coords)
  keys = (take(lay.segment_BxN, index), take(coords, index))
  scale = dim ** -0.5
  if index.ndim == 2:
    mask = _pair_mask(rule, queries, keys, causal) & valid[:, None, :]  # [B, N, E]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k_e, preferred_element_type=jnp.float32) * scale
    if lay.bias is not None:
      scores += lay.bias.between(queries[1], keys[1])
    out, lse = _softmax_part(scores, mask[:, None], v_e, "bhqk,bkhd->bqhd")
    return out, lse.transpose(0, 2, 1)
  b = lay.block
  blocks = lambda x: x.reshape((batch, n // b, b) + x.shape[2:])
  mask = _pair_mask(rule, tuple(blocks(x) for x in queries), keys, causal)  # [B, R, b, E]
  mask &= valid[:, :, None, :]
  scores = jnp.einsum("brqhd,brkhd->brhqk", blocks(q), k_e,
                      preferred_element_type=jnp.float32) * scale
  if lay.bias is not None:
    scores += lay.bias.between(blocks(queries[1]), keys[1])
  out, lse = _softmax_part(scores, mask[:, :, None], v_e, "brhqk,brkhd->brqhd")
  return out.reshape(batch, n, heads, dim), lse.transpose(0, 1, 3, 2).reshape(batch, n, heads)


def residue_part(q, k, v, lay: Layout, stride: int, causal: bool):
  """Keys j with (i - j) % stride == 0 and |i - j| >= stride, within residue classes."""
  batch, n, heads, dim = q.shape
  s = stride
  pad = -n % s
  rows = (n + pad) // s
  to_classes = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)).reshape(
      (batch, rows, s) + x.shape[2:]).swapaxes(1, 2)  # [B, s, rows, ...]
  seg = to_classes(lay.segment_BxN)
  t = jnp.arange(rows)
  # Within a class, |i - j| >= s means another row; in one example i - j is the
  # difference of own positions, so row indices serve.
  mask = t[:, None] != t[None, :]
  if causal:
    mask &= t[None, :] < t[:, None]
  mask = mask[None, None] & (seg[..., :, None] == seg[..., None, :]) & (seg[..., None, :] != 0)
  scores = jnp.einsum("bcqhd,bckhd->bchqk", to_classes(q), to_classes(k),
                      preferred_element_type=jnp.float32) * dim ** -0.5
  if lay.bias is not None:
    scores += lay.bias.between(t * s, t * s)  # class rows t: offsets (t_k - t_q) * s
  out, lse = _softmax_part(scores, mask[:, :, None], to_classes(v),
                           "bchqk,bckhd->bcqhd")
  out = out.swapaxes(1, 2).reshape(batch, rows * s, heads, dim)[:, :n]
  lse = lse.transpose(0, 3, 1, 2).reshape(batch, rows * s, heads)[:, :n]
  return out, lse


def merge(parts):
  """Combines (out, lse) parts over disjoint key sets into softmax over their union."""
  out, lse = parts[0]
  for part_out, part_lse in parts[1:]:
    total = jnp.logaddexp(lse, part_lse)
    out = (out * jnp.exp(lse - total)[..., None].astype(out.dtype)
           + part_out * jnp.exp(part_lse - total)[..., None].astype(out.dtype))
    lse = total
  return out


def global_rows(out, q, k, v, lay: Layout, slots, causal: bool):
  """`out` with the rows at own positions `slots` replaced by attention to their whole example.

  Computed per key block: each block meets the global queries of its own example,
  and the per-block results are merged per example (a segment sum), so the cost is
  O(N * len(slots)) however many examples a row holds. Needs aligned examples.
  """
  b, (batch, n, _, dim) = lay.block, q.shape
  nb = n // b
  slots = jnp.asarray(np.asarray(slots, np.int32))
  first = lay.first_block_BxR  # [B, R]: the example each key block belongs to
  example_length = lay.length_BxN[:, ::b]
  rows_BxRxG = first[:, :, None] * b + slots[None, None, :]
  real_BxRxG = (slots[None, None, :] < example_length[:, :, None]) & (
      lay.segment_BxN[:, ::b, None] != 0)
  rows_BxRxG = jnp.where(real_BxRxG, rows_BxRxG, 0)
  take = jax.vmap(lambda x, i: x[i])
  q_g = take(q, rows_BxRxG)  # [B, R, G, H, K]
  blocks = lambda x: x.reshape((batch, nb, b) + x.shape[2:])
  seg_k, pos_k = blocks(lay.segment_BxN), blocks(lay.position_BxN)
  mask = (seg_k[:, :, None, :] == lay.segment_BxN[:, ::b, None, None]) & (
      seg_k[:, :, None, :] != 0) & real_BxRxG[..., None]  # [B, R, G, b]
  if causal:
    mask &= pos_k[:, :, None, :] <= slots[None, None, :, None]
  scores = jnp.einsum("brghd,brkhd->brhgk", q_g, blocks(k),
                      preferred_element_type=jnp.float32) * dim ** -0.5
  if lay.bias is not None:
    scores += lay.bias.between(slots[None, None, :], pos_k)  # own positions: slot vs key
  part, lse = _softmax_part(scores, mask[:, :, None], blocks(v),
                            "brhgk,brkhd->brghd")  # [B, R, G, H, K], [B, R, H, G]
  # Merge the blocks of each example: group key blocks by their example's first block.
  group = jnp.where(lay.segment_BxN[:, ::b] != 0, first, nb)  # padding blocks: a spare group
  seg_max = jax.vmap(lambda x, g: jax.ops.segment_max(x, g, num_segments=nb + 1))
  seg_sum = jax.vmap(lambda x, g: jax.ops.segment_sum(x, g, num_segments=nb + 1))
  top = jax.lax.stop_gradient(seg_max(lse, group))  # [B, nb + 1, H, G]
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  top_BxRxHxG = jax.vmap(lambda t, g: t[g])(top, group)
  weight = jnp.exp(lse - top_BxRxHxG)
  total = seg_sum(weight, group)  # [B, nb + 1, H, G]
  scale = weight / jax.vmap(lambda t, g: t[g])(jnp.maximum(total, 1e-30), group)
  merged = seg_sum(part * scale.transpose(0, 1, 3, 2)[..., None].astype(part.dtype), group)
  # Each example's global rows: its first block's group, written at first * b + slot.
  is_first = real_BxRxG & (first[:, :, None] == jnp.arange(nb)[None, :, None])
  target = jnp.where(is_first, rows_BxRxG, n)  # n: out of bounds, dropped
  values = merged[:, :nb]  # group r holds the example whose first block is r
  return jax.vmap(lambda o, t, x: o.at[t.reshape(-1)].set(
      x.reshape((-1,) + x.shape[2:]), mode="drop"))(out, target, values)
