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
query blocks, C = S / block_k key blocks, M table width, W bias intervals (padded).
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

from refinedweb_jax.model.attention import blocked, relative

_NEG = blocked._NEG  # blocked.py's finite "minus infinity", so that parts merge


@dataclasses.dataclass(frozen=True)
class _Static:
  """What the kernels are specialised on."""
  block_q: int
  block_k: int
  causal: bool
  rule: Callable | None
  scale: float
  starts: tuple[int, ...] | None  # bias: first offset of each interval after the first
  precision: lax.Precision | None
  num_warps: int
  num_stages: int
  interpret: bool


def _tile(st: _Static, q, k, seg_q, seg_k, i, j, bias_values):
  """A [block_q, block_k] tile: float32 scores (scaled, bias added) and which pairs attend."""
  scores = plgpu.dot(q, k, trans_b=True, precision=st.precision) * st.scale
  i, j = i[:, None], j[None, :]
  mask = (seg_q[:, None] == seg_k[None, :]) & (seg_k[None, :] != 0)
  if st.causal:
    mask &= j <= i
  if st.rule is not None:
    mask &= st.rule(i, j)
  if st.starts is not None:
    # Buckets are a step function of the offset: a chain of selects, since a Triton
    # kernel cannot gather from a table.
    offset, bias = j - i, jnp.zeros(scores.shape, jnp.float32) + bias_values[0]
    for n, start in enumerate(st.starts, 1):
      bias = jnp.where(offset >= start, bias_values[n], bias)
    scores += bias
  return scores, mask


def _bias_grad(starts, offset, ds, width: int):
  """Per interval of offsets, the sum of ds over its pairs: [width], zero past the intervals."""
  interval = jnp.zeros(offset.shape, jnp.int32)
  for start in starts:
    interval += (offset >= start).astype(jnp.int32)
  slot, grad = jnp.arange(width), jnp.zeros((width,), jnp.float32)
  for n in range(len(starts) + 1):
    grad += jnp.where(slot == n, jnp.sum(jnp.where(interval == n, ds, 0.0)), 0.0)
  return grad


def _load_values(values_ref, st: _Static):
  """The bias of each interval as scalars, loaded once per program (None without bias)."""
  if st.starts is None:
    return None
  return [values_ref[n] for n in range(len(st.starts) + 1)]


def _forward_kernel(q_ref, k_ref, v_ref, seg_q_ref, seg_k_ref, i_ref, j_ref, row_ref,
                    values_ref, out_ref, lse_ref, *, st: _Static):
  """One query block: the key blocks of its row (row_ref: count, then block numbers)."""
  q, seg_q, i = q_ref[...], seg_q_ref[...], i_ref[...]
  bias_values = _load_values(values_ref, st)

  def body(m, carry):
    acc, top, total = carry
    keys = pl.ds(row_ref[m + 1] * st.block_k, st.block_k)
    v = v_ref[keys, :]
    scores, mask = _tile(st, q, k_ref[keys, :], seg_q, seg_k_ref[keys], i, j_ref[keys],
                         bias_values)
    new_top = jnp.maximum(top, jnp.max(jnp.where(mask, scores, _NEG), axis=1))
    # where (not a -inf score): a row with nothing so far keeps a zero sum.
    probs = jnp.where(mask, jnp.exp(scores - new_top[:, None]), 0.0)
    fix = jnp.exp(top - new_top)
    acc = acc * fix[:, None] + plgpu.dot(probs.astype(v.dtype), v, precision=st.precision)
    return acc, new_top, total * fix + jnp.sum(probs, axis=1)

  rows = st.block_q
  init = (jnp.zeros((rows, q.shape[-1]), jnp.float32), jnp.zeros((rows,), jnp.float32) + _NEG,
          jnp.zeros((rows,), jnp.float32))
  acc, top, total = lax.fori_loop(0, row_ref[0], body, init)
  empty = total == 0.0
  total = jnp.where(empty, 1.0, total)
  out_ref[...] = (acc / total[:, None]).astype(out_ref.dtype)
  lse_ref[...] = jnp.where(empty, _NEG, top + jnp.log(total))


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, seg_q_ref, seg_k_ref, i_ref,
               j_ref, row_ref, values_ref, dq_ref, *dbias_ref, st: _Static):
  """dq (and the bias's partial gradient) of one query block, over its table row."""
  q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
  seg_q, i = seg_q_ref[...], i_ref[...]
  bias_values = _load_values(values_ref, st)

  def body(m, carry):
    keys = pl.ds(row_ref[m + 1] * st.block_k, st.block_k)
    k, v, j = k_ref[keys, :], v_ref[keys, :], j_ref[keys]
    scores, mask = _tile(st, q, k, seg_q, seg_k_ref[keys], i, j, bias_values)
    probs = jnp.where(mask, jnp.exp(scores - lse[:, None]), 0.0)
    dprobs = plgpu.dot(do, v, trans_b=True, precision=st.precision)
    ds = probs * (dprobs - delta[:, None])
    dq = carry[0] + plgpu.dot(ds.astype(k.dtype), k, precision=st.precision)
    if not dbias_ref:
      return (dq,)
    return dq, carry[1] + _bias_grad(st.starts, j[None, :] - i[:, None], ds,
                                     dbias_ref[0].shape[-1])

  init = (jnp.zeros(q.shape, jnp.float32),)
  if dbias_ref:
    init += (jnp.zeros(dbias_ref[0].shape, jnp.float32),)
  dq, *dbias = lax.fori_loop(0, row_ref[0], body, init)
  dq_ref[...] = (dq * st.scale).astype(dq_ref.dtype)
  if dbias_ref:
    dbias_ref[0][...] = dbias[0]


