"""The sparse attention kinds, one definition each, and everything derived from them.

A kind is one module (local.py, strided.py, bigbird.py, global_local.py) whose Kind
gives its size options (with defaults and checks), its pattern on an example's own
positions, the blocked-kernel parts that compute exactly that pattern, whether the
pattern depends on the example's length (decoding caches), and its splash mask with
splash's facts about it (largest block, exact on packed rows). From the table KINDS
come AttentionConfig (every size option, the `model.attention` config section), the
attention-mask flags, the plots, the model's validation, the kernel dispatch
(dispatch.py) and splash (splash.py) on every backend. Adding a kind: write its
module and add it to KINDS.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np

from refinedweb_jax.model.attention import bigbird, blocked, global_local, local, strided

KINDS = {kind.name: kind for kind in (local.KIND, strided.KIND, bigbird.KIND,
                                      global_local.KIND)}
ATTENTION_KINDS = ("dense",) + tuple(KINDS)


def _sizes() -> dict:
  """Every size option by name; two kinds sharing an option share its definition."""
  sizes = {}
  for kind in KINDS.values():
    for size in kind.sizes:
      if sizes.setdefault(size.name, size) is not size:
        raise TypeError(f"attention size {size.name!r} is defined twice (kind {kind.name}); "
                        "share one Size")
  return sizes


SIZES = _sizes()
AttentionConfig = dataclasses.make_dataclass(
    "AttentionConfig", [(s.name, type(s.default), dataclasses.field(default=s.default))
                        for s in SIZES.values()], frozen=True)
AttentionConfig.__doc__ = ("Size options of the sparse kinds (kinds.SIZES); each kind reads "
                           "its own (Kind.sizes).")


def check_kind(kind: str, where: str) -> str:
  """Returns `kind` if it is a known attention kind, else raises naming it."""
  if kind not in ATTENTION_KINDS:
    raise ValueError(
        f"unknown attention kind {kind!r} for {where}; allowed: {', '.join(ATTENTION_KINDS)}")
  return kind


def check_sizes(cfg, where: str = "model.attention"):
  """Validates every size on its own (its minimum, choices, format), whichever kinds run."""
  for name, size in SIZES.items():
    size.check(getattr(cfg, name), where)


def check(kind: str, cfg, where: str = "model.attention"):
  """Validates the sizes `kind` reads: each in range, then their relations."""
  for size in KINDS[kind].sizes:
    size.check(getattr(cfg, size.name), where)
  KINDS[kind].check(cfg, where)


def check_length(kind: str, cfg, length: int, where: str = "model.attention"):
  """Raises if sequences of `length` tokens cannot hold the kind's sizes."""
  if kind != "dense":
    KINDS[kind].check_length(cfg, length, where)


def aligned(kind: str) -> bool:
  """Whether packed examples must start on block boundaries for this kind."""
  return kind != "dense" and KINDS[kind].aligned


def length_dependent(kind: str) -> bool:
  """Whether a position's keys depend on the example's whole length (decoding caches)."""
  return kind != "dense" and KINDS[kind].length_dependent


def allowed(kind: str, cfg, i, j, n: int, causal: bool, layer=0):
  """The pattern: may query position i see key position j of an example of n tokens.

  layer: the layer's index (an int, or traced in a scan over layers); BigBird's random
  blocks differ per layer.
  """
  if kind == "dense":
    return (j <= i) if causal else jnp.ones(jnp.broadcast_shapes(jnp.shape(i), jnp.shape(j)),
                                            bool)
  return KINDS[kind].allowed(cfg, i, j, n, causal, layer)


def pattern(kind: str, cfg, length: int, causal: bool = False, layer: int = 0) -> np.ndarray:
  """The pattern of one example of `length` tokens as a dense bool array (tests, plots)."""
  pos = jnp.arange(length)
  return np.asarray(allowed(kind, cfg, pos[:, None], pos[None, :], length, causal, layer))


def attend(kind: str, cfg, q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN, *, causal: bool,
           bias=None, layer=0, pallas: bool = False):
  """softmax(QK^T/sqrt(K) + bias + M) V over the kind's pattern M, in O(N * keys-per-query).

  Packed rows: segment ids 1, 2, ... mark contiguous examples (0 = padding); each gets
  its own pattern. For aligned kinds every example starts on a block boundary. bias:
  T5's relative position bias (relative.RelativeBias), or None; layer: the layer's index;
  pallas: the blocked parts run in the Pallas flash kernel (flash.py, GPU).
  """
  length, b = q_BxNxHxK.shape[1], cfg.block_size
  pad = -length % b
  padded = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  # Padded tail tokens get segment 0: they are never attended, and their rows are cut off.
  q, k, v, seg = (padded(x) for x in (q_BxNxHxK, k_BxNxHxK, v_BxNxHxK, segment_ids_BxN))
  out = KINDS[kind].attend(cfg, q, k, v, blocked.layout(seg, b, bias, layer, pallas), causal)
  return out[:, :length]
