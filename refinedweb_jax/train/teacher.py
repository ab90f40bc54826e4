"""A distilled student's teacher, as its settled config names it, and what it changes in a run.

config.distill.logits: a store written by `refinedweb distill dump` (the teacher's top-k
log-probabilities per target token, or with sequence_kd its decoded outputs); with
config.distill.online, config.distill.teacher: a teacher run evaluated inside the step
on the same batch. Either way the loss is alpha * CE + (1 - alpha) * T^2 * KL
(losses.kd_sums), and the student's examples are the training pipeline's: each carries
its global example number, and its teacher record travels with its target tokens.
"""

import dataclasses
import functools
import os

import jax

from refinedweb_jax import sharding
from refinedweb_jax.data import logit_store, pipeline, teacher as teacher_data
from refinedweb_jax.data import tokenizer as tok
from refinedweb_jax.train import losses, setup


@dataclasses.dataclass
class Teacher:
  """Where a student's targets come from: a store, or a teacher run inside the step."""
  store: logit_store.LogitStore | None
  online: setup.Trained | None
  proto: bytes  # the teacher's tokenizer, which must be the student's
  where: str  # how errors name it


def is_student(config) -> bool:
  return bool(config.distill.get("logits") or config.distill.get("online"))


def load(config) -> Teacher | None:
  """The teacher a student's config names (None for a run that is no student)."""
  kd = config.distill
  if not is_student(config):
    return None
  if kd.online:
    if not kd.get("teacher"):
      raise ValueError("config.distill.online=True needs --teacher WORKDIR "
                       "(config.distill.teacher: the teacher runs inside the step)")
    teacher = setup.restore(kd.teacher)
    where = f"from --teacher {kd.teacher}"
    logit_store.check_same_vocabulary(config, teacher.run.tokenizer, where,
                                      teacher.run.model_cfg.vocab_size)
    return Teacher(None, teacher, teacher.run.tokenizer.serialized_model_proto(), where)
  if not os.path.isdir(kd.logits):
    raise FileNotFoundError(f"logits directory {kd.logits!r} does not exist; write it with: "
                            f"refinedweb distill dump --teacher WORKDIR --out {kd.logits}")
  store = logit_store.LogitStore(kd.logits)
  where = f"from --logits {kd.logits}"
  logit_store.check_same_vocabulary(config, tok.Tokenizer(model_proto=store.tokenizer_proto()),
                                    where, store.index.get("model_vocab_size"))
  index, d = store.index, config.data
  if kd.sequence_kd and not index["sequence_kd"]:
    raise ValueError(f"config.distill.sequence_kd=True but {kd.logits!r} holds no teacher "
                     "outputs; dump with: refinedweb distill dump --sequence-kd ...")
  for key in ("input_length", "target_length"):
    if index[key] != d[key]:
      raise ValueError(f"{kd.logits!r} was dumped with data.{key}={index[key]}, the student "
                       f"config has {d[key]}; use the same lengths")
  return Teacher(store, None, store.tokenizer_proto(), where)


def check(teacher: Teacher, run):
  """The student's tokenizer is the teacher's; the store holds every task of the mixture."""
  logit_store.check_same_tokenizer(run.tokenizer, teacher.proto, teacher.where)
  if teacher.store is not None:
    missing = sorted({t.name for t in run.tasks} - set(teacher.store.offsets))
    if missing:
      raise ValueError(f"tasks {', '.join(missing)} of config.mixture.tasks have no teacher "
                       f"logits in {run.config.distill.logits!r}; it holds: "
                       f"{', '.join(teacher.store.offsets)}")


def describe(config, teacher: Teacher) -> str:
  kd = config.distill
  if kd.sequence_kd:
    return "sequence-level KD (cross-entropy on teacher outputs)"
  top_k = teacher.store.index["top_k"] if teacher.store else kd.top_k
  return f"{'online ' if kd.online else ''}KD alpha={kd.alpha} T={kd.temperature} top-k {top_k}"


def loss(config, run, teacher: Teacher):
  """(sum_fn, batch features, extra step arguments) of a student's train step."""
  kd = config.distill
  if kd.sequence_kd:  # cross-entropy on the teacher's outputs, which the batch holds
    return None, pipeline.FEATURES, ()
  sum_fn = functools.partial(
      losses.kd_sums, model=run.model, alpha=kd.alpha, temperature=kd.temperature,
      label_smoothing=config.loss.label_smoothing, z_loss=config.loss.z_loss,
      teacher_model=None if teacher.online is None else teacher.online.run.model,
      top_k=kd.top_k)
  if teacher.online is None:
    return sum_fn, pipeline.FEATURES + teacher_data.TEACHER_FEATURES, ()
  # The teacher's parameters are an argument of the step, replicated on the student's mesh.
  params = jax.device_put(teacher.online.params, sharding.replicated(run.mesh))
  return sum_fn, pipeline.FEATURES, (params,)


def iterator(run, teacher: Teacher):
  """The student's batches: the training pipeline's, with the teacher's records joined."""
  if teacher.store is None:
    return run.train_iterator()
  d, kd, store = run.config.data, run.config.distill, teacher.store
  sources, _ = run.mixture()
  keyed = [teacher_data.KeyedSource(s, store.example_id(t.name, 0))
           for t, s in zip(run.tasks, sources)]
  attach = teacher_data.AttachTeacher(store, run.tokenizer, d.input_length, d.target_length,
                                      kd.sequence_kd)
  features = () if kd.sequence_kd else teacher_data.TEACHER_FEATURES
  # The teacher's outputs are the targets with sequence_kd: their lengths are the store's.
  key = f"teacher:{store.directory}:{kd.sequence_kd}:{store.index.get('tokenizer')}"
  return run.train_iterator(keyed, tokenize=attach, target_features=features, lengths_key=key)
