"""Training: pure train_step / eval_step and the train_and_evaluate loop."""

import functools
import os
import resource
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from flax.training import train_state
from jax.experimental import multihost_utils

from refinedweb_jax.train import checkpoint
from refinedweb_jax import configs
from refinedweb_jax.data import pipeline as data
from refinedweb_jax.train import losses
from refinedweb_jax.train import optim
from refinedweb_jax import sharding
from refinedweb_jax.evaluate import evaluator as evaluation
from refinedweb_jax.train import logger
from refinedweb_jax.data import tasks as tasks_lib
from refinedweb_jax.model.transformer import EncoderDecoder, count_params


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


def loss_sums(params, batch, rng, *, model, label_smoothing=0.0, z_loss=0.0):
  """(loss sum, {z_loss, correct, weight} sums) over the batch's target tokens."""
  logits = evaluation.forward(model, params, batch, deterministic=False, rngs={"dropout": rng})
  loss_sum, z_sum, weight = losses.cross_entropy(
      logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"],
      label_smoothing=label_smoothing, z_loss=z_loss)
  correct, _ = losses.token_accuracy(logits, batch["decoder_target_tokens"],
                                     batch["decoder_loss_weights"])
  return loss_sum, {"z_loss": z_sum, "correct": correct, "weight": weight}


def gradients(params, batch, rng, *, model, label_smoothing=0.0, z_loss=0.0, microbatches=1):
  """Token-weighted mean loss over the whole batch and its gradient; (grads, metrics)."""
  def sum_fn(p, microbatch, index):
    dropout_rng = rng if microbatches == 1 else jax.random.fold_in(rng, index)
    return loss_sums(p, microbatch, dropout_rng, model=model, label_smoothing=label_smoothing,
                     z_loss=z_loss)

  (loss_sum, sums), grads = accumulate_gradients(sum_fn, params, batch, microbatches)
  weight = jnp.maximum(sums["weight"], 1.0)
  grads = jax.tree.map(lambda g: g / weight, grads)
  metrics = {"train/loss": loss_sum / weight, "train/z_loss": sums["z_loss"] / weight,
             "train/accuracy": sums["correct"] / weight,
             "train/grad_norm": optax.tree.norm(grads), "train/target_tokens": sums["weight"]}
  return grads, metrics


def train_step(state, batch, rng, *, model, label_smoothing=0.0, z_loss=0.0, microbatches=1):
  """One optimizer step on a global batch; returns (new state, scalar metrics)."""
  grads, metrics = gradients(state.params, batch, jax.random.fold_in(rng, state.step),
                             model=model, label_smoothing=label_smoothing, z_loss=z_loss,
                             microbatches=microbatches)
  return state.apply_gradients(grads=grads), metrics


def _state_init_fn(model, tx, input_length: int, target_length: int):
  def init(rng):
    variables = model.init(rng, jnp.ones((1, input_length), jnp.int32),
                           jnp.ones((1, target_length), jnp.int32))
    return train_state.TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx)
  return init


def abstract_train_state(model, tx, mesh, *, input_length: int, target_length: int):
  """(ShapeDtypeStructs carrying shardings, shardings) of the train state; allocates nothing."""
  init = _state_init_fn(model, tx, input_length, target_length)
  with nn.logical_axis_rules(sharding.LOGICAL_RULES):
    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = sharding.state_shardings(abstract, mesh)
  return checkpoint.abstract_like(abstract, shardings), shardings


def abstract_params(model, mesh, *, input_length: int, target_length: int):
  """ShapeDtypeStructs of the parameters alone, with their shardings on `mesh`."""
  init = lambda rng: model.init(rng, jnp.ones((1, input_length), jnp.int32),
                                jnp.ones((1, target_length), jnp.int32))["params"]
  with nn.logical_axis_rules(sharding.LOGICAL_RULES):
    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = sharding.state_shardings(abstract, mesh)
  return checkpoint.abstract_like(abstract, shardings)


def create_train_state(model, tx, mesh, rng, *, input_length: int, target_length: int):
  """Initialises parameters directly into their shardings; returns (state, state shardings)."""
  _, shardings = abstract_train_state(model, tx, mesh, input_length=input_length,
                                      target_length=target_length)
  init = _state_init_fn(model, tx, input_length, target_length)
  with nn.logical_axis_rules(sharding.LOGICAL_RULES):
    state = jax.jit(init, out_shardings=shardings)(rng)
  return state, shardings