def _dkv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, seg_q_ref, seg_k_ref, i_ref,
                j_ref, col_ref, values_ref, dk_ref, dv_ref, *, st: _Static):
  """dk and dv of one key block, over the query blocks that list it (col_ref: count, blocks)."""
  k, v, seg_k, j = k_ref[...], v_ref[...], seg_k_ref[...], j_ref[...]
  bias_values = _load_values(values_ref, st)

  def body(n, carry):
    dk, dv = carry
    queries = pl.ds(col_ref[n + 1] * st.block_q, st.block_q)
    q, do = q_ref[queries, :], do_ref[queries, :]
    scores, mask = _tile(st, q, k, seg_q_ref[queries], seg_k, i_ref[queries], j, bias_values)
    probs = jnp.where(mask, jnp.exp(scores - lse_ref[queries][:, None]), 0.0)
    dv += plgpu.dot(probs.astype(do.dtype), do, trans_a=True, precision=st.precision)
    dprobs = plgpu.dot(do, v, trans_b=True, precision=st.precision)
    ds = probs * (dprobs - delta_ref[queries][:, None])
    dk += plgpu.dot(ds.astype(q.dtype), q, trans_a=True, precision=st.precision)
    return dk, dv

  init = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
  dk, dv = lax.fori_loop(0, col_ref[0], body, init)
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


def _table_spec(table):  # 1 or B x R (or C) x width: a row per program
  shared = table.shape[0] == 1
  return pl.BlockSpec((None, None, table.shape[2]), lambda x, b, h: (0 if shared else b, x, 0))


def _values_spec(values):
  return None if values is None else pl.BlockSpec((None, values.shape[1]), lambda x, b, h: (h, 0))


def _call(st: _Static, kernel, grid, in_specs, out_specs, out_shape, name):
  return pl.pallas_call(
      functools.partial(kernel, st=st), grid=grid, in_specs=in_specs, out_specs=out_specs,
      out_shape=out_shape, interpret=st.interpret, name=name,
      compiler_params=plgpu.CompilerParams(num_warps=st.num_warps, num_stages=st.num_stages))


