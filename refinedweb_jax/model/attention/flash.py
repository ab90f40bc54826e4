"""Flash attention in Pallas (Triton on GPU) over a block table, with its own backward pass.

Query i attends key j iff j lies in a key block listed (and valid) in the table row of
i's query block, q_segments[i] == kv_segments[j] != 0, j <= i when causal and
rule(i, j) when a rule is given, where i and j are coordinates: row indices, or each
token's own position in its example. This is blocked.blocked_part's pattern computed
in one fused kernel: per query block, the listed key blocks are streamed with an
online softmax, and no score leaves the chip. The result is (out, lse) with the lse
convention of blocked.py (-1e30 for a query with no key), so parts merge with
blocked.merge. dense_table gives the table of plain dense attention.

The backward pass recomputes the scores: dq per query block over its table row, and
dk/dv per key block over the query blocks that list it (the transposed table, built
in XLA), so every gradient is written by one program: no atomics, deterministic.

Shapes: B batch, T query length, S key length, H heads, K head dim, R = T / block_q
query blocks, C = S / block_k key blocks, M table width, W bias intervals (padded), L
clipped key - query offsets (padded). Each kernel tiles its work in its own tiles
(TILINGS), which divide the table's blocks.
"""

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from refinedweb_jax.model.attention import masks, relative

_NEG = masks.NEG  # the shared finite "minus infinity", so that parts merge


@dataclasses.dataclass(frozen=True)
class Tiling:
  """One kernel's score tile (queries x keys), warps and software-pipeline stages."""
  block_q: int
  block_k: int
  num_warps: int
  num_stages: int


# Per kernel, head dim (up to) and operand width (bytes): the tile, warps and stages, chosen
# so that every kernel compiles for sm_90a (H100/H200) without register spills, T5's bias
# included (benchmarks/gpu_kernels.py; measured for 2-byte operands at head dims 64 and 128,
# where the backward needs 32-query tiles; the float32 entries are not measured).
# Tiles are cut down to the table's blocks.
TILINGS = {
    ("forward", 64, 2): Tiling(64, 64, 4, 2), ("dq", 64, 2): Tiling(64, 64, 8, 2),
    ("dkv", 64, 2): Tiling(64, 64, 4, 2),
    ("forward", 128, 2): Tiling(64, 64, 8, 2), ("dq", 128, 2): Tiling(32, 64, 8, 1),
    ("dkv", 128, 2): Tiling(32, 64, 8, 1),
    ("forward", 64, 4): Tiling(64, 64, 4, 2), ("dq", 64, 4): Tiling(64, 64, 4, 1),
    ("dkv", 64, 4): Tiling(64, 64, 4, 1),
    ("forward", 128, 4): Tiling(64, 64, 8, 1), ("dq", 128, 4): Tiling(32, 64, 8, 1),
    ("dkv", 128, 4): Tiling(64, 32, 8, 1),
}


def tiling(kernel: str, head_dim: int, dtype, block_q: int, block_k: int) -> Tiling:
  """TILINGS' entry for a kernel (forward, dq, dkv), cut to the table's blocks."""
  width = 2 if jnp.dtype(dtype).itemsize <= 2 else 4
  dim = 64 if head_dim <= 64 else 128
  t = TILINGS[(kernel, dim, width)]
  return dataclasses.replace(t, block_q=min(t.block_q, block_q), block_k=min(t.block_k, block_k))


@dataclasses.dataclass(frozen=True)
class _Static:
  """What the kernels are specialised on."""
  block_q: int  # the table's blocks
  block_k: int
  causal: bool
  rule: Callable | None
  scale: float
  far: int | None  # bias: offsets are clipped to +-(far + 1), beyond which buckets are equal
  precision: lax.Precision | None
  tile: Tiling  # this kernel's
  interpret: bool


def _ranges(seg, coord):
  """Tile-level facts of a block of tokens: (min, max) nonzero segment, all nonzero, min/max coord."""
  big = jnp.iinfo(jnp.int32).max
  real = seg != 0
  return (jnp.min(jnp.where(real, seg, big)), jnp.max(seg), jnp.min(seg) > 0,
          jnp.min(jnp.where(real, coord, big)), jnp.max(jnp.where(real, coord, -big)))