def jit_train_step(model, config, mesh, state_shardings):
  """train_step jitted once with explicit shardings; the state buffer is donated."""
  step = functools.partial(train_step, model=model, label_smoothing=config.loss.label_smoothing,
                           z_loss=config.loss.z_loss,
                           microbatches=config.train.get("microbatches", 1))
  batch_sh = {k: sharding.batch_sharding(mesh) for k in data.FEATURES}
  repl = sharding.replicated(mesh)
  jitted = jax.jit(step, in_shardings=(state_shardings, batch_sh, repl),
                   out_shardings=(state_shardings, repl), donate_argnums=0)

  def run(state, batch, rng):
    with nn.logical_axis_rules(sharding.LOGICAL_RULES), jax.set_mesh(mesh):
      return jitted(state, batch, rng)

  def lower(state, batch, rng):
    with nn.logical_axis_rules(sharding.LOGICAL_RULES), jax.set_mesh(mesh):
      return jitted.lower(state, batch, rng)

  run.lower = lower  # for compiled-memory and cost analysis
  return run


class Experiment:
  """Everything a run needs, built from a config: tokenizer, model, mesh, optimizer, data."""

  def __init__(self, config, workdir: str):
    # Imported here: TFDS is slow to import and train_step does not need it.
    from refinedweb_jax.data import tokenizer as tok
    self.config, self.workdir = config, workdir
    d = config.data
    available = {**tasks_lib.builtin_tasks(self.source), **tasks_lib.own_tasks(config),
                 **tasks_lib.public_tasks(config)}
    self.tasks = [available[name] for name in configs.task_names(config)]
    if d.tokenizer == "builtin":
      prepare = lambda: tok.prepare_builtin(
          d.data_dir, num_train=d.num_train, num_validation=d.num_validation,
          num_test=d.num_test, seed=d.corpus_seed, long_fraction=d.long_fraction,
          vocab_size=d.vocab_size)[1]
    elif d.tokenizer == "mixture":
      prepare = lambda: tok.prepare_for_sources(
          d.data_dir, self.mixture_key(), [t.source("train") for t in self.tasks],
          vocab_size=d.vocab_size)
    else:
      raise ValueError(f"unknown config.data.tokenizer {d.tokenizer!r}; allowed: builtin, "
                       "mixture")
    # One host builds datasets and tokenizer; the others then find them ready.
    if jax.process_index() == 0:
      prepare()
    multihost_utils.sync_global_devices("data prepared")
    self.tokenizer = tok.Tokenizer(prepare())
    self.model_cfg = configs.model_config(config, vocab_size=self.tokenizer.vocab_size)
    self.model = EncoderDecoder(self.model_cfg)
    self.mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    sharding.check_model_fits(self.model_cfg, self.mesh.shape["fsdp"], self.mesh.shape["tensor"])
    self.tx, self.schedule = optim.make_optimizer(config.optimizer, config.train.num_steps)
    n = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    m = config.train.get("microbatches", 1)
    if d.batch_size % (n * m) or d.batch_size % jax.process_count():
      raise ValueError(f"data.batch_size={d.batch_size} must be divisible by the data*fsdp mesh "
                       f"size {n} times train.microbatches={m}, and by the process count "
                       f"{jax.process_count()}")
    sharding.check_batch_split(self.mesh, d.batch_size)

  def source(self, split):
    from refinedweb_jax.data.datasets import builtin
    d = self.config.data
    return builtin.data_source(d.data_dir, split, num_train=d.num_train,
                               num_validation=d.num_validation, num_test=d.num_test,
                               seed=d.corpus_seed, long_fraction=d.long_fraction)

  def mixture_key(self) -> str:
    """A short stable name for the mixture's tasks and their train sizes."""
    import hashlib
    text = ",".join(f"{t.name}:{len(t.source('train'))}" for t in self.tasks)
    return hashlib.sha256(text.encode()).hexdigest()[:12]

  def mixture(self):
    """(train sources, rates) of the mixture's tasks, in config order."""
    m = self.config.mixture
    sources = [task.source("train") for task in self.tasks]
    rates = tasks_lib.mixture_rates(
        {t.name: len(s) for t, s in zip(self.tasks, sources)}, method=m.rate, cap=m.cap,
        temperature=m.temperature, weights=tasks_lib.parse_weights(m.weights))
    return sources, [rates[t.name] for t in self.tasks]

  def train_iterator(self):
    d = self.config.data
    sources, rates = self.mixture()
    ds = data.train_dataset(
        sources, rates, self.tokenizer, batch_size=d.batch_size // jax.process_count(),
        input_length=d.input_length, target_length=d.target_length, pack=d.pack,
        seed=d.shuffle_seed, shard_index=jax.process_index(), shard_count=jax.process_count(),
        alignment=self.alignment())
    return iter(ds)

  def alignment(self) -> tuple:
    """Where packed examples may start in the encoder and decoder rows."""
    return (self.model_cfg.packing_alignment("encoder"),
            self.model_cfg.packing_alignment("decoder"))


