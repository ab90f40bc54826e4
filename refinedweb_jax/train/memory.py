"""Whether a run can fit: its memory estimated from the config, before anything is allocated.

The estimate is a floor, so only runs that cannot fit are refused: float32 parameters,
their gradients and two Adam moments (16 bytes a parameter), the logits and their gradient,
and one saved residual stream per layer. It is compared with the memory this process has:
the local accelerators' (device memory stats), else the host's available memory.
"""

import os

import jax

from refinedweb_jax import configs


def parameters(cfg) -> int:
  """The model's parameter count (embeddings, attention and MLP projections; norms omitted)."""
  d, inner = cfg.d_model, cfg.num_heads * cfg.head_dim
  mlp = (3 if cfg.gated_mlp else 2) * d * cfg.d_ff
  embed = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
  encoder = cfg.num_encoder_layers * (4 * d * inner + mlp)
  decoder = cfg.num_decoder_layers * (8 * d * inner + mlp)
  return embed + encoder + decoder


def estimate(config) -> dict:
  """Bytes of one training step's state and activations (a floor), by part."""
  cfg = configs.model_config(config)
  d = config.data
  rows = d.batch_size // max(config.train.microbatches, 1)
  tokens = rows * (d.input_length * cfg.num_encoder_layers + d.target_length
                   * cfg.num_decoder_layers)
  return {"parameters and optimizer": 16 * parameters(cfg),
          "logits": 8 * rows * d.target_length * cfg.vocab_size,
          "activations": 4 * tokens * cfg.d_model}


def available() -> tuple[int | None, str]:
  """(bytes this process may use, where that number comes from); None: unknown."""
  devices = jax.local_devices()
  if devices[0].platform != "cpu":
    limits = [(dev.memory_stats() or {}).get("bytes_limit") for dev in devices]
    if all(limits):
      return sum(limits), f"{len(devices)} x {devices[0].device_kind}"
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024, "host memory available"
  except OSError:
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "host memory free"
  except (ValueError, OSError):
    return None, "unknown"


def check(config):
  """Raises in one line, with the estimate, when a run cannot fit in this process's memory."""
  parts = estimate(config)
  need = sum(parts.values()) // max(jax.process_count(), 1)
  have, source = available()
  if have is not None and need > have:
    detail = ", ".join(f"{name} {_gib(size)}" for name, size in parts.items())
    raise ValueError(f"this run needs at least {_gib(need)} ({detail}) but has {_gib(have)} "
                     f"({source}); lower config.data.batch_size or the model's size "
                     "(config.model.*), or raise config.train.microbatches")


def _gib(size: int) -> str:
  return f"{size / 2**30:,.1f} GiB"