def _kind(st: _Static, seg_q, i, seg_k, j):
  """(empty, full): no pair of the tile attends (skip it), every pair does (no mask)."""
  q_lo, q_hi, q_full, i_lo, i_hi = _ranges(seg_q, i)
  k_lo, k_hi, k_full, j_lo, j_hi = _ranges(seg_k, j)
  empty = (k_hi == 0) | (q_hi < k_lo) | (k_hi < q_lo)
  full = q_full & k_full & (q_lo == q_hi) & (q_hi == k_lo) & (k_lo == k_hi)
  if st.causal:
    empty |= j_lo > i_hi
    full &= j_hi <= i_lo
  if st.rule is not None:
    full &= False
  return empty, full


def _tile(st: _Static, q, k, seg_q, seg_k, i, j, bias_ref, masked: bool):
  """A [tile_q, tile_k] tile: float32 scores (scaled, bias added) and which pairs attend."""
  scores = plgpu.dot(q, k, trans_b=True, precision=st.precision) * st.scale
  i, j = i[:, None], j[None, :]
  if st.far is not None:  # the bias per clipped offset, read from a vector in memory
    scores += bias_ref[jnp.clip(j - i, -st.far - 1, st.far + 1) + st.far + 1]
  if not masked:
    return scores, None
  mask = (seg_q[:, None] == seg_k[None, :]) & (seg_k[None, :] != 0)
  if st.causal:
    mask &= j <= i
  if st.rule is not None:
    mask &= st.rule(i, j)
  return scores, mask


# Loop counters are non-negative: plain integer division (jnp's floor forms do not lower).
_div = lambda n, d: lax.div(n, jnp.int32(d))
_rem = lambda n, d: lax.rem(n, jnp.int32(d))


def _by_kind(kind, fn, carry):
  """carry unchanged (an empty tile), fn(carry, masked=False) (full) or fn(carry, masked=True)."""
  empty, full = kind
  return lax.cond(empty, lambda c: c, lambda c: lax.cond(
      full, functools.partial(fn, masked=False), functools.partial(fn, masked=True), c), carry)


def _bias_grad(st: _Static, grad, ds, i, j, slots_ref, bounds_ref):
  """grad [W] plus ds summed per interval of offsets, over the intervals the tile touches."""
  off = jnp.clip(j[None, :] - i[:, None], -st.far - 1, st.far + 1) + st.far + 1
  first, last = slots_ref[jnp.min(off)], slots_ref[jnp.max(off)]  # offsets grow with slots
  slot = jnp.arange(grad.shape[0])

  def one(n, grad):
    inside = (off >= bounds_ref[n]) & (off < bounds_ref[n + 1])
    return grad + jnp.where(slot == n, jnp.sum(jnp.where(inside, ds, 0.0)), 0.0)

  return lax.fori_loop(first, last + 1, one, grad)


