"""Knowledge distillation: a student trained from a teacher's saved (or live) top-k logits.

  refinedweb distill dump --teacher RUN --config STUDENT.py --out LOGITS
  refinedweb distill train --logits LOGITS --config STUDENT.py --workdir W

Loss per target token: alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T)
(losses.topk_distillation). The student's data pipeline is the training pipeline:
the same mixture, shuffle and first-fit packing; each example carries its key (task,
record) and a map looks its teacher record up, so packing moves the teacher arrays
with the target tokens and a restored iterator meets the same logits. sequence_kd
trains on the teacher's decoded outputs instead (cross-entropy, Kim & Rush 2016);
online runs the teacher inside the step on the same batch instead of reading a dump.
"""

import functools
import os

import jax

from refinedweb_jax import sharding
from refinedweb_jax.data import pipeline, teacher as teacher_data
from refinedweb_jax.data import tokenizer as tok
from refinedweb_jax.data import logit_store
from refinedweb_jax.model.transformer import count_params
from refinedweb_jax.train import losses as train_losses, loop, optim, setup, step as step_lib

def jit_kd_step(run, config, state_shardings, teacher=None):
  """The train step on kd_sums, jitted once (state donated); f(state, batch, rng).

  teacher: a setup.Trained run inside the step (online), or None (the batch holds the
  teacher's top-k).
  """
  kd = config.distill
  sum_fn = functools.partial(
      train_losses.kd_sums, model=run.model, alpha=kd.alpha, temperature=kd.temperature,
      label_smoothing=config.loss.label_smoothing, z_loss=config.loss.z_loss,
      teacher_model=None if teacher is None else teacher.run.model, top_k=kd.top_k)
  if teacher is None:
    return step_lib.jit_train_step(run.model, config, run.mesh, state_shardings, sum_fn=sum_fn,
                                   features=pipeline.FEATURES + teacher_data.TEACHER_FEATURES)
  # The teacher's parameters are an argument of the step, replicated on the student's mesh.
  params = jax.device_put(teacher.params, sharding.replicated(run.mesh))
  return step_lib.jit_train_step(run.model, config, run.mesh, state_shardings, sum_fn=sum_fn,
                                 sum_args=(params,))


def _load_teacher(config, logits_dir: str, teacher_workdir: str | None):
  """(store or None, online teacher or None, tokenizer proto, where) for the configured mode."""
  kd = config.distill
  if kd.online:
    if not teacher_workdir:
      raise ValueError("config.distill.online=True needs --teacher WORKDIR (the teacher runs "
                       "inside the step)")
    teacher = setup.restore(teacher_workdir)
    where = f"from --teacher {teacher_workdir}"
    logit_store.check_same_vocabulary(config, teacher.run.tokenizer, where,
                               teacher.run.model_cfg.vocab_size)
    return None, teacher, teacher.run.tokenizer.serialized_model_proto(), where
  if not logits_dir:
    raise ValueError("distill train needs --logits LOGITS_DIR (from refinedweb distill dump), "
                     "or config.distill.online=True with --teacher WORKDIR")
  if not os.path.isdir(logits_dir):
    raise FileNotFoundError(f"logits directory {logits_dir!r} does not exist; write it with: "
                            f"refinedweb distill dump --teacher WORKDIR --out {logits_dir}")
  store = logit_store.LogitStore(logits_dir)
  where = f"from --logits {logits_dir}"
  logit_store.check_same_vocabulary(config, tok.Tokenizer(model_proto=store.tokenizer_proto()), where,
                             store.index.get("model_vocab_size"))
  index, d = store.index, config.data
  if kd.sequence_kd and not index["sequence_kd"]:
    raise ValueError(f"config.distill.sequence_kd=True but {logits_dir!r} holds no teacher "
                     "outputs; dump with: refinedweb distill dump --sequence-kd ...")
  for key in ("input_length", "target_length"):
    if index[key] != d[key]:
      raise ValueError(f"{logits_dir!r} was dumped with data.{key}={index[key]}, the student "
                       f"config has {d[key]}; use the same lengths")
  return store, None, store.tokenizer_proto(), where


def train_student(config, workdir: str, *, logits_dir: str | None = None,
                  teacher_workdir: str | None = None, command: str | None = None):
  """Trains (resuming from workdir's newest checkpoint) and evaluates a distilled student."""
  os.makedirs(workdir, exist_ok=True)
  loop.check_resume(config, workdir)
  store, teacher, proto, where = _load_teacher(config, logits_dir, teacher_workdir)
  run = setup.build(config, model_from=loop.resume_source(config, workdir))  # init_from too
  logit_store.check_same_tokenizer(run.tokenizer, proto, where)
  kd, d = config.distill, config.data
  if store is not None:
    missing = sorted({t.name for t in run.tasks} - set(store.offsets))
    if missing:
      raise ValueError(f"tasks {', '.join(missing)} of config.mixture.tasks have no teacher "
                       f"logits in {logits_dir!r}; it holds: {', '.join(store.offsets)}")
  tx, schedule = optim.make_optimizer(config.optimizer, loop.schedule_steps(config))
  state, shardings = step_lib.create_train_state(run.model, tx, run.mesh,
                                                 jax.random.key(config.seed),
                                                 input_length=d.input_length,
                                                 target_length=d.target_length)
  m = run.model_cfg
  mode = ("sequence-level KD (cross-entropy on teacher outputs)" if kd.sequence_kd else
          f"{'online ' if kd.online else ''}KD alpha={kd.alpha} T={kd.temperature} top-k "
          f"{store.index['top_k'] if store else kd.top_k}")
  describe = (f"student {m.d_model}d x {m.num_encoder_layers}+{m.num_decoder_layers} layers, "
              f"{count_params(state.params):,} params; {mode}")
  if store is None:
    train_iter, step_fn = run.train_iterator(), jit_kd_step(run, config, shardings, teacher)
  else:
    sources, _ = run.mixture()
    keyed = [teacher_data.KeyedSource(s, store.example_id(t.name, 0)) for t, s in zip(run.tasks, sources)]
    attach = teacher_data.AttachTeacher(store, run.tokenizer, d.input_length, d.target_length, kd.sequence_kd)
    if kd.sequence_kd:
      train_iter = run.train_iterator(keyed, tokenize=attach)
      step_fn = step_lib.jit_train_step(run.model, config, run.mesh, shardings)
    else:
      train_iter = run.train_iterator(keyed, tokenize=attach, target_features=teacher_data.TEACHER_FEATURES)
      step_fn = jit_kd_step(run, config, shardings)
  return loop.run_loop(run, state, shardings, step_fn, train_iter, workdir=workdir,
                       schedule=schedule, describe=describe,
                       fresh=loop.init_from(config, shardings, run.model_cfg), command=command)
