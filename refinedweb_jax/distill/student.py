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

import dataclasses
import functools
import os

import grain
import jax
import jax.numpy as jnp

from refinedweb_jax import sharding
from refinedweb_jax.data import pipeline
from refinedweb_jax.data import tokenizer as tok
from refinedweb_jax.distill import dump, store as logit_store
from refinedweb_jax.model import losses
from refinedweb_jax.model.transformer import count_params, forward
from refinedweb_jax.train import loop, optim, setup, step as step_lib

TEACHER_FEATURES = ("teacher_logprobs", "teacher_ids")


class KeyedSource:
  """A task's train source whose examples carry their global example number as 'key'."""

  def __init__(self, source, offset: int):
    self.source, self.offset = source, offset

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    return {**self.source[i], "key": self.offset + int(i)}


@dataclasses.dataclass
class AttachTeacher(grain.transforms.Map):
  """Tokenizes an example and joins its teacher record: top-k arrays, or decoded targets."""
  store: logit_store.LogitStore
  tokenizer: object
  input_length: int
  target_length: int
  sequence_kd: bool = False

  def map(self, example):
    out = pipeline.Tokenize(self.tokenizer, self.input_length, self.target_length).map(example)
    record = self.store[example["key"]]
    if self.sequence_kd:
      return {"inputs": out["inputs"], "targets": record["sequence"][: self.target_length]}
    if len(record["lse"]) != len(out["targets"]):
      raise ValueError(f"example {example['key']} ({example['task']}) has "
                       f"{len(out['targets'])} target tokens but its teacher record "
                       f"{len(record['lse'])}: the logits were dumped with other data settings")
    return {**out, "teacher_logprobs": record["logprobs"], "teacher_ids": record["ids"]}


def kd_sums(params, batch, rng, teacher_params=None, *, model, alpha: float, temperature: float,
            label_smoothing: float = 0.0, z_loss: float = 0.0, teacher_model=None,
            top_k: int = 0):
  """Token sums of alpha * CE + (1 - alpha) * T^2 * KL, for step.train_step.

  The teacher's top-k come from the batch, or from teacher_model(teacher_params) run
  here on the same batch (online); either way they are constants for the gradient.
  """
  logits = forward(model, params, batch, deterministic=False, rngs={"dropout": rng})
  if teacher_model is not None:
    teacher_lp, teacher_ids, _ = dump.teacher_topk(teacher_model, teacher_params, batch, top_k)
  else:
    teacher_lp, teacher_ids = batch["teacher_logprobs"], batch["teacher_ids"]
  teacher_lp, teacher_ids = jax.lax.stop_gradient((teacher_lp, teacher_ids))
  targets = batch["decoder_target_tokens"]
  weights = batch["decoder_loss_weights"].astype(jnp.float32)
  total = lambda x: jnp.sum(x * weights)
  ce_BxT, z_BxT = losses.cross_entropy(logits, targets, label_smoothing=label_smoothing,
                                       z_loss=z_loss)
  kl_BxT = losses.topk_distillation(logits, teacher_lp, teacher_ids, temperature=temperature)
  ce, kl, z = total(ce_BxT), total(kl_BxT), total(z_BxT)
  loss = alpha * ce + (1.0 - alpha) * temperature ** 2 * kl + z  # z-loss whatever alpha is
  return loss, {"ce": ce, "kd_kl": kl, "z_loss": z,
                "accuracy": total(losses.correct(logits, targets)), "weight": jnp.sum(weights)}


def jit_kd_step(run, config, state_shardings, teacher=None):
  """The train step on kd_sums, jitted once (state donated); f(state, batch, rng).

  teacher: a setup.Trained run inside the step (online), or None (the batch holds the
  teacher's top-k).
  """
  kd = config.distill
  sum_fn = functools.partial(
      kd_sums, model=run.model, alpha=kd.alpha, temperature=kd.temperature,
      label_smoothing=config.loss.label_smoothing, z_loss=config.loss.z_loss,
      teacher_model=None if teacher is None else teacher.run.model, top_k=kd.top_k)
  if teacher is None:
    return step_lib.jit_train_step(run.model, config, run.mesh, state_shardings, sum_fn=sum_fn,
                                   features=pipeline.FEATURES + TEACHER_FEATURES)
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
    dump.check_same_vocabulary(config, teacher.run.tokenizer, where,
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
  dump.check_same_vocabulary(config, tok.Tokenizer(model_proto=store.tokenizer_proto()), where,
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
  dump.check_same_tokenizer(run.tokenizer, proto, where)
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
    keyed = [KeyedSource(s, store.example_id(t.name, 0)) for t, s in zip(run.tasks, sources)]
    attach = AttachTeacher(store, run.tokenizer, d.input_length, d.target_length, kd.sequence_kd)
    if kd.sequence_kd:
      train_iter = run.train_iterator(keyed, tokenize=attach)
      step_fn = step_lib.jit_train_step(run.model, config, run.mesh, shardings)
    else:
      train_iter = run.train_iterator(keyed, tokenize=attach, target_features=TEACHER_FEATURES)
      step_fn = jit_kd_step(run, config, shardings)
  return loop.run_loop(run, state, shardings, step_fn, train_iter, workdir=workdir,
                       schedule=schedule, describe=describe,
                       fresh=loop.init_from(config, shardings, run.model_cfg), command=command)