def _forward_kernel(q_ref, k_ref, v_ref, seg_q_ref, seg_k_ref, i_ref, j_ref, row_ref,
                    bias_ref, out_ref, lse_ref, *, st: _Static):
  """One query tile: the key tiles of its table row (row_ref: count, then block numbers)."""
  q, seg_q, i = q_ref[...], seg_q_ref[...], i_ref[...]
  tq, tk = st.tile.block_q, st.tile.block_k
  cuts = st.block_k // tk

  def body(n, carry):
    keys = pl.ds(row_ref[_div(n, cuts) + 1] * st.block_k + _rem(n, cuts) * tk, tk)
    seg_k, j = seg_k_ref[keys], j_ref[keys]

    def update(carry, masked):
      acc, top, total = carry
      v = v_ref[keys, :]
      scores, mask = _tile(st, q, k_ref[keys, :], seg_q, seg_k, i, j, bias_ref, masked)
      if masked:  # where (not a -inf score): a row with nothing so far keeps a zero sum.
        new_top = jnp.maximum(top, jnp.max(jnp.where(mask, scores, _NEG), axis=1))
        probs = jnp.where(mask, jnp.exp(scores - new_top[:, None]), 0.0)
      else:
        new_top = jnp.maximum(top, jnp.max(scores, axis=1))
        probs = jnp.exp(scores - new_top[:, None])
      fix = jnp.exp(top - new_top)
      acc = acc * fix[:, None] + plgpu.dot(probs.astype(v.dtype), v, precision=st.precision)
      return acc, new_top, total * fix + jnp.sum(probs, axis=1)

    return _by_kind(_kind(st, seg_q, i, seg_k, j), update, carry)

  init = (jnp.zeros((tq, q.shape[-1]), jnp.float32), jnp.zeros((tq,), jnp.float32) + _NEG,
          jnp.zeros((tq,), jnp.float32))
  acc, top, total = lax.fori_loop(0, row_ref[0] * cuts, body, init)
  empty = total == 0.0
  total = jnp.where(empty, 1.0, total)
  out_ref[...] = (acc / total[:, None]).astype(out_ref.dtype)
  lse_ref[...] = jnp.where(empty, _NEG, top + jnp.log(total))


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, seg_q_ref, seg_k_ref, i_ref,
               j_ref, row_ref, bias_ref, slots_ref, bounds_ref, dq_ref, *dbias_ref,
               st: _Static):
  """dq (and the bias's partial gradient per interval) of one query tile, over its table row."""
  q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
  seg_q, i = seg_q_ref[...], i_ref[...]
  tk = st.tile.block_k
  cuts = st.block_k // tk

  def body(n, carry):
    keys = pl.ds(row_ref[_div(n, cuts) + 1] * st.block_k + _rem(n, cuts) * tk, tk)
    seg_k, j = seg_k_ref[keys], j_ref[keys]

    def update(carry, masked):
      k, v = k_ref[keys, :], v_ref[keys, :]
      scores, mask = _tile(st, q, k, seg_q, seg_k, i, j, bias_ref, masked)
      probs = jnp.exp(scores - lse[:, None])
      if masked:
        probs = jnp.where(mask, probs, 0.0)
      dprobs = plgpu.dot(do, v, trans_b=True, precision=st.precision)
      ds = probs * (dprobs - delta[:, None])
      dq = carry[0] + plgpu.dot(ds.astype(k.dtype), k, precision=st.precision)
      if not dbias_ref:
        return (dq,)
      return dq, _bias_grad(st, carry[1], ds, i, j, slots_ref, bounds_ref)

    return _by_kind(_kind(st, seg_q, i, seg_k, j), update, carry)

  init = (jnp.zeros(q.shape, jnp.float32),)
  if dbias_ref:
    init += (jnp.zeros(dbias_ref[0].shape, jnp.float32),)
  dq, *dbias = lax.fori_loop(0, row_ref[0] * cuts, body, init)
  dq_ref[...] = (dq * st.scale).astype(dq_ref.dtype)
  if dbias_ref:
    dbias_ref[0][...] = dbias[0]


