"""Device mesh, logical-axis rules (the only logical -> mesh axis mapping) and multi-host setup."""

import contextlib
import glob
import importlib.util
import math
import os

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from refinedweb_jax import backend

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. Batch splits over data and fsdp; parameters split
# their embed dimension over fsdp (ZeRO-3: parameters, gradients and optimizer
# state) and heads/mlp/vocab over tensor (Megatron-style). A mesh axis is used
# at most once per array, so activations (batch, length, embed) keep embed whole
# while batch takes fsdp. Parameter names: vocab, embed, heads, kv, mlp,
# relpos_buckets, and layers (the leading axis of a scanned stack's parameters, whole
# on every device: each scan step reads one layer); more activation names: batch, length.
LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("layers", None),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("relpos_buckets", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
)


def check_mesh_size(size, key: str):
  """A mesh size: positive, or -1 (the remaining devices)."""
  if not isinstance(size, int) or size == 0 or size < -1:
    raise ValueError(f"{key} must be a positive size or -1 (the remaining devices), got {size!r}")


def check_mesh_sizes(data: int, fsdp: int, tensor: int, where: str = "config.mesh"):
  """Each size positive or -1 (the remaining devices), at most one -1."""
  sizes = dict(zip(MESH_AXES, (data, fsdp, tensor)))
  for name, size in sizes.items():
    check_mesh_size(size, f"{where}.{name}")
  if list(sizes.values()).count(-1) > 1:
    raise ValueError(f"at most one of {where}.data/fsdp/tensor may be -1, got "
                     + " ".join(f"{k}={v}" for k, v in sizes.items()))


# Model dimensions by the logical axis of the parameters that carry them: each must
# split over the mesh axes the rules give that logical axis (an odd vocabulary may
# stay whole, see state_shardings).
_MODEL_DIMS = (("heads", "num_heads"), ("mlp", "d_ff"), ("embed", "d_model"))


def mesh_axes(name: str) -> tuple:
  """The mesh axes a logical axis name is split over, from the rules."""
  axes = dict(LOGICAL_RULES)[name]
  return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


def check_model_fits(model_cfg, sizes: dict, where: str = "config.mesh"):
  """Each model dimension divides the sizes of the mesh axes it splits over (-1: unchecked)."""
  for logical, dim in _MODEL_DIMS:
    size = getattr(model_cfg, dim)
    for axis in mesh_axes(logical):
      if sizes[axis] > 0 and size % sizes[axis]:
        raise ValueError(f"model.{dim}={size} is not divisible by {where}.{axis}="
                         f"{sizes[axis]}; use a {axis} size that divides {size}")


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh; one axis size may be -1 to take the rest."""
  check_mesh_sizes(data, fsdp, tensor, where="mesh")
  explicit = devices is not None
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh data={data} fsdp={fsdp} tensor={tensor}: the fixed sizes "
                       f"multiply to {known}, which does not divide the {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh data*fsdp*tensor = {'*'.join(map(str, sizes))} = {math.prod(sizes)} "
                     f"but there are {len(devices)} devices; the product must equal the count")
  if explicit:
    grid = np.asarray(devices).reshape(sizes)
  else:
    # Orders devices by the physical topology on TPU (a plain reshape elsewhere).
    grid = mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
  return Mesh(grid, MESH_AXES)


def spec(names) -> P:
  """The PartitionSpec of an array whose axes carry these logical names (the rules above)."""
  return nn.logical_to_mesh_axes(names, LOGICAL_RULES)


def _divisible_spec(spec: P, shape, mesh: Mesh) -> P:
  """`spec` with every dimension that its mesh axes do not divide left whole."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    out.append(axes if dim % math.prod(mesh.shape[a] for a in names) == 0 else None)
  return P(*out)


