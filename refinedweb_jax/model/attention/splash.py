"""Pallas splash attention (TPU): dense self- and cross-attention and the sparse kinds' patterns.

On TPU these run through jax.experimental.pallas.ops.tpu.splash_attention, a fused
kernel that skips the blocks its mask leaves empty. Any length runs: queries, keys
and segment ids are padded up to the block (padding gets segment 0) and the output
is cut back. Segment ids follow the packing convention (0 is padding): a real query
sees exactly the keys dense.make_attention_mask gives it, those of its own segment
that the mask allows; a padding query's output is finite and meaningless (splash
lets it see padding keys, the reference nothing). T5's relative position bias cannot
be added: why_not says so, and the caller runs another kernel. `interpret=True` runs
the kernel in Pallas interpret mode (slow; the CPU tests).

Blocks: a length's block is the largest power of two in [128, 512] that divides the
length rounded up to 128 (block_size); the backward pass uses the forward's blocks,
in the fused dq/dk/dv kernel while the keys span at most 8 blocks (it keeps one dq
per key block).

Masks are lazy: the built-in causal and full masks, and each sparse kind's own
(Kind.splash_mask in the kinds table: splash's local mask, masks.PatternMask for the
others). Splash turns a mask into block-sparse tables (MaskInfo) on the host one block
at a time, keeping only the distinct partly-set blocks; kernels are cached per mask,
head count and block sizes (a bounded LRU).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

from refinedweb_jax import sharding
from refinedweb_jax.model.attention import kinds
from refinedweb_jax.model.attention.masks import block_ranges

BLOCK = 128  # the smallest block (a TPU lane row): lengths are padded to a multiple of it
MAX_BLOCK = 512
_FUSED_MAX_KV_BLOCKS = 8  # the fused backward holds key-blocks x q's size of partial dq
_KERNELS = 16  # cached kernels (each holds its block tables on the device)


def why_not(*, interpret: bool = False, bias=None) -> str:
  """Why splash cannot run here, in a few words for a log line; '' when it can."""
  if bias is not None:
    return "splash attention cannot add T5's relative position bias"
  backend = jax.default_backend()
  if not interpret and backend != "tpu":
    return f"splash attention runs on TPU only (backend: {backend})"
  return ""


def usable(length: int | None = None, *, interpret: bool = False, bias=None) -> bool:
  """Whether splash can run here (why_not is ''); every length can (padded to the block)."""
  del length
  return not why_not(interpret=interpret, bias=bias)


def block_size(length: int, limit: int = MAX_BLOCK) -> int:
  """The largest power of two in [128, limit] dividing `length` rounded up to 128."""
  if length < 1:
    raise ValueError(f"splash attention needs a positive length, got {length}")
  _check_block("limit", limit)
  padded, block = _round_up(length, BLOCK), BLOCK
  while block * 2 <= limit and padded % (block * 2) == 0:
    block *= 2
  return block


def block_sizes(block_q: int, block_kv: int, kv_length: int,
                fused_bwd: bool | None = None) -> sk.BlockSizes:
  """Forward and backward blocks; fused_bwd None: fused while kv_length spans <= 8 key blocks."""
  _check_block("block_q", block_q)
  _check_block("block_kv", block_kv)
  if fused_bwd is None:
    fused_bwd = kv_length <= _FUSED_MAX_KV_BLOCKS * block_kv
  dq = {} if fused_bwd else dict(block_q_dq=block_q, block_kv_dq=block_kv)
  return sk.BlockSizes(block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv,
                       block_q_dkv=block_q, block_kv_dkv=block_kv,
                       block_kv_dkv_compute=block_kv, use_fused_bwd_kernel=fused_bwd, **dq)


def _check_block(name: str, block: int):
  if not isinstance(block, (int, np.integer)) or block < BLOCK or block % BLOCK:
    raise ValueError(f"splash {name}={block!r} must be a positive multiple of {BLOCK}")


def _round_up(n: int, block: int) -> int:
  return -(-n // block) * block


def causal_mask(length: int):
  """Dense causal self-attention's mask."""
  return sm.CausalMask((length, length))


def full_mask(q_length: int, kv_length: int):
  """Dense mask without a pattern: encoder self-attention, cross-attention."""
  return sm.FullMask((q_length, kv_length))


