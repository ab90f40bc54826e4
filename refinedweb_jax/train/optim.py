"""Optax optimizers and learning-rate schedules from config."""

import jax
import optax

from refinedweb_jax.config_keys.train import OPTIMIZERS, SCHEDULES


def make_schedule(kind: str, *, learning_rate: float, warmup_steps: int, total_steps: int):
  """Linear warmup followed by cosine decay, inverse square root, or a constant."""
  warmup_steps = max(int(warmup_steps), 1)
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup_steps, max(total_steps, warmup_steps + 1),
        end_value=learning_rate * 0.1)
  elif kind == "rsqrt":
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    decay = lambda step: learning_rate * (warmup_steps / (step + warmup_steps)) ** 0.5
    return optax.join_schedules([warmup, decay], [warmup_steps])
  elif kind == "constant":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, learning_rate, warmup_steps),
         optax.constant_schedule(learning_rate)], [warmup_steps])
  raise ValueError(f"unknown optimizer.schedule {kind!r}; allowed: {', '.join(SCHEDULES)}")


def make_optimizer(cfg, total_steps: int):
  """Builds the optax chain from an `optimizer` config section."""
  schedule = make_schedule(cfg.schedule, learning_rate=cfg.learning_rate,
                           warmup_steps=cfg.warmup_steps, total_steps=total_steps)
  if cfg.name == "adamw":
    opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=1e-8, weight_decay=cfg.weight_decay,
                      mask=_decay_mask)
  elif cfg.name == "adafactor":
    opt = optax.adafactor(schedule, weight_decay_rate=cfg.weight_decay or None,
                          weight_decay_mask=_decay_mask)
  else:
    raise ValueError(f"unknown optimizer.name {cfg.name!r}; allowed: {', '.join(OPTIMIZERS)}")
  parts = [opt]
  if cfg.grad_clip_norm > 0:
    parts.insert(0, optax.clip_by_global_norm(cfg.grad_clip_norm))
  return optax.chain(*parts), schedule


def _decay_mask(params):
  """Weight decay on matrices only: norm scales are left alone."""
  return jax.tree.map(lambda p: p.ndim > 1, params)