def state_shardings(abstract_state, mesh: Mesh, rules=LOGICAL_RULES):
  """Shardings tree with the same structure as a (boxed) abstract state.

  Leaves boxed with logical names are sharded by the rules (a dimension the
  mesh axes do not divide, e.g. an odd vocabulary, stays whole); an optimizer
  leaf whose rank differs from its parameter (Adafactor's factored moments) and
  every unboxed leaf are replicated.
  """
  def one(x):
    if isinstance(x, nn.Partitioned):
      if x.value.ndim == len(x.names):
        spec = _divisible_spec(nn.logical_to_mesh_axes(x.names, rules), x.value.shape, mesh)
        return x.replace_boxed(NamedSharding(mesh, spec))
      return x.replace_boxed(NamedSharding(mesh, P()))
    return NamedSharding(mesh, P())
  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a [batch, ...] input array: batch split as the rules split "batch"."""
  return NamedSharding(mesh, spec(("batch",)))


def batch_rows(mesh: Mesh) -> int:
  """How many ways a batch splits: its row count must be a multiple of this."""
  return math.prod(mesh.shape[a] for a in mesh_axes("batch"))


def local_rows(mesh: Mesh, batch_size: int) -> list[int]:
  """The global batch rows this process feeds, in the order its local data lists them."""
  index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
  rows = set()
  for index in index_map.values():
    start, stop, _ = index[0].indices(batch_size)
    rows.update(range(start, stop))
  return sorted(rows)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


@contextlib.contextmanager
def use_mesh(mesh: Mesh):
  """The logical-axis rules and `mesh` in effect: where sharded model code runs."""
  with nn.logical_axis_rules(LOGICAL_RULES), jax.set_mesh(mesh):
    yield


def jit(fn, mesh: Mesh, **jit_kwargs):
  """jax.jit(fn, **jit_kwargs) that traces and runs under use_mesh(mesh); also has .lower."""
  jitted = jax.jit(fn, **jit_kwargs)

  def run(*args, **kwargs):
    with use_mesh(mesh):
      return jitted(*args, **kwargs)

  def lower(*args, **kwargs):
    with use_mesh(mesh):
      return jitted.lower(*args, **kwargs)

  run.lower = lower  # for compiled-memory and cost analysis
  run.jitted = jitted  # its compilation cache, e.g. to check that nothing recompiles
  return run


def to_global(batch: dict, mesh: Mesh) -> dict:
  """Host-local NumPy [batch, ...] arrays -> global jax.Arrays split over (data, fsdp)."""
  sh = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sh, v) for k, v in batch.items()}


def from_full_batch(batch: dict, mesh: Mesh) -> dict:
  """The same whole NumPy [batch, ...] arrays on every process -> global arrays split by batch."""
  sh = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sh, v, v.shape) for k, v in batch.items()}


def to_host(tree):
  """Global jax.Arrays -> whole NumPy arrays on every process (gathered across processes)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def check_batch(mesh: Mesh, batch_size: int, microbatches: int = 1):
  """The batch splits into microbatches over the batch axes, each process feeding its own share.

  Every process must feed batch_size / process_count rows (no cross-host replicas).
  """
  axes, n = mesh_axes("batch"), batch_rows(mesh)
  if batch_size % (n * microbatches) or batch_size % jax.process_count():
    raise ValueError(f"data.batch_size={batch_size} must be divisible by the {'*'.join(axes)} "
                     f"mesh size {n} times train.microbatches={microbatches}, and by the "
                     f"process count {jax.process_count()}")
  index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
  rows = {index[0].indices(batch_size)[:2] for index in index_map.values()}
  local = sum(stop - start for start, stop in rows)
  if local * jax.process_count() != batch_size:
    raise ValueError(
        f"mesh {dict(mesh.shape)} gives process {jax.process_index()} {local} of {batch_size} "
        f"batch rows, not 1/{jax.process_count()}: the tensor axis spans processes; use a "
        "tensor size that fits in one host's devices")


def _on_cloud_tpu() -> bool:
  """A Cloud TPU VM or GKE TPU node (libtpu and TPU chips present), without starting JAX."""
  if os.environ.get("JAX_PLATFORMS", "") not in ("", "tpu"):
    return False
  if os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  return (importlib.util.find_spec("libtpu") is not None
          and bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")))


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None, *,
                           timeout_s: int = 300) -> bool:
  """Joins this process to a multi-process JAX job; call before any other JAX use.

  Explicit (CPU / GPU clusters): coordinator_address "host:port" of process 0,
  num_processes and this process_id; each falls back to the environment variables
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID. With none given,
  Cloud TPU VMs call jax.distributed.initialize() and JAX reads the slice's
  topology itself; a single CPU/GPU process does nothing. Returns whether this
  process is (now) part of a distributed job.
  """
  if jax.distributed.is_initialized():
    return True
  env = os.environ.get
  coordinator_address = coordinator_address or env("JAX_COORDINATOR_ADDRESS") or None
  num_processes = _int_or_none(num_processes, "JAX_NUM_PROCESSES", "num_processes")
  process_id = _int_or_none(process_id, "JAX_PROCESS_ID", "process_id")
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  if any(v is not None for v in given.values()):
    missing = [k for k, v in given.items() if v is None]
    if missing:
      raise ValueError(f"multi-process run needs config.distributed.{', '.join(missing)} too "
                       f"(or JAX_{', JAX_'.join(m.upper() for m in missing)}); got "
                       + ", ".join(f"{k}={v!r}" for k, v in given.items()))
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"config.distributed.process_id={process_id} must be in "
                       f"[0, num_processes={num_processes})")
    if backend.platform() == "cpu":  # CPU processes reach each other's devices through gloo
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=timeout_s)
    return True
  if _on_cloud_tpu():
    try:
      jax.distributed.initialize(initialization_timeout=timeout_s)
    except ValueError:
      return False  # no multi-host TPU environment detected (e.g. a Colab TPU): one process
    return True
  return False


def _int_or_none(value, env_name: str, key: str):
  if value is None or value == "":
    value = os.environ.get(env_name) or None
  if value is None:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"config.distributed.{key} (or {env_name}) must be an integer, got "
                     f"{value!r}") from None
