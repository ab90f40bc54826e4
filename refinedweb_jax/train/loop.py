"""The training loop: resume, evaluate, step, log and checkpoint on the config's schedule."""

import os
import resource
import sys
import textwrap
import time

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from refinedweb_jax import sharding
from refinedweb_jax.data import tasks as tasks_lib
from refinedweb_jax.model.transformer import count_params
from refinedweb_jax.train import checkpoint, logger, optim, resume, setup, stop
from refinedweb_jax.train import step as step_lib


def train_and_evaluate(config, workdir: str, *, command: str | None = None):
  """Trains (resuming from the newest checkpoint in workdir), evaluating and saving on schedule.

  `command`: how this start was invoked, for runs.jsonl (default: this process's argv).
  """
  dist = config.get("distributed", {})
  sharding.initialize_distributed(dist.get("coordinator_address"), dist.get("num_processes"),
                                  dist.get("process_id"))
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # a local folder or gs://bucket/run
  if epath.Path(workdir, checkpoint.IMPORTED).exists():
    raise ValueError(f"{workdir} holds an imported model, not a training run; fine-tune it into "
                     f"a new workdir: refinedweb train --workdir NEW "
                     f"--config.train.init_from={workdir}")
  check_resume(config, workdir)
  run = setup.build(config, model_from=resume_source(config, workdir))
  d, m = config.data, run.model_cfg
  tx, schedule = optim.make_optimizer(config.optimizer, schedule_steps(config))
  state, shardings = step_lib.create_train_state(
      run.model, tx, run.mesh, jax.random.key(config.seed), input_length=d.input_length,
      target_length=d.target_length)
  step_fn = step_lib.jit_train_step(run.model, config, run.mesh, shardings)
  describe = (f"model {m.d_model}d x {m.num_encoder_layers}+{m.num_decoder_layers} layers, "
              f"{count_params(state.params):,} params, mesh {dict(run.mesh.shape)}")
  return run_loop(run, state, shardings, step_fn, run.train_iterator(), workdir=workdir,
                  schedule=schedule, describe=describe, fresh=init_from(config, shardings, m),
                  command=command)


def schedule_steps(config) -> int:
  """The learning-rate schedule's length: train.schedule_steps, or train.num_steps (0)."""
  return config.train.get("schedule_steps") or config.train.num_steps


def check_resume(config, workdir: str):
  """Before anything is built: fails on a config a resumed run cannot take, else prints
  the settings it changes (and what that does to the learning-rate schedule)."""
  changes = setup.check_resume(config, workdir)
  if not changes or jax.process_index() != 0:
    return
  print("resuming with changed settings: " + ", ".join(
      f"{k} {old!r} -> {new!r}" for k, old, new in changes), flush=True)
  old_steps = {k: old for k, old, _ in changes}
  if "train.num_steps" in old_steps and not config.train.get("schedule_steps"):
    print(f"the learning-rate schedule now spans {config.train.num_steps} steps instead of "
          f"{old_steps['train.num_steps']}; --config.train.schedule_steps="
          f"{old_steps['train.num_steps']} keeps the original one", flush=True)


def resume_source(config, workdir: str):
  """Where a train.init_from run takes its model section and tokenizer: from its own
  checkpoint once it has one (so a resume never needs init_from again), else None."""
  if config.train.get("init_from"):
    with config.unlocked():  # recorded as an absolute path in the run's config
      config.train.init_from = _absolute(config.train.init_from)
    if checkpoint.has_steps(os.path.join(workdir, "checkpoints")):
      return workdir
  return None


def _shown(path: str) -> str:
  """A path as a command line would name it: relative to here when it lies below."""
  relative = os.path.relpath(path) if "://" not in path else path
  return path if relative.startswith("..") else relative


def _absolute(path: str) -> str:
  return path if "://" in path else os.path.abspath(path)