def _dkv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, seg_q_ref, seg_k_ref, i_ref,
                j_ref, col_ref, bias_ref, dk_ref, dv_ref, *, st: _Static):
  """dk and dv of one key tile, over the query blocks that list it (col_ref: count, blocks)."""
  k, v, seg_k, j = k_ref[...], v_ref[...], seg_k_ref[...], j_ref[...]
  tq = st.tile.block_q
  cuts = st.block_q // tq

  def body(n, carry):
    queries = pl.ds(col_ref[_div(n, cuts) + 1] * st.block_q + _rem(n, cuts) * tq, tq)
    seg_q, i = seg_q_ref[queries], i_ref[queries]

    def update(carry, masked):
      dk, dv = carry
      q, do = q_ref[queries, :], do_ref[queries, :]
      scores, mask = _tile(st, q, k, seg_q, seg_k, i, j, bias_ref, masked)
      probs = jnp.exp(scores - lse_ref[queries][:, None])
      if masked:
        probs = jnp.where(mask, probs, 0.0)
      dv += plgpu.dot(probs.astype(do.dtype), do, trans_a=True, precision=st.precision)
      dprobs = plgpu.dot(do, v, trans_b=True, precision=st.precision)
      ds = probs * (dprobs - delta_ref[queries][:, None])
      dk += plgpu.dot(ds.astype(q.dtype), q, trans_a=True, precision=st.precision)
      return dk, dv

    return _by_kind(_kind(st, seg_q, i, seg_k, j), update, carry)

  init = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
  dk, dv = lax.fori_loop(0, col_ref[0] * cuts, body, init)
  dk_ref[...] = (dk * st.scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


# BlockSpecs on the grid (blocks along axis 0, batch, head): `tiled` takes the grid's
# block of a sequence, otherwise the whole sequence (sliced in the kernel).
def _heads_spec(length, block, dim, tiled):  # B x L x H x K
  return pl.BlockSpec((None, block if tiled else length, None, dim),
                      lambda x, b, h: (b, x if tiled else 0, h, 0))


def _tokens_spec(length, block, tiled):  # B x L
  return pl.BlockSpec((None, block if tiled else length), lambda x, b, h: (b, x if tiled else 0))


def _lse_spec(length, block, tiled):  # B x H x L
  return pl.BlockSpec((None, None, block if tiled else length),
                      lambda x, b, h: (b, h, x if tiled else 0))


def _table_spec(table, cuts):  # 1 or B x R (or C) x width: the row of a program's block
  shared = table.shape[0] == 1
  return pl.BlockSpec((None, None, table.shape[2]),
                      lambda x, b, h: (0 if shared else b, x // cuts, 0))


def _vector_spec(x):  # H x L, a head's row, or L, whole
  if x is None:
    return None
  if x.ndim == 1:
    return pl.BlockSpec((x.shape[0],), lambda *_: (0,))
  return pl.BlockSpec((None, x.shape[1]), lambda x_, b, h: (h, 0))


def _call(st: _Static, kernel, grid, in_specs, out_specs, out_shape, name):
  tile = st.tile
  return pl.pallas_call(
      functools.partial(kernel, st=st), grid=grid, in_specs=in_specs, out_specs=out_specs,
      out_shape=out_shape, interpret=st.interpret,
      name=f"{name}_q{tile.block_q}_k{tile.block_k}",
      compiler_params=plgpu.CompilerParams(num_warps=tile.num_warps,
                                           num_stages=tile.num_stages))


def _tiled(st: _Static, kernel: str, q) -> _Static:
  return dataclasses.replace(st, tile=st.tile or tiling(kernel, q.shape[-1], q.dtype, st.block_q,
                                                        st.block_k))


def _bias_vector(values_HxW, bias_side):
  """The bias of each clipped offset, H x L (None without bias)."""
  return None if values_HxW is None else values_HxW[:, bias_side[0]]


def _forward(st: _Static, q, k, v, side, values):
  """(out_BxTxHxK, lse_BxHxT): lse head-major, so that a program's block is contiguous."""
  (batch, t, heads, dim), s = q.shape, k.shape[1]
  seg_q, seg_k, i, j, rows, _, bias_side = side
  st = _tiled(st, "forward", q)
  tq, bias_HxL = st.tile.block_q, _bias_vector(values, bias_side)
  return _call(
      st, _forward_kernel, (t // tq, batch, heads),
      [_heads_spec(t, tq, dim, True), _heads_spec(s, 0, dim, False),
       _heads_spec(s, 0, dim, False), _tokens_spec(t, tq, True), _tokens_spec(s, 0, False),
       _tokens_spec(t, tq, True), _tokens_spec(s, 0, False),
       _table_spec(rows, st.block_q // tq), _vector_spec(bias_HxL)],
      [_heads_spec(t, tq, dim, True), _lse_spec(t, tq, True)],
      [jax.ShapeDtypeStruct(q.shape, q.dtype),
       jax.ShapeDtypeStruct((batch, heads, t), jnp.float32)],
      "block_attention_forward")(q, k, v, seg_q, seg_k, i, j, rows, bias_HxL)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(st: _Static, q, k, v, side, values):
  return _forward(st, q, k, v, side, values)


def _attention_fwd(st: _Static, q, k, v, side, values):
  out, lse_BxHxT = _forward(st, q, k, v, side, values)
  return (out, lse_BxHxT), (q, k, v, side, values, out, lse_BxHxT)


def _attention_bwd(st: _Static, residuals, cotangents):
  q, k, v, side, values_HxW, out, lse_BxHxT = residuals
  dout, dlse_BxHxT = cotangents
  (batch, t, heads, dim), s = q.shape, k.shape[1]
  seg_q, seg_k, i, j, rows, cols, bias_side = side
  bias_HxL = _bias_vector(values_HxW, bias_side)
  # d lse / d score = prob: an lse cotangent (from merging parts) shifts delta.
  delta_BxHxT = jnp.einsum("bthk,bthk->bht", out.astype(jnp.float32),
                           dout.astype(jnp.float32)) - dlse_BxHxT
  args = (q, k, v, dout, lse_BxHxT, delta_BxHxT, seg_q, seg_k, i, j)

  def specs(tile, q_tiled):  # the tiled side's tile, the other side whole
    kv_tiled = not q_tiled
    bq, bk = (tile, 0) if q_tiled else (0, tile)
    return [_heads_spec(t, bq, dim, q_tiled), _heads_spec(s, bk, dim, kv_tiled),
            _heads_spec(s, bk, dim, kv_tiled), _heads_spec(t, bq, dim, q_tiled),
            _lse_spec(t, bq, q_tiled), _lse_spec(t, bq, q_tiled), _tokens_spec(t, bq, q_tiled),
            _tokens_spec(s, bk, kv_tiled), _tokens_spec(t, bq, q_tiled),
            _tokens_spec(s, bk, kv_tiled)]

  st_dq = _tiled(st, "dq", q)
  tq = st_dq.tile.block_q
  dq_specs, dq_shapes = [_heads_spec(t, tq, dim, True)], [jax.ShapeDtypeStruct(q.shape, q.dtype)]
  bias_in = [] if values_HxW is None else [bias_side[0], bias_side[1]]
  if values_HxW is not None:
    width = values_HxW.shape[1]
    dq_specs.append(pl.BlockSpec((None, None, None, width), lambda x, b, h: (b, h, x, 0)))
    dq_shapes.append(jax.ShapeDtypeStruct((batch, heads, t // tq, width), jnp.float32))
  dq, *dbias_BxHxRxW = _call(
      st_dq, _dq_kernel, (t // tq, batch, heads),
      specs(tq, True) + [_table_spec(rows, st.block_q // tq), _vector_spec(bias_HxL)]
      + [_vector_spec(x) for x in bias_in] + [None] * (2 - len(bias_in)),
      dq_specs, dq_shapes, "block_attention_dq")(
          *args, rows, bias_HxL, *(bias_in + [None] * (2 - len(bias_in))))
  st_dkv = _tiled(st, "dkv", q)
  tk = st_dkv.tile.block_k
  dk, dv = _call(st_dkv, _dkv_kernel, (s // tk, batch, heads),
                 specs(tk, False) + [_table_spec(cols, st.block_k // tk), _vector_spec(bias_HxL)],
                 [_heads_spec(s, tk, dim, True)] * 2,
                 [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
                 "block_attention_dkv")(*args, cols, bias_HxL)
  dvalues_HxW = None if values_HxW is None else dbias_BxHxRxW[0].sum(axis=(0, 2))
  return dq, dk, dv, None, dvalues_HxW


_attention.defvjp(_attention_fwd, _attention_bwd)


def _rows(table, valid):
  """Each table row as [count, its valid key blocks first, ...]: [1 or B, R, M + 1] int32.

  Valid entries first, so the kernels loop over exactly `count` blocks and skip none.
  """
  order = jnp.argsort(~valid, axis=-1, stable=True)
  listed = jnp.take_along_axis(table, order, axis=-1)
  return jnp.concatenate([valid.sum(-1, dtype=jnp.int32)[..., None], listed], axis=-1)


def _columns(table, valid, num_key_blocks: int):
  """The transposed table, per key block [count, the query blocks listing it, ...]: [1/B, C, R + 1].

  Width R is the exact bound: entries are distinct per row, so a key block is listed
  at most once per query block (the dense table reaches it). Built through an R x C
  incidence array, never T x S.
  """
  tb, r, _ = table.shape
  listed = jnp.zeros((tb, r, num_key_blocks), jnp.int32).at[
      jnp.arange(tb)[:, None, None], jnp.arange(r)[None, :, None], table].max(
          valid.astype(jnp.int32)).transpose(0, 2, 1)
  order = jnp.argsort(listed == 0, axis=-1, stable=True).astype(jnp.int32)
  return jnp.concatenate([listed.sum(-1, dtype=jnp.int32)[..., None], order], axis=-1)


def _bias_intervals(bias, heads: int):
  """T5's bias as intervals of key - query offsets: (values H x W, starts of intervals 2..).

  The bucket is a step function of the offset, constant beyond +-max_distance; the
  per-interval values are gathered from the table here, in XLA, so their gradient
  flows back to the table.
  """
  if not isinstance(bias, relative.RelativeBias):
    raise TypeError(f"bias must be a relative.RelativeBias or None, got {type(bias).__name__}")
  num, far = bias.table_NxH.shape[0], bias.max_distance
  if bias.table_NxH.shape[1] != heads:
    raise ValueError(f"bias table has {bias.table_NxH.shape[1]} heads, the queries {heads}")
  offsets = np.arange(-far - 1, far + 2)
  with jax.ensure_compile_time_eval():
    bucket = np.asarray(relative.buckets(jnp.asarray(offsets), bidirectional=bias.bidirectional,
                                         num_buckets=num, max_distance=far))
  first = np.flatnonzero(np.diff(bucket)) + 1
  picks = bucket[np.concatenate([[0], first])]
  values = jnp.asarray(bias.table_NxH, jnp.float32)[picks].T
  width = pl.next_power_of_2(len(picks))
  return jnp.pad(values, ((0, 0), (0, width - len(picks)))), tuple(int(o) for o in offsets[first])


def _bias_side(starts, far: int):
  """(slots, bounds): each clipped offset's interval [L], and where each interval starts [W + 1].

  Clipped offsets are key - query offsets clipped to +-(far + 1), shifted by far + 1.
  """
  size = 2 * far + 3
  clipped = np.arange(size) - far - 1
  slots = (clipped[:, None] >= np.asarray(starts, np.int64)[None, :]).sum(1)
  bounds = np.concatenate([[0], np.asarray(starts) + far + 1, [size]])
  pad = lambda x, n: np.pad(x, (0, n - len(x)), mode="edge").astype(np.int32)
  return (jnp.asarray(pad(slots, pl.next_power_of_2(size))),
          jnp.asarray(pad(bounds, pl.next_power_of_2(len(bounds)))))


def _power_of_two(name: str, value: int):
  if value < 16 or value & (value - 1):
    raise ValueError(f"{name} must be a power of two >= 16 (Triton's tile sizes), got {value}")


def _check(q, k, v, seg_q, seg_k, table, valid, block_q, block_k, q_coords, kv_coords):
  if q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or (
      q.shape[0], q.shape[2:]) != (k.shape[0], k.shape[2:]):
    raise ValueError(f"q, k, v must be B x T x H x K, B x S x H x K twice; got {q.shape}, "
                     f"{k.shape}, {v.shape}")
  if (q.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16) or k.dtype != q.dtype
      or v.dtype != q.dtype):
    raise ValueError(f"q, k, v must all be float32, all bfloat16 or all float16, got {q.dtype}, "
                     f"{k.dtype}, {v.dtype}")
  (batch, t, _, dim), s = q.shape, k.shape[1]
  _power_of_two("block_q", block_q)
  _power_of_two("block_k", block_k)
  _power_of_two("head dim K", dim)
  if t % block_q or s % block_k:
    raise ValueError(f"query length {t} must be a multiple of block_q={block_q} and key length "
                     f"{s} of block_k={block_k}")
  for name, x, want in [("q_segments", seg_q, (batch, t)), ("kv_segments", seg_k, (batch, s)),
                        ("q_coords", q_coords, (batch, t)), ("kv_coords", kv_coords, (batch, s))]:
    if x is not None and tuple(x.shape) != want:
      raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
  if (table.ndim != 3 or tuple(valid.shape) != tuple(table.shape)
      or table.shape[0] not in (1, batch) or table.shape[1] != t // block_q):
    raise ValueError(f"table and valid must both be [1 or {batch}, {t // block_q}, M] "
                     f"(T // block_q query blocks), got {table.shape} and {valid.shape}")


def block_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, q_segments_BxT, kv_segments_BxS, table,
                    valid, *, block_q: int, block_k: int, causal: bool, rule=None,
                    q_coords_BxT=None, kv_coords_BxS=None, bias=None, scale=None,
                    precision=None, num_warps=None, num_stages: int = 2,
                    interpret: bool = False):
  """Attention of each query block to the key blocks of its table row: (out_BxTxHxK, lse_BxTxH).

  table/valid: key block numbers (< S // block_k, distinct per row) and which are
  used, [1 or B, T // block_q, M]; a leading 1 is shared by every row. rule: a static
  callable of int32 coordinates (i [Q, 1], j [1, E]) -> bool, traced in the kernel, so
  only elementwise jnp ops (no gathers). Coordinates default to row indices. bias: a
  relative.RelativeBias added for each pair's j - i. scale defaults to 1 / sqrt(K).
  Matmuls run in the input dtype (precision: plgpu.dot's; None is the backend's) with
  float32 accumulation; out has the input dtype, lse is float32 and -1e30 (with out 0)
  for a query with no key. Differentiable in q, k, v, the bias table and out's lse.
  Each kernel's tile, warps and stages come from TILINGS unless num_warps is given
  (then every kernel's tile is the table's blocks, with num_warps and num_stages).
  """
  table, valid = jnp.asarray(table, jnp.int32), jnp.asarray(valid, bool)
  _check(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, q_segments_BxT, kv_segments_BxS, table, valid,
         block_q, block_k, q_coords_BxT, kv_coords_BxS)
  (batch, t, heads, dim), s = q_BxTxHxK.shape, k_BxSxHxK.shape[1]
  coords = lambda x, n: jnp.broadcast_to(
      jnp.arange(n, dtype=jnp.int32) if x is None else jnp.asarray(x, jnp.int32), (batch, n))
  values, starts = (None, None) if bias is None else _bias_intervals(bias, heads)
  far = None if bias is None else bias.max_distance
  tile = None if num_warps is None else Tiling(block_q, block_k, num_warps, num_stages)
  st = _Static(block_q, block_k, causal, rule, dim ** -0.5 if scale is None else float(scale),
               far, precision, tile, interpret)
  # Clipped so that no program reads outside k and v; valid entries are in range anyway.
  table = jnp.clip(table, 0, s // block_k - 1)
  side = (jnp.asarray(q_segments_BxT, jnp.int32), jnp.asarray(kv_segments_BxS, jnp.int32),
          coords(q_coords_BxT, t), coords(kv_coords_BxS, s), _rows(table, valid),
          _columns(table, valid, s // block_k),
          None if bias is None else _bias_side(starts, far))
  out, lse_BxHxT = _attention(st, q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, side, values)
  return out, lse_BxHxT.transpose(0, 2, 1)


def dense_table(q_segments_BxT, kv_segments_BxS, block_q: int, block_k: int, causal: bool, *,
                q_coords_BxT=None, kv_coords_BxS=None):
  """Every key block for every query block: (table, valid), each B x R x C (C = S // block_k).

  An entry is invalid when its blocks' ranges of nonzero segment ids do not meet (no
  same-segment pair) or, causal, when the key block's first real key coordinate comes
  after the query block's last coordinate (row indices by default), so the kernel
  skips it. From per-block minima and maxima: R x C, never T x S.
  """
  (batch, t), (kv_batch, s) = q_segments_BxT.shape, kv_segments_BxS.shape
  if kv_batch != batch:
    raise ValueError(f"q_segments and kv_segments must have the same batch, got {batch} and "
                     f"{kv_batch}")
  if t % block_q or s % block_k:
    raise ValueError(f"query length {t} must be a multiple of block_q={block_q} and key length "
                     f"{s} of block_k={block_k}")
  big = jnp.iinfo(jnp.int32).max
  blocks = lambda x, block: jnp.asarray(x, jnp.int32).reshape(batch, -1, block)
  seg_q, seg_k = blocks(q_segments_BxT, block_q), blocks(kv_segments_BxS, block_k)
  low = lambda seg, x: jnp.where(seg != 0, x, big).min(-1)
  high = lambda seg, x: jnp.where(seg != 0, x, -big).max(-1)
  valid = (jnp.maximum(low(seg_q, seg_q)[:, :, None], low(seg_k, seg_k)[:, None, :])
           <= jnp.minimum(high(seg_q, seg_q)[:, :, None], high(seg_k, seg_k)[:, None, :]))
  if causal:
    coords = lambda x, n, block: blocks(
        jnp.broadcast_to(jnp.arange(n) if x is None else x, (batch, n)), block)
    last_q = coords(q_coords_BxT, t, block_q).max(-1)
    first_k = low(seg_k, coords(kv_coords_BxS, s, block_k))
    valid &= first_k[:, None, :] <= last_q[:, :, None]
  table = jnp.broadcast_to(jnp.arange(s // block_k, dtype=jnp.int32), valid.shape)
  return table, valid
