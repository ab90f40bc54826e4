"""Device mesh and the logical-axis rules: the only place that maps logical names to mesh axes."""

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. Batch splits over data and fsdp; parameters split
# their embed dimension over fsdp (ZeRO-3 style) and heads/mlp/vocab over tensor.
LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh; one axis size may be -1 to take the rest."""
  devices = jax.devices() if devices is None else devices
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got mesh data={data} fsdp={fsdp} "
                     f"tensor={tensor}")
  for name, size in zip(MESH_AXES, sizes):
    if size == 0 or size < -1:
      raise ValueError(f"mesh.{name} must be a positive size or -1, got {size}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh fsdp*tensor*data={known} does not divide the {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh data*fsdp*tensor = {'*'.join(map(str, sizes))} = {math.prod(sizes)} "
                     f"but there are {len(devices)} devices; the product must equal the count")
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def logical_to_sharding(names, mesh: Mesh, rules=LOGICAL_RULES) -> NamedSharding:
  """A NamedSharding for an array whose axes carry these logical names."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(names, rules))


def state_shardings(abstract_state, mesh: Mesh, rules=LOGICAL_RULES):
  """Shardings tree with the same structure as a (boxed) abstract state.

  Leaves boxed with logical names are sharded by the rules; an optimizer leaf
  whose rank differs from its parameter (Adafactor's factored moments) and
  every unboxed leaf are replicated.
  """
  def one(x):
    if isinstance(x, nn.Partitioned):
      if x.value.ndim == len(x.names):
        return x.replace_boxed(logical_to_sharding(x.names, mesh, rules))
      return x.replace_boxed(NamedSharding(mesh, P()))
    return NamedSharding(mesh, P())
  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a [batch, ...] input array: batch split over data and fsdp."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def to_global(batch: dict, mesh: Mesh) -> dict:
  """Host-local NumPy [batch, ...] arrays -> global jax.Arrays split over (data, fsdp)."""
  sh = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sh, v) for k, v in batch.items()}
