"""Sparse self-attention that computes only the allowed pairs.

A pattern M says which (query i, key j) pairs may attend; `allowed` defines it
elementwise for every kind. The kernel splits M into disjoint parts, each
computed in O(n * keys-per-query) time and memory, never as an n x n matrix:

  blocked   the key blocks of a per-query-block table (sliding window, stride
            period, BigBird window/global/random blocks), scanned chunk by chunk;
  extra     a fixed set of key positions every query may see (summary columns,
            global tokens) outside the blocked part;
  residue   the strided variant's every-s-th key, attended within residue classes;
  global    rows of global queries, which attend to every key.

Parts are merged through their log-sum-exps (as in flash attention), so the
result is exactly softmax over M. Shapes: B batch, N length, H heads, K head dim.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

SPARSE_KINDS = ("local", "strided", "bigbird", "global_local")
STRIDED_VARIANTS = ("fixed", "strided")
_NEG = -1e30  # finite "minus infinity": fully masked rows stay NaN-free


@dataclasses.dataclass(frozen=True)
class SparseSpec:
  """Sizes of a sparse pattern (see `allowed` for their meaning)."""
  kind: str
  window: int = 256
  block_size: int = 64
  stride: int = 256
  summary: int = 8
  variant: str = "fixed"
  num_global_blocks: int = 1
  num_window_blocks: int = 3
  num_random_blocks: int = 3
  global_positions: tuple = (0,)
  seed: int = 0
  query_chunk: int = 8

  def __post_init__(self):
    where = "model.*_attention"
    if self.kind not in SPARSE_KINDS:
      raise ValueError(f"unknown sparse attention kind {self.kind!r}; allowed: "
                       f"{', '.join(SPARSE_KINDS)}")
    _positive(self, ("window", "block_size", "stride", "summary", "query_chunk"))
    if self.kind == "strided":
      if self.variant not in STRIDED_VARIANTS:
        raise ValueError(f"unknown strided variant {self.variant!r}; allowed: "
                         f"{', '.join(STRIDED_VARIANTS)}")
      if self.stride % self.block_size:
        raise ValueError(f"attention stride {self.stride} must be a multiple of the block size "
                         f"{self.block_size} for {where}")
      if self.summary > self.stride:
        raise ValueError(f"attention summary {self.summary} must be <= stride {self.stride}")
    if self.kind == "bigbird":
      if self.num_window_blocks < 1 or self.num_window_blocks % 2 == 0:
        raise ValueError(f"bigbird num_window_blocks must be odd and >= 1, got "
                         f"{self.num_window_blocks}")
      if self.num_global_blocks < 0 or self.num_random_blocks < 0:
        raise ValueError("bigbird num_global_blocks and num_random_blocks must be >= 0, got "
                         f"{self.num_global_blocks} and {self.num_random_blocks}")

  def check_length(self, length: int):
    """Raises if this pattern cannot serve a sequence of `length` tokens."""
    if self.kind == "bigbird" and self.num_global_blocks * self.block_size > length:
      raise ValueError(f"bigbird global blocks cover {self.num_global_blocks} x "
                       f"{self.block_size} tokens, more than the length {length}")
    if self.kind == "global_local":
      bad = [p for p in self.global_positions if not 0 <= p < length]
      if bad:
        shown = f"{bad[:5]}" if len(bad) <= 5 else f"{bad[:5]} (and {len(bad) - 5} more)"
        raise ValueError(f"global_local global positions {shown} out of range for length "
                         f"{length}; allowed: 0..{length - 1}")


def _positive(spec, names):
  for name in names:
    if getattr(spec, name) <= 0:
      raise ValueError(f"attention {name} must be > 0, got {getattr(spec, name)}")


def _num_blocks(length, block):
  return -(-length // block)


@functools.lru_cache(maxsize=64)
def random_blocks(spec: SparseSpec, num_blocks: int, causal: bool) -> np.ndarray:
  """BigBird's random key blocks: bool [query block, key block], fixed by spec.seed."""
  rng = np.random.default_rng(spec.seed)
  table = np.zeros((num_blocks, num_blocks), bool)
  half = spec.num_window_blocks // 2
  for qb in range(num_blocks):
    candidates = [kb for kb in range(num_blocks)
                  if abs(kb - qb) > half and kb >= spec.num_global_blocks
                  and (not causal or kb <= qb)]
    if candidates:
      picks = rng.choice(candidates, size=min(spec.num_random_blocks, len(candidates)),
                         replace=False)
      table[qb, picks] = True
  return table