def init_from(config, shardings, model_cfg):
  """For run_loop: state -> state with train.init_from's parameters (None without it)."""
  if not config.train.get("init_from"):
    return None
  return lambda state: state.replace(params=setup.init_params(
      config, checkpoint.abstract_like(state.params, shardings.params), model_cfg))


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
             describe: str, fresh=None, command: str | None = None):
  """The loop every trainer shares: resume (state and data iterator), evaluate at step 0,
  then step, log, evaluate and checkpoint on the config's schedule; returns the final state.

  SIGTERM / SIGINT or a pod's preemption notice end the current step, save it and raise
  stop.Stopped; a non-finite loss raises stop.NonFiniteLoss (train.on_nonfinite) before
  any checkpoint holds it; a failed asynchronous save raises at the next step. A run
  that restores no checkpoint starts from fresh(state) when given (train.init_from).
  """
  t = run.config.train
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 save_every=t.checkpoint_every, keep=t.keep_checkpoints,
                                 async_save=t.async_checkpointing)
  abstract = checkpoint.abstract_like(state, shardings)
  start, restored = ckpt.restore_newest(
      lambda step: ckpt.restore(step, abstract, data_iterator=train_iter),
      report=lambda message: print(f"refinedweb: {message}", file=sys.stderr, flush=True))
  # A (re)started run logs again every step after its checkpoint: their old rows go.
  log = logger.MetricLogger(workdir, enabled=jax.process_index() == 0,
                            replay_from=0 if start is None else start + 1)
  if log.enabled:
    resume.write_config(workdir, checkpoint.config_to_json(run.config))
    resume.record_start(workdir, step=int(start or 0), command=command)
  try:
    log.text(describe)
    if start is not None:
      state = restored
      log.text(f"resumed from step {start} in {ckpt.directory}")
    elif fresh is not None:
      state = fresh(state)
      log.text(f"parameters from {run.config.train.init_from}")
    with stop.StopSignals() as signals:
      state = _steps(run, state, step_fn, train_iter, int(start or 0), schedule, ckpt, log,
                     signals)
  finally:
    try:
      ckpt.close()  # waits for a save in flight: the newest checkpoint is whole
    finally:
      log.close()
  multihost_utils.sync_global_devices("training done")
  return state


def _steps(run, state, step_fn, train_iter, start, schedule, ckpt, log, signals):
  """Steps from `start` to train.num_steps; the body of run_loop."""
  config, t = run.config, run.config.train
  evaluator = run.evaluator(log)
  save_kwargs = dict(data_iterator=train_iter, config=checkpoint.config_to_json(config),
                     tokenizer_proto=run.tokenizer.serialized_model_proto())
  rng = jax.random.key(config.seed)
  began, evaluating, last = time.time(), 0.0, {}
  if start == 0:
    evaluator.run(state.params, step=0, decode=False)
    evaluating += time.time() - began
  # A bar only on a terminal; logs (--detach, CI) get the plain line of every log step.
  progress = logger.Progress(start, t.num_steps,
                             enabled=t.progress_bar and log.enabled and sys.stderr.isatty())
  if start >= t.num_steps:
    log.text(f"already trained to step {start} (train.num_steps={t.num_steps}); nothing to do")
  throughput = Throughput(start)
  for step in range(start + 1, t.num_steps + 1):
    ckpt.check_for_errors()  # a failed background save (a full disk) stops the run now
    host_batch = next(train_iter)
    # Real (non-padding) tokens, counted on the host so the step stays asynchronous.
    throughput.tokens += int(np.sum(host_batch["encoder_segment_ids"] > 0)
                             + np.sum(host_batch["decoder_loss_weights"]))
    batch = sharding.to_global(host_batch, run.mesh)
    if step == start + 1:
      compiled_gib = _compiled_peak_gib(step_fn, state, batch, rng)
    state, metrics = step_fn(state, batch, rng)
    stopping = signals.requested or (ckpt.reached_preemption(step) and "preemption")
    logged = step % t.log_every == 0 or step == t.num_steps
    if logged:
      metrics = jax.device_get(metrics)
      metrics["train/learning_rate"] = float(schedule(step - 1))
      metrics.update(throughput.report(step))
      # ru_maxrss is in KiB on Linux: the host's peak resident memory so far.
      rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
      metrics["train/host_peak_rss_gib"] = rss_kib / 2**20
      if compiled_gib is not None:
        metrics["train/compiled_peak_gib"] = compiled_gib
      log.scalars(step, "train", metrics)
      log.text(logger.train_line(step, t.num_steps, metrics))
      last.update(metrics)
      progress.update(step, metrics)
    else:
      progress.update(step, None)
    due = stopping or step == t.num_steps or ckpt.due(step)
    if logged or due:
      _check_finite(jax.device_get(state.skips), t, ckpt)  # before any save can hold it
    if step % t.eval_every == 0 or step == t.num_steps:
      eval_began = time.time()
      last.update(evaluator.run(state.params, step=step, decode=True))
      throughput.pause(time.time() - eval_began)  # eval time is not training throughput
      evaluating += time.time() - eval_began
    if due:
      ckpt.save(step, state, force=True, **save_kwargs)
    if stopping:
      ckpt.wait()
      progress.close()
      raise stop.Stopped(stopping, step, ckpt.directory,
                         signals.exit_code if signals.requested else 0)
  progress.close()
  log.text(summary(run, start, last, ckpt, seconds=time.time() - began, evaluating=evaluating))
  return state