def _forward(st: _Static, q, k, v, side, values):
  """(out_BxTxHxK, lse_BxHxT): lse head-major, so that a program's block is contiguous."""
  (batch, t, heads, dim), s = q.shape, k.shape[1]
  seg_q, seg_k, i, j, rows, _ = side
  bq, bk = st.block_q, st.block_k
  return _call(
      st, _forward_kernel, (t // bq, batch, heads),
      [_heads_spec(t, bq, dim, True), _heads_spec(s, bk, dim, False),
       _heads_spec(s, bk, dim, False), _tokens_spec(t, bq, True), _tokens_spec(s, bk, False),
       _tokens_spec(t, bq, True), _tokens_spec(s, bk, False), _table_spec(rows),
       _values_spec(values)],
      [_heads_spec(t, bq, dim, True), _lse_spec(t, bq, True)],
      [jax.ShapeDtypeStruct(q.shape, q.dtype),
       jax.ShapeDtypeStruct((batch, heads, t), jnp.float32)],
      "block_attention_forward")(q, k, v, seg_q, seg_k, i, j, rows, values)


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
  seg_q, seg_k, i, j, rows, cols = side
  bq, bk = st.block_q, st.block_k
  # d lse / d score = prob: an lse cotangent (from merging parts) shifts delta.
  delta_BxHxT = jnp.einsum("bthk,bthk->bht", out.astype(jnp.float32),
                           dout.astype(jnp.float32)) - dlse_BxHxT
  args = (q, k, v, dout, lse_BxHxT, delta_BxHxT, seg_q, seg_k, i, j)

  def specs(q_tiled):
    kv_tiled = not q_tiled
    return [_heads_spec(t, bq, dim, q_tiled), _heads_spec(s, bk, dim, kv_tiled),
            _heads_spec(s, bk, dim, kv_tiled), _heads_spec(t, bq, dim, q_tiled),
            _lse_spec(t, bq, q_tiled), _lse_spec(t, bq, q_tiled), _tokens_spec(t, bq, q_tiled),
            _tokens_spec(s, bk, kv_tiled), _tokens_spec(t, bq, q_tiled),
            _tokens_spec(s, bk, kv_tiled)]

  dq_specs, dq_shapes = [_heads_spec(t, bq, dim, True)], [jax.ShapeDtypeStruct(q.shape, q.dtype)]
  if values_HxW is not None:
    width = values_HxW.shape[1]
    dq_specs.append(pl.BlockSpec((None, None, None, width), lambda x, b, h: (b, h, x, 0)))
    dq_shapes.append(jax.ShapeDtypeStruct((batch, heads, t // bq, width), jnp.float32))
  dq, *dbias_BxHxRxW = _call(st, _dq_kernel, (t // bq, batch, heads),
                             specs(True) + [_table_spec(rows), _values_spec(values_HxW)],
                             dq_specs, dq_shapes, "block_attention_dq")(*args, rows, values_HxW)
  dk, dv = _call(st, _dkv_kernel, (s // bk, batch, heads),
                 specs(False) + [_table_spec(cols), _values_spec(values_HxW)],
                 [_heads_spec(s, bk, dim, True)] * 2,
                 [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
                 "block_attention_dkv")(*args, cols, values_HxW)
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


def _power_of_two(name: str, value: int):
  if value < 16 or value & (value - 1):
    raise ValueError(f"{name} must be a power of two >= 16 (Triton's tile sizes), got {value}")


def _check(q, k, v, seg_q, seg_k, table, valid, block_q, block_k, q_coords, kv_coords):
  if q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or (
      q.shape[0], q.shape[2:]) != (k.shape[0], k.shape[2:]):
    raise ValueError(f"q, k, v must be B x T x H x K, B x S x H x K twice; got {q.shape}, "
                     f"{k.shape}, {v.shape}")
  if q.dtype not in (jnp.float32, jnp.bfloat16) or k.dtype != q.dtype or v.dtype != q.dtype:
    raise ValueError(f"q, k, v must all be float32 or all bfloat16, got {q.dtype}, {k.dtype}, "
                     f"{v.dtype}")
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
  """
  table, valid = jnp.asarray(table, jnp.int32), jnp.asarray(valid, bool)
  _check(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, q_segments_BxT, kv_segments_BxS, table, valid,
         block_q, block_k, q_coords_BxT, kv_coords_BxS)
  (batch, t, heads, dim), s = q_BxTxHxK.shape, k_BxSxHxK.shape[1]
  coords = lambda x, n: jnp.broadcast_to(
      jnp.arange(n, dtype=jnp.int32) if x is None else jnp.asarray(x, jnp.int32), (batch, n))
  values, starts = (None, None) if bias is None else _bias_intervals(bias, heads)
  st = _Static(block_q, block_k, causal, rule, dim ** -0.5 if scale is None else float(scale),
               starts, precision, num_warps or (4 if dim <= 64 else 8), num_stages, interpret)
  # Clipped so that no program reads outside k and v; valid entries are in range anyway.
  table = jnp.clip(table, 0, s // block_k - 1)
  side = (jnp.asarray(q_segments_BxT, jnp.int32), jnp.asarray(kv_segments_BxS, jnp.int32),
          coords(q_coords_BxT, t), coords(kv_coords_BxS, s), _rows(table, valid),
          _columns(table, valid, s // block_k))
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
