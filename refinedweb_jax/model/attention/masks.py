"""Masks and constants the attention kernels share (no kernel imports another for them).

NEG: the finite "minus infinity" of masked scores, so that a fully masked row stays NaN-free
and the blocked parts of one query (blocked.py, flash.py) merge. PatternMask: a sparse
kind's pattern as a lazy splash mask (splash.py), defined by the kind's own module.
"""

import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

NEG = -1e30


class PatternMask(sm.Mask):
  """A lazy mask: rule(i_Tx1, j_1xS) -> bool (NumPy, row indices), computed one block at a time.

  Splash reads it block by block and keeps only the distinct partly-set blocks, so a
  long sequence never holds the T x S array. key: hashable, everything `rule` depends
  on (with the shape it identifies the mask in the kernel cache). chunk_key(rows, cols)
  -> hashable, optional: equal for blocks whose values are equal (e.g. the offset
  rows[0] - cols[0] of a translation-invariant rule), so that each distinct block is
  computed once instead of every block on each of splash's (up to six) passes.
  """

  _MEMO = 1 << 14  # blocks remembered by chunk_key; their arrays are shared by value

  def __init__(self, shape, rule, key, chunk_key=None):
    self._shape, self.rule, self.key, self.chunk_key = tuple(shape), rule, key, chunk_key
    self._by_key, self._by_value = {}, {}

  @property
  def shape(self):
    return self._shape

  def __getitem__(self, idx):
    rows, cols = block_ranges(idx, self._shape)
    if self.chunk_key is None:
      return self._compute(rows, cols)
    key = self.chunk_key(rows, cols)
    out = self._by_key.get(key)
    if out is None:
      out = self._compute(rows, cols)
      if len(self._by_key) < self._MEMO:
        out = self._by_value.setdefault((out.shape, out.tobytes()), out)
        self._by_key[key] = out
    return out

  def _compute(self, rows, cols):
    out = np.broadcast_to(np.asarray(self.rule(rows[:, None], cols[None, :]), bool),
                          (rows.size, cols.size)).copy()
    out.flags.writeable = False  # shared between blocks
    return out

  def __eq__(self, other):
    return type(other) is type(self) and (self._shape, self.key) == (other._shape, other.key)

  def __hash__(self):
    return hash((type(self), self._shape, self.key))



def block_ranges(idx, shape):
  """The row and column indices of a 2-d slice index (splash asks for blocks as slices)."""
  if len(idx) != 2 or not all(isinstance(x, slice) and x.step in (None, 1) for x in idx):
    raise NotImplementedError(f"splash masks take [rows, cols] slices, got {idx!r}")
  return tuple(np.arange(*x.indices(n)) for x, n in zip(idx, shape))