def train_and_evaluate(config, workdir: str):
  """Trains (resuming from the newest checkpoint in workdir), evaluating and saving on schedule."""
  dist = config.get("distributed", {})
  sharding.initialize_distributed(dist.get("coordinator_address"), dist.get("num_processes"),
                                  dist.get("process_id"))
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # a local folder or gs://bucket/run
  exp = Experiment(config, workdir)
  t = config.train
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 save_every=t.checkpoint_every, keep=t.keep_checkpoints,
                                 async_save=t.async_checkpointing)
  log = run_logger(workdir, ckpt)
  rng = jax.random.key(config.seed)
  d = config.data
  state, shardings = create_train_state(exp.model, exp.tx, exp.mesh, rng,
                                        input_length=d.input_length, target_length=d.target_length)
  log.text(f"model {exp.model_cfg.d_model}d x {exp.model_cfg.num_encoder_layers}+"
           f"{exp.model_cfg.num_decoder_layers} layers, {count_params(state.params):,} params, "
           f"mesh {dict(exp.mesh.shape)}")
  step_fn = jit_train_step(exp.model, config, exp.mesh, shardings)
  return run_loop(exp, state, shardings, step_fn, exp.train_iterator(), log=log, ckpt=ckpt,
                  rng=rng, tokenizer_proto=exp.tokenizer.serialized_model_proto())


def run_logger(workdir: str, ckpt):
  """The run's MetricLogger: a (re)started run logs again every step after its checkpoint."""
  start = ckpt.latest_step()
  return logger.MetricLogger(workdir, enabled=jax.process_index() == 0,
                             replay_from=0 if start is None else start + 1)


class Throughput:
  """Steps and real tokens per second of training since the last log step, evaluations left out."""

  def __init__(self, step: int):
    self.restart(step)

  def restart(self, step: int):
    self.step, self.tokens, self.start, self.paused = step, 0, time.time(), 0.0

  def pause(self, seconds: float):
    """Time spent outside training (an evaluation) between two log steps."""
    self.paused += seconds

  def report(self, step: int) -> dict:
    elapsed = max(time.time() - self.start - self.paused, 1e-9)
    out = {"train/steps_per_second": (step - self.step) / elapsed,
           "train/tokens_per_second": self.tokens * jax.process_count() / elapsed}
    self.restart(step)
    return out


def run_loop(exp, state, shardings, step_fn, train_iter, *, log, ckpt, rng,
             tokenizer_proto: bytes):
  """The loop every trainer shares: resume (state and data iterator), evaluate at step 0,
  then step, log, evaluate and checkpoint on the config's schedule; returns the final state."""
  config, t = exp.config, exp.config.train
  start = ckpt.latest_step()
  if start is not None:
    state = ckpt.restore(start, checkpoint.abstract_like(state, shardings),
                         data_iterator=train_iter)
    log.text(f"resumed from step {start} in {ckpt.directory}")
  start = int(start or 0)
  evaluator = evaluation.Evaluator(exp, log)
  config_json = checkpoint.config_to_json(config)
  if start == 0:
    evaluator.run(state.params, step=0, decode=False)

  progress = logger.Progress(start, t.num_steps, enabled=t.progress_bar and log.enabled)
  if start >= t.num_steps:
    log.text(f"already trained to step {start} (train.num_steps={t.num_steps}); nothing to do")
  throughput = Throughput(start)
  for step in range(start + 1, t.num_steps + 1):
    host_batch = next(train_iter)
    # Real (non-padding) tokens, counted on the host so the step stays asynchronous.
    throughput.tokens += int(np.sum(host_batch["encoder_segment_ids"] > 0)
                             + np.sum(host_batch["decoder_loss_weights"]))
    state, metrics = step_fn(state, sharding.to_global(host_batch, exp.mesh), rng)
    if step % t.log_every == 0 or step == t.num_steps:
      metrics = jax.device_get(metrics)
      metrics["train/learning_rate"] = float(exp.schedule(step - 1))
      metrics.update(throughput.report(step))
      # ru_maxrss is in KiB on Linux: the host's peak resident memory so far.
      rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
      metrics["train/host_peak_rss_gib"] = rss_kib / 2**20
      log.scalars(step, "train", metrics)
      progress.update(step, metrics)
    else:
      progress.update(step, None)
    if step % t.eval_every == 0 or step == t.num_steps:
      began = time.time()
      evaluator.run(state.params, step=step, decode=True)
      throughput.pause(time.time() - began)  # eval time is not training throughput
    ckpt.save(step, state, data_iterator=train_iter, config=config_json,
              tokenizer_proto=tokenizer_proto, force=step == t.num_steps)
  progress.close()
  ckpt.close()
  multihost_utils.sync_global_devices("training done")
  log.close()
  return state