class _Padded(sm.Mask):
  """`base` (T x S) grown to `shape`: padded rows see the last real key and the padded keys.

  Padded keys are never seen by real rows (their segment ids differ anyway); a padded
  row needs one allowed key so that its block is visited and its softmax finite.
  """

  def __init__(self, base, shape):
    self.base, self._shape = base, tuple(shape)

  @property
  def shape(self):
    return self._shape

  def __getitem__(self, idx):
    rows, cols = block_ranges(idx, self._shape)
    (t, s), out = self.base.shape, np.zeros((rows.size, cols.size), bool)
    real_rows, real_cols = rows[rows < t], cols[cols < s]
    if real_rows.size and real_cols.size:
      out[:real_rows.size, :real_cols.size] = self.base[
          slice(real_rows[0], real_rows[-1] + 1), slice(real_cols[0], real_cols[-1] + 1)]
    out[real_rows.size:] = cols >= s - 1
    return out

  def __eq__(self, other):
    return type(other) is type(self) and (self.base, self._shape) == (other.base, other._shape)

  def __hash__(self):
    return hash((type(self), self.base, self._shape))


def _splash_kind(kind: str):
  """The Kind of a sparse kind that has a splash mask (Kind.splash_mask), else raises naming it."""
  if kind not in kinds.KINDS or kinds.KINDS[kind].splash_mask is None:
    allowed = [name for name, k in kinds.KINDS.items() if k.splash_mask is not None]
    raise ValueError(f"no splash mask for attention kind {kind!r}; allowed: {', '.join(allowed)}")
  return kinds.KINDS[kind]


def sparse_mask(kind: str, cfg, length: int, causal: bool, layer: int = 0,
                padded_length: int | None = None):
  """A sparse kind's mask, padded_length square (default length): kinds.allowed on row indices.

  Entry (i, j) is allowed(cfg, i, j, length, causal, layer): the pattern of one example
  of `length` tokens starting at row index 0 (the kind's Kind.splash_mask). layer: a
  Python int (BigBird draws its random blocks per layer).
  """
  padded = length if padded_length is None else padded_length
  if padded < length:
    raise ValueError(f"splash padded_length={padded} is shorter than length={length}")
  return _splash_kind(kind).splash_mask(cfg, padded, causal, layer, n=length)


def sparse_block_limit(kind: str, cfg) -> int:
  """The largest block for a kind: its Kind.splash_block clipped to [BLOCK, MAX_BLOCK], if any."""
  limit = _splash_kind(kind).splash_block
  return MAX_BLOCK if limit is None else max(BLOCK, min(MAX_BLOCK, limit(cfg)))


def dense(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, q_segment_ids_BxT, kv_segment_ids_BxS=None, *,
          causal: bool, block_q: int | None = None, block_kv: int | None = None,
          fused_bwd: bool | None = None, interpret: bool = False):
  """Dense attention within segments: self-attention, or cross-attention given kv segment ids.

  kv_segment_ids_BxS None: the keys are the queries' positions (self-attention).
  causal: key j <= query i (self-attention: T == S). Blocks default to block_size.
  """
  t, s = q_BxTxHxK.shape[1], k_BxSxHxK.shape[1]
  if causal and t != s:
    raise ValueError(f"causal splash attention needs as many queries as keys, got T={t} S={s}")
  block_q, block_kv = block_q or block_size(t), block_kv or block_size(s)
  tp, sp = _round_up(t, block_q), _round_up(s, block_kv)
  mask = sm.CausalMask((tp, sp)) if causal else full_mask(tp, sp)
  return attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, q_segment_ids_BxT, mask,
                   kv_segment_ids_BxS=kv_segment_ids_BxS, block_q=block_q, block_kv=block_kv,
                   fused_bwd=fused_bwd, interpret=interpret)