def allowed(spec: SparseSpec, i, j, length: int, causal: bool):
  """The pattern M: may query position i attend to key position j (broadcasting ints)."""
  m = _local_rule(spec, i, j, length, causal)
  if spec.kind == "strided" and spec.variant == "fixed":
    m |= (j % spec.stride) >= spec.stride - spec.summary
  elif spec.kind == "strided":
    m |= ((i - j) % spec.stride) == 0
  elif spec.kind == "bigbird":
    m |= (i // spec.block_size) < spec.num_global_blocks
  elif spec.kind == "global_local":
    g = jnp.asarray(spec.global_positions)
    m |= jnp.isin(i, g) | jnp.isin(j, g)
  if causal:
    m &= j <= i
  return m


def _local_rule(spec, i, j, length, causal):
  """The part of M computed by the blocked kernel (excluding global query rows)."""
  if spec.kind in ("local", "global_local"):
    return jnp.abs(i - j) < spec.window
  if spec.kind == "strided" and spec.variant == "fixed":
    return (i // spec.stride) == (j // spec.stride)
  if spec.kind == "strided":
    return jnp.abs(i - j) < spec.stride
  b = spec.block_size
  qb, kb = i // b, j // b
  rand = jnp.asarray(random_blocks(spec, _num_blocks(length, b), causal))
  return ((jnp.abs(qb - kb) <= spec.num_window_blocks // 2) | (kb < spec.num_global_blocks)
          | rand[jnp.clip(qb, 0, rand.shape[0] - 1), jnp.clip(kb, 0, rand.shape[1] - 1)])


def pattern(spec: SparseSpec, length: int, causal: bool = False) -> np.ndarray:
  """The boolean pattern M as a dense [length, length] array (for tests and plots)."""
  spec.check_length(length)
  pos = jnp.arange(length)
  return np.asarray(allowed(spec, pos[:, None], pos[None, :], length, causal))


def block_table(spec: SparseSpec, length: int, causal: bool):
  """Key blocks each query block needs: (table int [nqb, m], valid bool [nqb, m])."""
  b = spec.block_size
  nb = _num_blocks(length, b)
  if spec.kind == "strided" and spec.variant == "fixed":
    per = spec.stride // b
    rows = [range((qb // per) * per, min((qb // per + 1) * per, nb)) for qb in range(nb)]
  elif spec.kind == "bigbird":
    rand = random_blocks(spec, nb, causal)
    half = spec.num_window_blocks // 2
    rows = [sorted(set(range(max(qb - half, 0), min(qb + half + 1, nb)))
                   | set(range(min(spec.num_global_blocks, nb)))
                   | set(np.flatnonzero(rand[qb]).tolist())) for qb in range(nb)]
  else:
    window = spec.stride if spec.kind == "strided" else spec.window
    reach = -(-(window - 1) // b)  # blocks a window of keys can reach on each side
    rows = [range(max(qb - reach, 0), min(qb + reach + 1, nb)) for qb in range(nb)]
  if causal:
    rows = [[kb for kb in r if kb <= qb] for qb, r in enumerate(rows)]
  width = max(len(r) for r in rows)
  table = np.zeros((nb, width), np.int32)
  valid = np.zeros((nb, width), bool)
  for qb, r in enumerate(rows):
    table[qb, : len(r)] = list(r)
    valid[qb, : len(r)] = True
  return table, valid


def _masked_softmax_parts(scores, mask, v_values, einsum_out):
  """(unnormalised-free) output and log-sum-exp of one part: softmax over its keys only."""
  scores = jnp.where(mask, scores, _NEG)
  lse = jax.nn.logsumexp(scores, axis=-1)
  probs = jnp.exp(scores - lse[..., None]) * mask
  return jnp.einsum(einsum_out, probs.astype(v_values.dtype), v_values), lse


def _blocked_part(spec, q, k, v, q_seg, kv_seg, length, causal):
  """Blocked part: per query block, the gathered key blocks of its table row."""
  b, (batch, n, heads, dim) = spec.block_size, q.shape
  nb = n // b
  table, valid = block_table(spec, length, causal)
  chunk = min(spec.query_chunk, nb)
  pad_blocks = -nb % chunk
  table = np.pad(table, ((0, pad_blocks), (0, 0)))
  valid = np.pad(valid, ((0, pad_blocks), (0, 0)))
  nc = (nb + pad_blocks) // chunk
  qb = jnp.pad(q.reshape(batch, nb, b, heads, dim), ((0, 0), (0, pad_blocks), (0, 0), (0, 0),
                                                      (0, 0)))
  qs = jnp.pad(q_seg.reshape(batch, nb, b), ((0, 0), (0, pad_blocks), (0, 0)))
  kb, vb = k.reshape(batch, nb, b, heads, dim), v.reshape(batch, nb, b, heads, dim)
  ks = kv_seg.reshape(batch, nb, b)
  scale = dim ** -0.5

  @jax.checkpoint
  def one_chunk(args):
    q_c, qs_c, t_c, valid_c, first = args  # q_c [B, C, b, H, K]; t_c [C, m]
    k_c = kb[:, t_c].reshape(batch, chunk, -1, heads, dim)  # [B, C, m*b, H, K]
    v_c = vb[:, t_c].reshape(batch, chunk, -1, heads, dim)
    ks_c = ks[:, t_c].reshape(batch, chunk, -1)
    i = (first + jnp.arange(chunk))[:, None] * b + jnp.arange(b)[None, :]  # [C, b]
    j = (t_c[:, :, None] * b + jnp.arange(b)).reshape(chunk, -1)  # [C, m*b]
    slot = jnp.repeat(valid_c, b, axis=1)  # [C, m*b]
    mask = _local_rule(spec, i[:, :, None], j[:, None, :], length, causal) & slot[:, None, :]
    if causal:
      mask &= j[:, None, :] <= i[:, :, None]
    mask = mask[None] & (qs_c[..., None] == ks_c[:, :, None, :]) & (ks_c[:, :, None, :] != 0)
    scores = jnp.einsum("bcqhd,bckhd->bchqk", q_c, k_c,
                        preferred_element_type=jnp.float32) * scale
    return _masked_softmax_parts(scores, mask[:, :, None], v_c, "bchqk,bckhd->bcqhd")

  xs = (qb.reshape(batch, nc, chunk, b, heads, dim).swapaxes(0, 1),
        qs.reshape(batch, nc, chunk, b).swapaxes(0, 1),
        jnp.asarray(table).reshape(nc, chunk, -1), jnp.asarray(valid).reshape(nc, chunk, -1),
        jnp.arange(nc) * chunk)
  out, lse = jax.lax.map(one_chunk, xs)  # [nc, B, C, b, H, K], [nc, B, C, H, b]
  out = out.swapaxes(0, 1).reshape(batch, nc * chunk * b, heads, dim)[:, :n]
  lse = lse.swapaxes(0, 1).transpose(0, 1, 2, 4, 3).reshape(batch, nc * chunk * b, heads)[:, :n]
  return out, lse


def _extra_keys(spec, length):
  """Positions every query may see outside the blocked part, or None."""
  if spec.kind == "strided" and spec.variant == "fixed":
    return np.flatnonzero(np.arange(length) % spec.stride >= spec.stride - spec.summary)
  if spec.kind == "global_local":
    return np.asarray(sorted(set(spec.global_positions)), np.int64)
  return None


def _extra_part(spec, q, k, v, q_seg, kv_seg, positions, length, causal):
  """Attention to a fixed key subset E, excluding pairs the blocked part already covers."""
  k_e, v_e, s_e = k[:, positions], v[:, positions], kv_seg[:, positions]
  i = jnp.arange(q.shape[1])[:, None]
  j = jnp.asarray(positions)[None, :]
  mask = ~_local_rule(spec, i, j, length, causal)
  if causal:
    mask &= j <= i
  mask = mask[None, None] & ((q_seg[:, :, None] == s_e[:, None, :]) & (s_e[:, None, :] != 0))[
      :, None]
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k_e, preferred_element_type=jnp.float32)
  out, lse = _masked_softmax_parts(scores * q.shape[-1] ** -0.5, mask, v_e, "bhqk,bkhd->bqhd")
  return out, lse.transpose(0, 2, 1)


def _residue_part(spec, q, k, v, q_seg, kv_seg, causal):
  """Strided variant: keys j with (i - j) % stride == 0 and |i - j| >= stride, per residue class."""
  batch, n, heads, dim = q.shape
  s = spec.stride
  pad = -n % s
  rows = (n + pad) // s
  to_classes = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)).reshape(
      (batch, rows, s) + x.shape[2:]).swapaxes(1, 2)  # [B, s, rows, ...]
  qr, kr, vr = to_classes(q), to_classes(k), to_classes(v)
  qsr, ksr = to_classes(q_seg), to_classes(kv_seg)
  t = jnp.arange(rows)
  mask = t[:, None] != t[None, :]  # |i - j| >= s within a class means a different row
  if causal:
    mask &= t[None, :] < t[:, None]
  mask = mask[None, None] & (qsr[..., :, None] == ksr[..., None, :]) & (ksr[..., None, :] != 0)
  scores = jnp.einsum("bcqhd,bckhd->bchqk", qr, kr, preferred_element_type=jnp.float32)
  out, lse = _masked_softmax_parts(scores * dim ** -0.5, mask[:, :, None], vr,
                                   "bchqk,bckhd->bcqhd")
  out = out.swapaxes(1, 2).reshape(batch, rows * s, heads, dim)[:, :n]
  lse = lse.transpose(0, 3, 1, 2).reshape(batch, rows * s, heads)[:, :n]
  return out, lse


def _global_queries(spec, length):
  if spec.kind == "bigbird":
    return np.arange(min(spec.num_global_blocks * spec.block_size, length))
  if spec.kind == "global_local":
    return np.asarray(sorted(set(spec.global_positions)), np.int64)
  return None


def sparse_attention(spec: SparseSpec, q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, q_segment_ids_BxN,
                     kv_segment_ids_BxN, *, causal: bool):
  """softmax(QK^T/sqrt(K) + M) V over the pattern M of `spec`, in O(N * keys-per-query)."""
  length = q_BxNxHxK.shape[1]
  spec.check_length(length)
  b = spec.block_size
  pad = -length % b
  padded = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  # Padded tail tokens get segment 0: they are never attended, and their rows are cut off.
  q, k, v = padded(q_BxNxHxK), padded(k_BxNxHxK), padded(v_BxNxHxK)
  q_seg, kv_seg = padded(q_segment_ids_BxN), padded(kv_segment_ids_BxN)
  parts = [_blocked_part(spec, q, k, v, q_seg, kv_seg, length, causal)]
  extra = _extra_keys(spec, length)
  if extra is not None and len(extra):
    parts.append(_extra_part(spec, q, k, v, q_seg, kv_seg, extra, length, causal))
  if spec.kind == "strided" and spec.variant == "strided":
    parts.append(_residue_part(spec, q, k, v, q_seg, kv_seg, causal))
  out, lse = parts[0]
  for part_out, part_lse in parts[1:]:
    total = jnp.logaddexp(lse, part_lse)
    out = (out * jnp.exp(lse - total)[..., None].astype(out.dtype)
           + part_out * jnp.exp(part_lse - total)[..., None].astype(out.dtype))
    lse = total
  out = out[:, :length]
  rows = _global_queries(spec, length)
  if rows is not None and len(rows):
    out = out.at[:, rows].set(_global_rows(spec, q_BxNxHxK, k_BxNxHxK, v_BxNxHxK,
                                           q_segment_ids_BxN, kv_segment_ids_BxN, rows, causal))
  return out


def _global_rows(spec, q, k, v, q_seg, kv_seg, rows, causal):
  """Dense attention for the global query rows: O(len(rows) * N)."""
  i = jnp.asarray(rows)[:, None]
  j = jnp.arange(k.shape[1])[None, :]
  mask = jnp.ones(i.shape[:1] + j.shape[1:], bool)
  if causal:
    mask &= j <= i
  qs = q_seg[:, rows]
  mask = mask[None] & (qs[:, :, None] == kv_seg[:, None, :]) & (kv_seg[:, None, :] != 0)
  scores = jnp.einsum("bqhd,bkhd->bhqk", q[:, rows], k, preferred_element_type=jnp.float32)
  out, _ = _masked_softmax_parts(scores * q.shape[-1] ** -0.5, mask[:, None], v,
                                 "bhqk,bkhd->bqhd")
  return out
