"""The fused projections' parameter layout, and the separate one of runs saved before it.

Since the fused layout, a layer's self-attention has one kernel `qkv` [D, 3, H, K]
(queries, keys, values in that order), its cross-attention keeps `query` [D, H, K] and
has one `key_value` [D, 2, H, K], and a gated MLP has one `wi` [D, 2, F] (the activated
half, then the gate). Earlier runs saved `query`, `key`, `value` and `wi_0`, `wi_1`.
`fuse` turns any tree holding the old layout (parameters, or optimizer moments that
mirror them; scanned layers' leading axis and int8 scales included) into the new one;
`split` is its inverse. Both are pure and work on nested dicts inside any pytree.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SELF = ("attention", "self_attention")
# (module, fused name, the old names in stacked order, the stacked axis from the end of
# a kernel: before H, K for attention, before F for the MLP).
FUSIONS = (
    (SELF, "qkv", ("query", "key", "value"), -3),
    (("cross_attention",), "key_value", ("key", "value"), -3),
    (("mlp",), "wi", ("wi_0", "wi_1"), -2),
)


def _is_layer(x) -> bool:
  return isinstance(x, dict) and any(m in x for m in SELF + ("mlp",))


def _stack(parts, axis: int):
  if isinstance(parts[0], nn.Partitioned):  # a boxed leaf: its names gain the stacked axis
    names = list(parts[0].names)
    names.insert(len(names) + axis + 1, None)
    return parts[0].replace(value=_stack([p.value for p in parts], axis), names=tuple(names))
  if isinstance(parts[0], jax.ShapeDtypeStruct):
    raise TypeError("fuse() takes arrays; split() the abstract tree instead")
  if all(isinstance(p, np.ndarray) for p in parts):
    return np.stack(parts, axis=axis)
  return jnp.stack(parts, axis=axis)


def _take(x, i: int, axis: int):
  """Entry i of the stacked axis; for an abstract leaf, its shape and sharding without it."""
  if isinstance(x, nn.Partitioned):
    names = x.names[:len(x.names) + axis] + x.names[len(x.names) + axis + 1:]
    return x.replace(value=_take(x.value, i, axis), names=names)
  if isinstance(x, jax.ShapeDtypeStruct):
    shape = x.shape[:x.ndim + axis] + x.shape[x.ndim + axis + 1:]
    sharding = x.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
      spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
      spec = spec[:x.ndim + axis] + spec[x.ndim + axis + 1:]
      sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec))
    return jax.ShapeDtypeStruct(shape, x.dtype, sharding=sharding)
  return jnp.take(x, i, axis=axis) if isinstance(x, jax.Array) else np.take(x, i, axis=axis)


def _fuse_layer(layer: dict) -> dict:
  layer = dict(layer)
  for modules, fused, parts, axis in FUSIONS:
    for m in modules:
      block = layer.get(m)
      if not isinstance(block, dict) or not all(p in block for p in parts):
        continue
      block = dict(block)
      names = block[parts[0]].keys()  # kernel (and kernel_scale when quantized)
      block[fused] = {n: _stack([block[p][n] for p in parts], axis) for n in names}
      for p in parts:
        del block[p]
      layer[m] = block
  return layer


def _split_layer(layer: dict) -> dict:
  layer = dict(layer)
  for modules, fused, parts, axis in FUSIONS:
    for m in modules:
      block = layer.get(m)
      if not isinstance(block, dict) or fused not in block:
        continue
      block = dict(block)
      stacked = block.pop(fused)
      for i, p in enumerate(parts):
        block[p] = {n: _take(v, i, axis) for n, v in stacked.items()}
      layer[m] = block
  return layer


def fuse(tree):
  """`tree` with every layer's separate projections (the old layout) fused."""
  return jax.tree.map(lambda x: _fuse_layer(x) if _is_layer(x) else x, tree, is_leaf=_is_layer)


def split(tree):
  """`tree` with every fused projection split into the old separate ones (inverse of fuse)."""
  return jax.tree.map(lambda x: _split_layer(x) if _is_layer(x) else x, tree, is_leaf=_is_layer)


def is_old(flat: dict) -> bool:
  """Whether flat parameter paths (tuples of names) have the separate (old) layout."""
  return any(len(path) >= 2 and path[-2] in ("key", "wi_1") for path in flat)


def restore_either(restore_fn, abstract):
  """restore_fn(abstract) of a checkpoint in the fused layout, or of an older one in the
  separate layout: read as saved (split(abstract)), then fused and placed as `abstract` says.

  A checkpoint that reads in neither layout raises the fused layout's error.
  """
  try:
    return restore_fn(abstract)
  except Exception as error:  # orbax names a tree mismatch in several error types
    old = split(abstract)
    if jax.tree.structure(old) == jax.tree.structure(abstract):
      raise
    try:
      restored = restore_fn(old)
    except Exception:
      raise error from None
  shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), abstract)
  return jax.tree.map(lambda x, s: x if s is None else jax.device_put(x, s),
                      fuse(restored), shardings)
