"""The training loop: resume, evaluate, step, log and checkpoint on the config's schedule."""

import os
import resource
import shlex
import sys
import textwrap
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from refinedweb_jax import sharding
from refinedweb_jax.data import registry, tasks as tasks_lib
from refinedweb_jax.model import fused
from refinedweb_jax.model.attention import dispatch
from refinedweb_jax.train import checkpoint, logger, resume, stop


class Throughput:
  """Steps, real tokens and host-wait seconds of training since the last log step, with
  evaluations left out; and the run's elapsed training time for an ETA."""

  def __init__(self, step: int, total: int):
    self.total, self.first, self.began, self.evaluating = total, step, time.time(), 0.0
    self.restart(step)

  def restart(self, step: int):
    self.step, self.tokens, self.waited = step, 0, 0.0
    self.start, self.paused = time.time(), 0.0

  def pause(self, seconds: float):
    """Time spent outside training (an evaluation) between two log steps."""
    self.paused += seconds
    self.evaluating += seconds

  def report(self, step: int) -> dict:
    elapsed = max(time.time() - self.start - self.paused, 1e-9)
    steps = max(step - self.step, 1)
    trained = max(time.time() - self.began - self.evaluating, 1e-9)
    per_step = trained / max(step - self.first, 1)
    out = {"train/steps_per_second": (step - self.step) / elapsed,
           "train/tokens_per_second": self.tokens * jax.process_count() / elapsed,
           "train/seconds_per_step": elapsed / steps,
           "train/host_wait_share": min(self.waited / elapsed, 1.0),
           "train/elapsed_seconds": time.time() - self.began,
           "train/eta_seconds": per_step * (self.total - step)}
    self.restart(step)
    return out


class StepChanged(ValueError):
  """The step restored is not the one the run's config was settled from (a newer step was
  damaged and moved aside): the config and tokenizer must come from the restored step."""

  def __init__(self, step: int, settled: int):
    super().__init__(f"the checkpoint restored (step {step}) is not the one the run's config "
                     f"was read from (step {settled}); nothing was trained: start again")
    self.step = step


def run_loop(run, state, shardings, step_fn, train_iter, *, workdir: str, schedule,
             describe: str, fresh=None, command: str | None = None, continue_with: str,
             settled_step: int | None = None):
  """The loop every run shares: resume (state and data iterator), evaluate at step 0,
  then step, log, evaluate and checkpoint on the config's schedule; returns the final state.

  SIGTERM / SIGINT or a pod's preemption notice end the current step, save it and raise
  stop.Stopped; a non-finite loss, or parameters or optimizer state that are not finite
  at a save, raise stop.NonFiniteLoss (train.on_nonfinite) before any checkpoint holds
  them; a failed asynchronous save raises at the next step. A run that restores no
  checkpoint starts from fresh(state) when given (train.init_from). Every item of a step
  is verified (config and tokenizer too); a step with a damaged one goes aside whole, and
  when the step restored is not `settled_step` (the one the config came from) StepChanged
  is raised before anything is written. continue_with: the command that continues this run.
  """
  t = run.config.train
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 save_every=t.checkpoint_every, keep=t.keep_checkpoints,
                                 async_save=t.async_checkpointing)
  abstract = checkpoint.abstract_like(state, shardings)

  def read(step: int):
    saved_config, _, mark = ckpt.restore_metadata_and_fingerprint(step)
    resume.check_fingerprint(saved_config, mark, run.config,
                             f"checkpoint step {step} in {ckpt.directory}", workdir)
    # A run saved before the fused projections reads in its layout, then fuses (model/fused.py).
    return fused.restore_either(lambda a: ckpt.restore(step, a, data_iterator=train_iter),
                                abstract)

  try:
    start, restored = ckpt.restore_newest(read, report=checkpoint.report, required=True)
  except BaseException:
    ckpt.close()
    raise
  if settled_step is not None and start != settled_step:
    ckpt.close()
    raise StepChanged(start, settled_step)
  # A (re)started run logs again every step after its checkpoint: their old rows go.
  log = logger.MetricLogger(workdir, enabled=jax.process_index() == 0,
                            replay_from=0 if start is None else start + 1)
  before = resume.last_start(workdir) if start is not None else None
  if log.enabled:
    resume.write_config(workdir, run.config)
    resume.record_start(workdir, step=int(start or 0), command=command,
                        mesh=dict(run.mesh.shape))
  try:
    log.text(describe)
    if start is not None:
      state = restored
      log.text(f"resumed from step {start} in {ckpt.directory}")
      if before and (before.get("processes"), before.get("mesh")) != (
          jax.process_count(), dict(run.mesh.shape)):
        log.text(f"resumed on {jax.process_count()} process(es), mesh {dict(run.mesh.shape)} "
                 f"(before: {before.get('processes')} process(es), mesh {before.get('mesh')}): "
                 "the data position and the parameters are global, so the same global "
                 "batches continue")
    elif fresh is not None:
      state = fresh(state)
      log.text(f"parameters from {run.config.train.init_from}")
    with stop.StopSignals() as signals:
      state = _steps(run, state, step_fn, train_iter, int(start or 0), schedule, ckpt, log,
                     signals, continue_with)
  finally:
    try:
      ckpt.close()  # waits for a save in flight: the newest checkpoint is whole
      newest = ckpt.latest_step()
      if log.enabled and newest is not None:  # the run's record of its progress
        resume.record_end(workdir, checkpoint_step=newest)
    finally:
      log.close()
  multihost_utils.sync_global_devices("training done")
  return state


