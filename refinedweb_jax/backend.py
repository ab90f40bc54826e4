"""The platform a run computes on, its compiler flags, compute dtype and compilation cache.

`configure()` runs before JAX starts its backend (the command line and the notebook
functions call it first): it sets the XLA flags MaxText sets for the platform, unless
the user set the same flag, and turns on the persistent compilation cache, so a
resumed or repeated run reuses compiled programs (and, on GPU, their autotuning).

  GPU  XLA_FLAGS: the latency-hiding scheduler, pipelined all-gather / reduce-scatter /
       all-reduce, while-loop double buffering, collectives on a high-priority stream
  TPU  LIBTPU_INIT_ARGS: async collective fusion (all-gather included, over several
       steps), compute/collective overlap, async all-gather

REFINEDWEB_XLA_FLAGS=0 leaves both variables alone; a flag already in XLA_FLAGS or
LIBTPU_INIT_ARGS keeps the user's value. JAX_COMPILATION_CACHE_DIR names the cache
("" turns it off; default ~/.cache/refinedweb_jax/jax_cache).
"""

import glob
import importlib.util
import logging
import os

import jax

log = logging.getLogger(__name__)

GPU_FLAGS = (
    "--xla_gpu_enable_latency_hiding_scheduler=true",
    "--xla_gpu_enable_pipelined_all_gather=true",
    "--xla_gpu_enable_pipelined_reduce_scatter=true",
    "--xla_gpu_enable_pipelined_all_reduce=true",
    "--xla_gpu_enable_while_loop_double_buffering=true",
    "--xla_gpu_enable_highest_priority_async_stream=true",
)
TPU_FLAGS = (
    "--xla_tpu_enable_async_collective_fusion=true",
    "--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true",
    "--xla_tpu_enable_async_collective_fusion_multiple_steps=true",
    "--xla_tpu_overlap_compute_collective_tc=true",
    "--xla_enable_async_all_gather=true",
)
FLAG_VARIABLES = {"gpu": ("XLA_FLAGS", GPU_FLAGS), "tpu": ("LIBTPU_INIT_ARGS", TPU_FLAGS)}
CACHE_DIR = os.path.join(os.path.expanduser("~/.cache/refinedweb_jax"), "jax_cache")
# model.dtype "auto": bfloat16 where the matrix units run it natively; on CPU float32,
# which ran faster than bfloat16 in this project's benchmarks (docs/model.md, Mixed precision).
AUTO_DTYPE = {"cpu": "float32", "gpu": "bfloat16", "tpu": "bfloat16"}


def platform() -> str:
  """"cpu", "gpu" or "tpu": JAX's backend once started, else what it will start, found
  without starting it (multi-process runs must join their job first)."""
  from jax._src import xla_bridge
  if xla_bridge.backends_are_initialized():
    return jax.default_backend()
  forced = (jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS") or "").split(",")[0]
  if forced:
    return {"cuda": "gpu", "rocm": "gpu"}.get(forced, forced)
  if _has_tpu():
    return "tpu"
  if _has_gpu():
    return "gpu"
  return "cpu"


def _has_tpu() -> bool:
  if os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  return (importlib.util.find_spec("libtpu") is not None
          and bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")))


def _has_gpu() -> bool:
  plugins = ("jax_cuda13_plugin", "jax_cuda12_plugin", "jax_plugins.xla_cuda13",
             "jax_plugins.xla_cuda12", "jax_rocm60_plugin", "jax_rocm7_plugin")
  found = False
  for name in plugins:
    try:
      found = found or importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package (jax_plugins) is absent
      pass
  return found and bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/kfd"))


def with_flags(current: str, flags) -> str:
  """`current` flags plus each of `flags` whose name it does not set already."""
  have = {f.split("=", 1)[0] for f in current.split()}
  extra = [f for f in flags if f.split("=", 1)[0] not in have]
  return " ".join(current.split() + extra)


def configure(platform_name: str | None = None) -> dict:
  """Sets the platform's compiler flags and the compilation cache; returns what it set.

  Flags only take effect before JAX starts its backend; later calls leave them as
  they are (and say so in the debug log).
  """
  from jax._src import xla_bridge
  name = platform_name or platform()
  done = {}
  if name in FLAG_VARIABLES and os.environ.get("REFINEDWEB_XLA_FLAGS", "1") != "0":
    variable, flags = FLAG_VARIABLES[name]
    if xla_bridge.backends_are_initialized():
      log.debug("JAX has started: %s is left as it is", variable)
    else:
      os.environ[variable] = with_flags(os.environ.get(variable, ""), flags)
      done[variable] = os.environ[variable]
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", CACHE_DIR)
  if cache and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache)
    done["compilation_cache"] = cache
  # Random bits that do not depend on how arrays are sharded: dropout on 1 or 64 devices
  # draws the same mask for the same example (the default since JAX 0.5; stated here).
  jax.config.update("jax_threefry_partitionable", True)
  return done


def auto_dtype(platform_name: str | None = None) -> str:
  """The compute dtype model.dtype="auto" resolves to on a platform."""
  return AUTO_DTYPE.get(platform_name or platform(), "float32")


def auto_scan_layers(platform_name: str | None = None) -> bool:
  """What an unset model.scan_layers resolves to: scanned layers on GPU and TPU (compile time
  flat in depth); unrolled on CPU, where XLA's loop over the layers cost 13-15% of the
  `mini` train step and a small model compiles in seconds either way (docs/model.md, Model)."""
  return (platform_name or platform()) != "cpu"
