"""The training loop: resume, evaluate, step, log and checkpoint on the config's schedule."""

import os
import resource
import time

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from refinedweb_jax import sharding
from refinedweb_jax.model.transformer import count_params
from refinedweb_jax.train import checkpoint, logger, optim, setup, step as step_lib


def train_and_evaluate(config, workdir: str):
  """Trains (resuming from the newest checkpoint in workdir), evaluating and saving on schedule."""
  dist = config.get("distributed", {})
  sharding.initialize_distributed(dist.get("coordinator_address"), dist.get("num_processes"),
                                  dist.get("process_id"))
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # a local folder or gs://bucket/run
  run = setup.build(config)
  d, m = config.data, run.model_cfg
  tx, schedule = optim.make_optimizer(config.optimizer, config.train.num_steps)
  state, shardings = step_lib.create_train_state(
      run.model, tx, run.mesh, jax.random.key(config.seed), input_length=d.input_length,
      target_length=d.target_length)
  step_fn = step_lib.jit_train_step(run.model, config, run.mesh, shardings)
  describe = (f"model {m.d_model}d x {m.num_encoder_layers}+{m.num_decoder_layers} layers, "
              f"{count_params(state.params):,} params, mesh {dict(run.mesh.shape)}")
  return run_loop(run, state, shardings, step_fn, run.train_iterator(), workdir=workdir,
                  schedule=schedule, describe=describe)


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


def run_loop(run, state, shardings, step_fn, train_iter, *, workdir: str, schedule,
             describe: str):
  """The loop every trainer shares: resume (state and data iterator), evaluate at step 0,
  then step, log, evaluate and checkpoint on the config's schedule; returns the final state."""
  config, t = run.config, run.config.train
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 save_every=t.checkpoint_every, keep=t.keep_checkpoints,
                                 async_save=t.async_checkpointing)
  start = ckpt.latest_step()
  # A (re)started run logs again every step after its checkpoint: their old rows go.
  log = logger.MetricLogger(workdir, enabled=jax.process_index() == 0,
                            replay_from=0 if start is None else start + 1)
  log.text(describe)
  if start is not None:
    state = ckpt.restore(start, checkpoint.abstract_like(state, shardings),
                         data_iterator=train_iter)
    log.text(f"resumed from step {start} in {ckpt.directory}")
  start = int(start or 0)
  evaluator = run.evaluator(log)
  config_json = checkpoint.config_to_json(config)
  tokenizer_proto = run.tokenizer.serialized_model_proto()
  rng = jax.random.key(config.seed)
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
    state, metrics = step_fn(state, sharding.to_global(host_batch, run.mesh), rng)
    if step % t.log_every == 0 or step == t.num_steps:
      metrics = jax.device_get(metrics)
      metrics["train/learning_rate"] = float(schedule(step - 1))
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