def _steps(run, state, step_fn, train_iter, start, schedule, ckpt, log, signals,
           continue_with):
  """Steps from `start` to train.num_steps; the body of run_loop."""
  config, t = run.config, run.config.train
  evaluator = run.evaluator(log)
  save_kwargs = dict(data_iterator=train_iter, config=checkpoint.config_to_json(config),
                     tokenizer_proto=run.tokenizer.serialized_model_proto(),
                     fingerprint=resume.fingerprint(config))
  rng = jax.random.key(config.seed)
  throughput, last = Throughput(start, t.num_steps), {}
  if start == 0:
    began = time.time()
    evaluator.run(state.params, step=0, decode=False)
    throughput.pause(time.time() - began)
  # A bar only on a terminal; logs (--detach, CI) get the plain line of every log step.
  progress = logger.Progress(start, t.num_steps,
                             enabled=t.progress_bar and log.enabled and sys.stderr.isatty())
  if start >= t.num_steps:
    log.text(f"already trained to step {start} (train.num_steps={t.num_steps}); nothing to do")
  compiled_gib = None
  for step in range(start + 1, t.num_steps + 1):
    ckpt.check_for_errors()  # a failed background save (a full disk) stops the run now
    waiting = time.perf_counter()
    host_batch = next(train_iter)
    throughput.waited += time.perf_counter() - waiting
    # Real (non-padding) tokens, counted on the host so the step stays asynchronous.
    throughput.tokens += int(np.sum(host_batch["encoder_segment_ids"] > 0)
                             + np.sum(host_batch["decoder_loss_weights"]))
    batch = sharding.to_global(host_batch, run.mesh)
    if step == start + 1:
      compiled_gib = _compiled_peak_gib(step_fn, state, batch, rng)
      if dispatch.CHOICES:
        log.text("attention kernels: " + dispatch.report())
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
    if due:
      _save_finite(ckpt, step, state, save_kwargs)
    if stopping:
      ckpt.wait()
      progress.close()
      raise stop.Stopped(stopping, step, ckpt.directory,
                         signals.exit_code if signals.requested else 0)
  progress.close()
  log.text(summary(run, start, last, ckpt, seconds=time.time() - throughput.began,
                   evaluating=throughput.evaluating, continue_with=continue_with))
  return state


def shown(path: str) -> str:
  """A path as a command line would name it: relative to here when it lies below."""
  relative = os.path.relpath(path) if "://" not in path else path
  return path if relative.startswith("..") else relative