def sparse(kind: str, cfg, q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, *, causal: bool,
           layer: int = 0, block: int | None = None, fused_bwd: bool | None = None,
           interpret: bool = False):
  """A sparse kind's self-attention within segments, its pattern on row indices (sparse_mask).

  Exact where each row holds one example starting at position 0 (trailing padding is
  fine), and in packed rows too for kinds with the same pattern at every offset
  (Kind.splash_packed: local).
  BigBird not causal also needs the example to reach the row's last BigBird block
  (its random blocks are drawn among the example's blocks); layer must be an int.
  block: the query and key block (default block_size under sparse_block_limit).
  """
  length = q_BxNxHxK.shape[1]
  block = block or block_size(length, sparse_block_limit(kind, cfg))
  mask = sparse_mask(kind, cfg, length, causal, layer, _round_up(length, block))
  return attention(q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, mask, block_q=block,
                   block_kv=block, fused_bwd=fused_bwd, interpret=interpret)


def attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, segment_ids_BxT, head_mask, *,
              kv_segment_ids_BxS=None, block_q: int | None = None, block_kv: int | None = None,
              fused_bwd: bool | None = None, interpret: bool = False):
  """Attention within segments over `head_mask`: a splash mask on row indices, every head's.

  head_mask: T x S, or already T x S rounded up to the blocks (block_size by default);
  a T x S mask is grown lazily. Under a mesh, the kernel runs per shard (shard_map)
  with the activations' own sharding (batch and heads, from the logical-axis rules).
  """
  t, s = q_BxTxHxK.shape[1], k_BxSxHxK.shape[1]
  block_q, block_kv = block_q or block_size(t), block_kv or block_size(s)
  sizes = block_sizes(block_q, block_kv, _round_up(s, block_kv), fused_bwd)
  padded = (_round_up(t, block_q), _round_up(s, block_kv))
  if tuple(head_mask.shape) == (t, s) and padded != (t, s):
    head_mask = _Padded(head_mask, padded)
  elif tuple(head_mask.shape) != padded:
    raise ValueError(f"splash mask shape {tuple(head_mask.shape)} fits neither T x S = {t} x {s} "
                     f"nor the padded {padded[0]} x {padded[1]}")
  if kv_segment_ids_BxS is None:
    kv_segment_ids_BxS = segment_ids_BxT
  fn = functools.partial(_local, head_mask=head_mask, sizes=sizes, interpret=interpret)
  args = (q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, segment_ids_BxT, kv_segment_ids_BxS)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return fn(*args)
  qkv_spec = sharding.spec(("batch", "length", "heads", "kv"))
  seg_spec = sharding.spec(("batch", "length"))
  return jax.shard_map(fn, mesh=mesh, in_specs=(qkv_spec,) * 3 + (seg_spec,) * 2,
                       out_specs=qkv_spec, check_vma=False)(*args)


@functools.lru_cache(maxsize=_KERNELS)
def _kernel(head_mask, heads: int, sizes, interpret: bool):
  # Built eagerly, also inside jit, and kept as host arrays: the cached kernel serves
  # later traces, so its block tables must be neither one trace's tracers nor arrays
  # on one device; each trace takes them as constants.
  with jax.ensure_compile_time_eval():
    kernel = sk.make_splash_mha(sm.MultiHeadMask([head_mask] * heads), block_sizes=sizes,
                                head_shards=1, q_seq_shards=1, interpret=interpret)
  return jax.tree.map(np.asarray, kernel)


def _local(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, q_segment_ids_BxT, kv_segment_ids_BxS, head_mask,
           sizes, interpret):
  """The kernel on arrays local to one device: padded to the mask, vmapped over batch."""
  t, heads, dim = q_BxTxHxK.shape[1:]
  tp, sp = head_mask.shape
  kernel = _kernel(head_mask, heads, sizes, interpret)

  def pad(x, length):  # padding positions get zeros: segment 0
    return jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2))

  to_heads = lambda x: x.transpose(0, 2, 1, 3)
  q = q_BxTxHxK * np.float32(dim ** -0.5).astype(q_BxTxHxK.dtype)
  q, k, v = to_heads(pad(q, tp)), to_heads(pad(k_BxSxHxK, sp)), to_heads(pad(v_BxSxHxK, sp))
  q_seg = pad(q_segment_ids_BxT.astype(jnp.int32), tp)
  kv_seg = pad(kv_segment_ids_BxS.astype(jnp.int32), sp)

  def one(q, k, v, q_seg, kv_seg):
    return kernel(q, k, v, segment_ids=sk.SegmentIds(q=q_seg, kv=kv_seg))

  return to_heads(jax.vmap(one)(q, k, v, q_seg, kv_seg))[:, :t]
