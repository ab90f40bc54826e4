"""The one assembly of every training run, from its settled config (resume.settle).

From scratch, resumed, fine-tuned (train.init_from: a run of ours or an imported T5), a
distilled student (config.distill.logits or .online with .teacher), or a sweep arm (a
`refinedweb train` of its own): what differs is data in the config — where the
parameters start, which tokenizer, the loss and its targets — never a second loop.
"""

import contextlib
import functools
import os
import shlex
import sys

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from refinedweb_jax import backend, configs, sharding
from refinedweb_jax.data import checks, tasks
from refinedweb_jax.model.transformer import count_params
from refinedweb_jax.train import checkpoint, lock, loop, optim, resume, setup, step as step_lib
from refinedweb_jax.train import teacher as teacher_lib


def schedule_steps(config) -> int:
  """The learning-rate schedule's length: train.schedule_steps, or train.num_steps (0)."""
  return config.train.get("schedule_steps") or config.train.num_steps


def say(settled: resume.Settled):
  """Prints (once, on the first process) what settling the config found."""
  if jax.process_index() != 0:
    return
  for note in settled.notes:
    print(note, flush=True)
  if not settled.changes:
    return
  print("resuming with changed settings: " + ", ".join(
      f"{k} {old!r} -> {new!r}" for k, old, new in settled.changes), flush=True)
  old_steps = {k: old for k, old, _ in settled.changes}
  if "train.num_steps" in old_steps and not settled.config.train.get("schedule_steps"):
    print(f"the learning-rate schedule now spans {settled.config.train.num_steps} steps "
          f"instead of {old_steps['train.num_steps']}; --config.train.schedule_steps="
          f"{old_steps['train.num_steps']} keeps the original one", flush=True)


def prepare_workdir(workdir: str):
  """The run directory (a local folder or gs://bucket/run), which must be no imported model."""
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  if epath.Path(workdir, checkpoint.IMPORTED).exists():
    raise ValueError(f"{workdir} holds an imported model, not a training run; fine-tune it into "
                     f"a new workdir: refinedweb train --workdir NEW "
                     f"--config.train.init_from={shlex.quote(str(workdir))}")


def train(settled: resume.Settled, workdir: str, *, command: str | None = None):
  """Trains (resuming the newest checkpoint in workdir) and evaluates; returns the final state."""
  config = settled.config
  backend.configure()
  dist = config.distributed
  sharding.initialize_distributed(dist.coordinator_address, dist.num_processes, dist.process_id)
  prepare_workdir(workdir)
  with hold(workdir):
    if settled.step is None:
      resume.check_progress(workdir)  # an emptied checkpoints/ is no new run
    try:
      return _train(settled, workdir, command)
    except loop.StepChanged as changed:
      if settled.again is None:
        raise
      # A newer step was damaged and moved aside: config and tokenizer of the step restored.
      return _train(settled.again(changed.step), workdir, command)


@contextlib.contextmanager
def hold(workdir: str):
  """The run directory's lock (lock.py), taken by the first process for every process."""
  held, error = lock.Lock(workdir), None
  if jax.process_index() == 0:
    try:
      held.acquire()
    except lock.Busy as e:
      error = str(e)
  if jax.process_count() > 1:  # every process stops if the first could not take it
    taken = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    error = error or (None if taken else f"{workdir} is in use by another run")
  if error:
    raise lock.Busy(error)
  if held.took_over and jax.process_index() == 0:
    stale = held.took_over
    print(f"refinedweb: took over the lock of pid {stale.get('pid')} on host "
          f"{stale.get('host')} (since {stale.get('since')}), which is gone", file=sys.stderr,
          flush=True)
  try:
    yield
  finally:
    if jax.process_index() == 0:
      held.release()


def _train(settled: resume.Settled, workdir: str, command: str | None):
  config = settled.config
  say(settled)
  resumed = settled.step is not None
  teacher = teacher_lib.load(config)
  run = setup.build(config, tokenizer_from=workdir if resumed else
                    (config.train.init_from or None))
  if teacher is not None:
    teacher_lib.check(teacher, run)
  if jax.process_index() == 0 and settled.step is None:  # once, when the run starts
    for line in coverage(run):
      print(f"refinedweb: {line}", flush=True)
  d, model_cfg = config.data, run.model_cfg
  tx, schedule = optim.make_optimizer(config.optimizer, schedule_steps(config))
  state, shardings = step_lib.create_train_state(
      run.model, tx, run.mesh, jax.random.key(config.seed), input_length=d.input_length,
      target_length=d.target_length)
  if teacher is None:
    step_fn = step_lib.jit_train_step(run.model, config, run.mesh, shardings)
    batches, kind, again = run.train_iterator(), "", "refinedweb train"
  else:
    sum_fn, features, extra = teacher_lib.loss(config, run, teacher)
    step_fn = step_lib.jit_train_step(run.model, config, run.mesh, shardings, sum_fn=sum_fn,
                                      features=features, sum_args=extra)
    batches, again = teacher_lib.iterator(run, teacher), "refinedweb distill train"
    kind = "; " + teacher_lib.describe(config, teacher)
  describe = (f"model {model_cfg.d_model}d x {model_cfg.num_encoder_layers}"
              f"+{model_cfg.num_decoder_layers} layers, "
              f"{count_params(state.params):,} params, compute {model_cfg.dtype} (parameters and "
              f"optimizer state float32), mesh {dict(run.mesh.shape)}{kind}")
  fresh = None
  if config.train.get("init_from"):
    fresh = functools.partial(_from_init, config, shardings, model_cfg)
  return loop.run_loop(run, state, shardings, step_fn, batches, workdir=workdir,
                       schedule=schedule, describe=describe, fresh=fresh, command=command,
                       continue_with=again, settled_step=settled.step)


def coverage(run) -> list[str]:
  """One line on how the run's tokenizer spells its tasks' text (the worst task; advice only
  where following it helps) and one on the inputs and targets longer than the run's lengths."""
  config, d = run.config, run.config.data
  name = (os.path.join(config.train.init_from, "spiece.model") if config.train.get("init_from")
          else str(d.tokenizer))
  named = [(task.name, task.source("train")) for task in run.tasks]
  trained = [task.name for task in run.tasks
             if name == "mixture" or (name == "builtin" and task.name in tasks.BUILTIN)]
  advice = lambda texts, fraction: checks.vocab_advice(
      run.tokenizer, *configs.tokenizer_vocab_size(config),
      lambda: checks.tokenizer_texts(config, run.tasks), texts, fraction)
  lines = (checks.coverage_line(run.tokenizer, named, name, trained_on=trained,
                                vocab_advice=advice),
           checks.truncation_line(run.tokenizer, named, d.input_length, d.target_length))
  return [line for line in lines if line]


def _from_init(config, shardings, model_cfg, state):
  """The fresh state with train.init_from's parameters."""
  return state.replace(params=setup.init_params(
      config, checkpoint.abstract_like(state.params, shardings.params), model_cfg))


def train_and_evaluate(config, workdir: str, *, overrides=(), command: str | None = None):
  """Settles a ConfigDict against the run in workdir (resume.settle) and trains it."""
  return train(resume.settle(workdir, base=config, overrides=overrides), workdir,
               command=command)