def has_test_split(config, task) -> bool:
  """Whether `refinedweb eval --split test` can evaluate this task."""
  entry = registry.for_config(config).own_entry(task.name)
  if entry is not None:
    return bool(entry.get("test")) or "test" in (entry.get("carve") or {})
  if task.name in tasks_lib.BUILTIN:
    return True
  from refinedweb_jax.data.datasets import public  # a public task's splits: its Spec
  return "test" in public.PUBLIC[task.name].splits


def hints(run, workdir: str, continue_with: str) -> list[str]:
  """The commands that follow a finished run, each one that works as printed."""
  t, workdir = run.config.train, shlex.quote(shown(workdir))  # a path with spaces works too
  split = " --split test" if all(has_test_split(run.config, task) for task in run.tasks) else ""
  return [f"refinedweb eval --workdir {workdir}{split}",
          f"refinedweb generate --workdir {workdir} --text \"...\"",
          f"{continue_with} --workdir {workdir} --config.train.num_steps={2 * t.num_steps}  "
          "(continues this run with its own settings)"]


def summary(run, start: int, metrics: dict, ckpt, *, seconds: float, evaluating: float,
            continue_with: str) -> str:
  """What a finished run prints last: its final metrics, checkpoint and what to run next."""
  t = run.config.train
  ckpt.wait()
  newest = ckpt.latest_step()
  lines = [f"done: step {t.num_steps} (this start trained {max(t.num_steps - start, 0)} steps "
           f"in {seconds:.0f} s, {evaluating:.0f} s of it evaluating)"]
  shown_metrics = [("train/loss", "train loss"), ("eval/loss", "eval loss"),
                   ("eval/accuracy", "eval accuracy")]
  cells = [f"{label} {metrics[key]:.4f}" for key, label in shown_metrics if key in metrics]
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
  for i, hint in enumerate(hints(run, os.path.dirname(ckpt.directory), continue_with)):
    lines.append(("  next: " if i == 0 else "        ") + hint)
  return "\n".join(lines)


def _compiled_peak_gib(step_fn, state, batch, rng):
  """The compiled train step's peak device memory per device, in GiB (None if unknown).

  Compiling here costs nothing extra: the step's first call reuses the executable.
  """
  if not hasattr(step_fn, "lower"):  # a step wrapped without its jit (a test's)
    return None
  memory = step_fn.lower(state, batch, rng).compile().memory_analysis()
  if memory is None:
    return None
  peak = (memory.temp_size_in_bytes + memory.argument_size_in_bytes
          + memory.output_size_in_bytes - memory.alias_size_in_bytes)
  return peak / 2**30


def _kept(ckpt) -> str:
  newest = ckpt.latest_step()
  return (f"the newest checkpoint (step {newest}) is untouched" if newest is not None else
          "no checkpoint was saved")


def _save_finite(ckpt, step: int, state, save_kwargs: dict):
  """Saves the step, or raises stop.NonFiniteLoss when its updated state is not finite (a
  step whose loss and gradient norm were finite can still overflow the parameters)."""
  try:
    ckpt.save(step, state, force=True, **save_kwargs)
  except checkpoint.NotFinite as e:
    raise stop.NonFiniteLoss(
        f"{e}, so step {step} was not saved; {_kept(ckpt)}; lower optimizer.learning_rate or "
        "set optimizer.grad_clip_norm") from None


def _check_finite(skips: dict, t, ckpt):
  """Raises stop.NonFiniteLoss per train.on_nonfinite (halt: any; skip: too many in a row)."""
  first, in_a_row = int(skips["first"]), int(skips["in_a_row"])
  keep = _kept(ckpt)
  if t.on_nonfinite == "halt" and first >= 0:
    raise stop.NonFiniteLoss(
        f"the loss or gradient norm was not finite at step {first} (train.on_nonfinite=halt); "
        f"{keep}; lower optimizer.learning_rate, set optimizer.grad_clip_norm, or use "
        "train.on_nonfinite=skip")
  if in_a_row >= t.max_nonfinite_skips:
    raise stop.NonFiniteLoss(
        f"{in_a_row} steps in a row had a non-finite loss or gradient norm and were skipped "
        f"(train.max_nonfinite_skips={t.max_nonfinite_skips}); {keep}")
