"""The pure train step: token-sum losses, gradient accumulation, one optimizer update.

train_step(state, batch, rng) takes a `sum_fn` that returns sums over target tokens
(loss, and any other per-token quantities with their "weight"); the step divides
every sum by the total weight, so plain training and distillation share one step.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from refinedweb_jax import sharding
from refinedweb_jax.data import pipeline
from refinedweb_jax.train import checkpoint, losses


def split_microbatches(x_BxN, microbatches: int):
  """[B, ...] -> [M, B/M, ...], microbatch i holding rows i, i+M, i+2M, ..."""
  # Strided, not contiguous: each device's rows then hold a share of every
  # microbatch, so the split needs no communication.
  batch = x_BxN.shape[0]
  if batch % microbatches:
    raise ValueError(f"batch of {batch} rows does not split into train.microbatches="
                     f"{microbatches}; use a divisor of {batch}")
  x = x_BxN.reshape((batch // microbatches, microbatches) + x_BxN.shape[1:]).swapaxes(0, 1)
  return nn.with_logical_constraint(x, (None, "batch") + (None,) * (x.ndim - 2))


def accumulate_gradients(sum_fn, params, batch: dict, microbatches: int = 1):
  """Sum over microbatches of sum_fn's value, aux and gradient, in one lax.scan.

  `sum_fn(params, microbatch, index) -> (value, aux)` must return sums (e.g. over
  tokens), not means, so the totals equal those of the whole batch; divide by the
  total weight afterwards. Returns ((value, aux), grads), each summed.
  """
  grad_fn = jax.value_and_grad(sum_fn, has_aux=True)
  if microbatches == 1:
    return grad_fn(params, batch, 0)
  micro = jax.tree.map(lambda x: split_microbatches(x, microbatches), batch)

  def body(total, xs):
    index, microbatch = xs
    return jax.tree.map(jnp.add, total, grad_fn(params, microbatch, index)), None

  first = jax.tree.map(lambda x: x[0], micro)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(grad_fn, params, first, 0))
  # The gradient total lives where the parameters do (sharded under FSDP).
  zeros = (zeros[0], _like_params(zeros[1]))
  total, _ = jax.lax.scan(body, zeros, (jnp.arange(microbatches), micro))
  return total


def _like_params(tree):
  """Logical-axis constraints on a tree of boxed (nn.Partitioned) parameter-shaped arrays."""
  return jax.tree.map(
      lambda x: x.replace_boxed(nn.with_logical_constraint(x.value, x.names))
      if isinstance(x, nn.Partitioned) else x, tree,
      is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_digest(batch: dict):
  """A 31-bit digest of the global batch's token ids and segments (which examples a step
  trained on, whatever the mesh): a position-weighted sum, summed where the rows are."""
  total = jnp.uint32(0)
  for name in ("encoder_input_tokens", "decoder_target_tokens", "encoder_segment_ids",
               "decoder_segment_ids"):
    x = batch[name].astype(jnp.uint32)
    index = (jax.lax.broadcasted_iota(jnp.uint32, x.shape, 0) * jnp.uint32(x.shape[1])
             + jax.lax.broadcasted_iota(jnp.uint32, x.shape, 1))
    total = total * jnp.uint32(31) + jnp.sum(x * (index * 2 + 1) * jnp.uint32(0x9E3779B1),
                                             dtype=jnp.uint32)
  return (total >> 1).astype(jnp.int32)


class TrainState(train_state.TrainState):
  """Flax's TrainState plus `skips`: updates left out because the loss was not finite.

  skips: {"total": every skipped step, "in_a_row": the current run of them,
  "first": the first skipped step, or -1}.
  """
  skips: dict = None

  @classmethod
  def create(cls, **kwargs):
    counts = {"total": 0, "in_a_row": 0, "first": -1}
    return super().create(skips={k: jnp.int32(v) for k, v in counts.items()}, **kwargs)


def train_step(state, batch, rng, *sum_args, sum_fn, microbatches=1):
  """One optimizer step on a global batch; returns (new state, scalar metrics).

  sum_fn(params, batch, rng, *sum_args) -> (loss sum, {name: sum, "weight": total
  weight}); the gradient and every metric are token-weighted means over the whole batch.
  A non-finite loss or gradient norm leaves parameters and optimizer state as they
  were and is counted in state.skips, all inside the step (no host round trip).
  """
  rng = jax.random.fold_in(rng, state.step)
  digest = batch_digest(batch)

  def sums(params, microbatch, index):
    dropout_rng = rng if microbatches == 1 else jax.random.fold_in(rng, index)
    return sum_fn(params, microbatch, dropout_rng, *sum_args)

  (loss_sum, sums_), grads = accumulate_gradients(sums, state.params, batch, microbatches)
  weight = jnp.maximum(sums_["weight"], 1.0)
  grads = jax.tree.map(lambda g: g / weight, grads)
  metrics = {"train/loss": loss_sum / weight, "train/grad_norm": optax.tree.norm(grads),
             "train/target_tokens": sums_["weight"]}
  metrics.update({f"train/{name}": value / weight for name, value in sums_.items()
                  if name != "weight"})
  finite = jnp.isfinite(metrics["train/loss"]) & jnp.isfinite(metrics["train/grad_norm"])

  # The update is computed whatever happens and kept only where everything was finite: an
  # elementwise select that XLA fuses into the optimizer's own loops. A conditional would
  # send its predicate to the host every step on GPU and keep the update out of that fusion.
  updated = state.apply_gradients(grads=grads)
  keep = lambda new, old: jnp.where(finite, new, old)
  params = jax.tree.map(keep, updated.params, state.params)
  opt_state = jax.tree.map(keep, updated.opt_state, state.opt_state)
  step = state.step + 1
  skips = state.skips
  skips = {"total": skips["total"] + (~finite).astype(jnp.int32),
           "in_a_row": jnp.where(finite, 0, skips["in_a_row"] + 1),
           "first": jnp.where((skips["first"] < 0) & ~finite, step, skips["first"])}
  metrics["train/skipped_steps"] = skips["total"]
  metrics["train/batch_digest"] = digest
  return state.replace(step=step, params=params, opt_state=opt_state, skips=skips), metrics


def _state_init_fn(model, tx, input_length: int, target_length: int):
  """rng -> the train state, or the parameters alone when tx is None."""
  def init(rng):
    params = model.init(rng, jnp.ones((1, input_length), jnp.int32),
                        jnp.ones((1, target_length), jnp.int32))["params"]
    if tx is None:
      return params
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  return init


def abstract_train_state(model, tx, mesh, *, input_length: int, target_length: int):
  """(ShapeDtypeStructs carrying shardings, shardings) of the train state (or of the
  parameters alone when tx is None); allocates nothing."""
  init = _state_init_fn(model, tx, input_length, target_length)
  with sharding.use_mesh(mesh):
    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = sharding.state_shardings(abstract, mesh)
  return checkpoint.abstract_like(abstract, shardings), shardings


def abstract_params(model, mesh, *, input_length: int, target_length: int):
  """ShapeDtypeStructs of the parameters alone, with their shardings on `mesh`."""
  abstract, _ = abstract_train_state(model, None, mesh, input_length=input_length,
                                     target_length=target_length)
  return abstract


def create_train_state(model, tx, mesh, rng, *, input_length: int, target_length: int):
  """Initialises parameters directly into their shardings; returns (state, state shardings)."""
  _, shardings = abstract_train_state(model, tx, mesh, input_length=input_length,
                                      target_length=target_length)
  init = _state_init_fn(model, tx, input_length, target_length)
  state = sharding.jit(init, mesh, out_shardings=shardings)(rng)
  return state, shardings


def jit_train_step(model, config, mesh, state_shardings, *, sum_fn=None, features=None,
                   sum_args=()):
  """train_step jitted once with explicit shardings; the state buffer is donated.

  Returns f(state, batch, rng) -> (state, metrics). sum_fn defaults to the label
  cross-entropy of config.loss; features (the batch's keys) to the model features;
  sum_args (e.g. a teacher's parameters) go to every sum_fn call, replicated.
  """
  if sum_fn is None:
    sum_fn = functools.partial(losses.cross_entropy_sums, model=model,
                               label_smoothing=config.loss.label_smoothing,
                               z_loss=config.loss.z_loss)
  step = functools.partial(train_step, sum_fn=sum_fn, microbatches=config.train.microbatches)
  batch_sh = {k: sharding.batch_sharding(mesh) for k in features or pipeline.FEATURES}
  repl = sharding.replicated(mesh)
  jitted = sharding.jit(step, mesh, in_shardings=(state_shardings, batch_sh) + (repl,) * (
      1 + len(sum_args)), out_shardings=(state_shardings, repl), donate_argnums=0)
  run = lambda state, batch, rng: jitted(state, batch, rng, *sum_args)
  run.lower = lambda state, batch, rng: jitted.lower(state, batch, rng, *sum_args)
  return run