def summary(run, start: int, metrics: dict, ckpt, *, seconds: float, evaluating: float) -> str:
  """What a finished run prints last: its final metrics, checkpoint and what to run next."""
  t, workdir = run.config.train, _shown(os.path.dirname(ckpt.directory))
  ckpt.wait()
  newest = ckpt.latest_step()
  lines = [f"done: step {t.num_steps} (this start trained {max(t.num_steps - start, 0)} steps "
           f"in {seconds:.0f} s, {evaluating:.0f} s of it evaluating)"]
  shown = [("train/loss", "train loss"), ("eval/loss", "eval loss"),
           ("eval/accuracy", "eval accuracy")]
  cells = [f"{label} {metrics[key]:.4f}" for key, label in shown if key in metrics]
  for task in run.tasks:
    main = tasks_lib.main_metric(task.name)
    found = [k for k in metrics if k.startswith(f"eval/{task.name}/")
             and k.rsplit("/", 1)[1] not in ("loss", "accuracy", "perplexity")]
    key = f"eval/{task.name}/{main}" if main else (found[0] if found else "")
    if key in metrics:
      cells.append(f"{task.name} {key.rsplit('/', 1)[1]} {metrics[key]:.1f}")
  if cells:
    lines += textwrap.wrap(", ".join(cells), 96, initial_indent="  ", subsequent_indent="  ")
  if newest is not None:
    lines.append(f"  checkpoint: {os.path.join(ckpt.directory, str(newest))}")
  lines.append(f"  next: refinedweb eval --workdir {workdir} --split test")
  lines.append(f"        refinedweb generate --workdir {workdir} --text \"...\"")
  lines.append(f"        refinedweb train --workdir {workdir} --config.train.num_steps="
               f"{2 * t.num_steps}  (continues this run; same other settings)")
  return "\n".join(lines)


def _compiled_peak_gib(step_fn, state, batch, rng):
  """The compiled train step's peak device memory per device, in GiB (None if unknown).

  Compiling here costs nothing extra: the step's first call reuses the executable.
  """
  if not hasattr(step_fn, "lower"):
    return None
  memory = step_fn.lower(state, batch, rng).compile().memory_analysis()
  if memory is None:
    return None
  peak = (memory.temp_size_in_bytes + memory.argument_size_in_bytes
          + memory.output_size_in_bytes - memory.alias_size_in_bytes)
  return peak / 2**30


def _check_finite(skips: dict, t, ckpt):
  """Raises stop.NonFiniteLoss per train.on_nonfinite (halt: any; skip: too many in a row)."""
  first, in_a_row = int(skips["first"]), int(skips["in_a_row"])
  newest = ckpt.latest_step()
  keep = (f"the newest checkpoint (step {newest}) is untouched" if newest is not None else
          "no checkpoint was saved")
  if t.on_nonfinite == "halt" and first >= 0:
    raise stop.NonFiniteLoss(
        f"the loss or gradient norm was not finite at step {first} (train.on_nonfinite=halt); "
        f"{keep}; lower optimizer.learning_rate, set optimizer.grad_clip_norm, or use "
        "train.on_nonfinite=skip")
  if in_a_row >= t.max_nonfinite_skips:
    raise stop.NonFiniteLoss(
        f"{in_a_row} steps in a row had a non-finite loss or gradient norm and were skipped "
        f"(train.max_nonfinite_skips={t.max_nonfinite_skips}); {keep}")
