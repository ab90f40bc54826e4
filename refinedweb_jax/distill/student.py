"""Knowledge distillation: a student trained from a teacher's saved (or live) top-k logits.

  refinedweb distill dump --teacher RUN --config STUDENT.py --out LOGITS
  refinedweb distill train --logits LOGITS --config STUDENT.py --workdir W

Loss per target token: alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T)
(losses.topk_distillation). The student's data pipeline is trainer.py's: the same
mixture, shuffle and first-fit packing; each example carries its key (task, record)
and a map looks its teacher record up, so packing moves the teacher arrays with the
target tokens and a restored iterator meets the same logits. sequence_kd trains on
the teacher's decoded outputs instead (cross-entropy, Kim & Rush 2016); online runs
the teacher inside the step on the same batch instead of reading a dump.
"""

import dataclasses
import functools
import os

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import optax

from refinedweb_jax.train import checkpoint
from refinedweb_jax.data import pipeline as data
from refinedweb_jax.distill import dump as distill_dump
from refinedweb_jax.evaluate import evaluator as evaluation
from refinedweb_jax.distill import store as logit_store
from refinedweb_jax.train import losses
from refinedweb_jax import sharding
from refinedweb_jax.train import loop as trainer
from refinedweb_jax.model.transformer import count_params

TEACHER_FEATURES = ("teacher_logprobs", "teacher_ids")
SUBCOMMANDS = ("dump", "train")


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
    out = data.Tokenize(self.tokenizer, self.input_length, self.target_length).map(example)
    record = self.store[example["key"]]
    if self.sequence_kd:
      return {"inputs": out["inputs"], "targets": record["sequence"][: self.target_length]}
    if len(record["lse"]) != len(out["targets"]):
      raise ValueError(f"example {example['key']} ({example['task']}) has "
                       f"{len(out['targets'])} target tokens but its teacher record "
                       f"{len(record['lse'])}: the logits were dumped with other data settings")
    return {**out, "teacher_logprobs": record["logprobs"], "teacher_ids": record["ids"]}


def train_dataset(exp, store, *, sequence_kd: bool):
  """This host's infinite batched iterator: trainer.py's pipeline with teacher records joined."""
  d = exp.config.data
  sources, rates = exp.mixture()
  keyed = [KeyedSource(s, store.example_id(t.name, 0)) for t, s in zip(exp.tasks, sources)]
  ds = data.train_dataset(
      keyed, rates, exp.tokenizer, batch_size=d.batch_size // jax.process_count(),
      input_length=d.input_length, target_length=d.target_length, pack=d.pack,
      seed=d.shuffle_seed, shard_index=jax.process_index(), shard_count=jax.process_count(),
      tokenize=AttachTeacher(store, exp.tokenizer, d.input_length, d.target_length, sequence_kd),
      target_features=() if sequence_kd else TEACHER_FEATURES, alignment=exp.alignment())
  return iter(ds)


def kd_train_step(state, batch, rng, teacher_params=None, *, model, alpha: float,
                  temperature: float, label_smoothing: float = 0.0, z_loss: float = 0.0,
                  teacher_model=None, top_k: int = 0, microbatches: int = 1):
  """One optimizer step on alpha * CE + (1 - alpha) * T^2 * KL; returns (state, metrics).

  The teacher's top-k come from the batch, or from teacher_model(teacher_params) run
  here on the same batch (online); either way they are constants for the gradient.
  Token sums are accumulated over `microbatches` as in trainer.train_step.
  """
  rng = jax.random.fold_in(rng, state.step)

  def sum_fn(params, mb, index):
    dropout_rng = rng if microbatches == 1 else jax.random.fold_in(rng, index)
    logits = evaluation.forward(model, params, mb, deterministic=False,
                                rngs={"dropout": dropout_rng})
    if teacher_model is not None:
      teacher_lp, teacher_ids, _ = distill_dump.teacher_topk(teacher_model, teacher_params, mb,
                                                             top_k)
    else:
      teacher_lp, teacher_ids = mb["teacher_logprobs"], mb["teacher_ids"]
    teacher_lp, teacher_ids = jax.lax.stop_gradient((teacher_lp, teacher_ids))
    targets, weights = mb["decoder_target_tokens"], mb["decoder_loss_weights"]
    ce_sum, z_sum, weight = losses.cross_entropy(logits, targets, weights,
                                                 label_smoothing=label_smoothing, z_loss=z_loss)
    kl_sum, _ = losses.topk_distillation(logits, teacher_lp, teacher_ids, weights,
                                         temperature=temperature)
    ce_sum = ce_sum - z_sum  # z-loss stays whatever alpha is
    loss_sum = alpha * ce_sum + (1.0 - alpha) * temperature ** 2 * kl_sum + z_sum
    correct, _ = losses.token_accuracy(logits, targets, weights)
    return loss_sum, {"ce": ce_sum, "kd_kl": kl_sum, "z_loss": z_sum, "correct": correct,
                      "weight": weight}

  (loss_sum, sums), grads = trainer.accumulate_gradients(sum_fn, state.params, batch,
                                                       microbatches)
  weight = jnp.maximum(sums["weight"], 1.0)
  grads = jax.tree.map(lambda g: g / weight, grads)
  metrics = {"train/loss": loss_sum / weight, "train/ce": sums["ce"] / weight,
             "train/kd_kl": sums["kd_kl"] / weight, "train/z_loss": sums["z_loss"] / weight,
             "train/accuracy": sums["correct"] / weight,
             "train/grad_norm": optax.tree.norm(grads), "train/target_tokens": sums["weight"]}
  return state.apply_gradients(grads=grads), metrics


def jit_kd_step(exp, state_shardings, teacher=None):
  """kd_train_step jitted once with explicit shardings (state donated); f(state, batch, rng)."""
  kd, mesh = exp.config.distill, exp.mesh
  step = functools.partial(
      kd_train_step, model=exp.model, alpha=kd.alpha, temperature=kd.temperature,
      label_smoothing=exp.config.loss.label_smoothing, z_loss=exp.config.loss.z_loss,
      teacher_model=None if teacher is None else teacher.model, top_k=kd.top_k,
      microbatches=exp.config.train.get("microbatches", 1))
  features = data.FEATURES + (() if teacher is not None else TEACHER_FEATURES)
  batch_sh = {k: sharding.batch_sharding(mesh) for k in features}
  repl = sharding.replicated(mesh)
  teacher_params = None
  if teacher is not None:
    teacher_params = jax.device_put(teacher.params, repl)
  jitted = jax.jit(step, in_shardings=(state_shardings, batch_sh, repl, repl),
                   out_shardings=(state_shardings, repl), donate_argnums=0)

  def run(state, batch, rng):
    with nn.logical_axis_rules(sharding.LOGICAL_RULES), jax.set_mesh(mesh):
      return jitted(state, batch, rng, teacher_params)
  return run


def _load_teacher_store(config, logits_dir: str, teacher_workdir: str | None):
  """(store or None, teacher or None, tokenizer proto, where) for the configured mode."""
  from refinedweb_jax import api
  kd = config.distill
  if kd.online:
    if not teacher_workdir:
      raise ValueError("config.distill.online=True needs --teacher WORKDIR (the teacher runs "
                       "inside the step)")
    teacher = api.RefinedWeb.load(teacher_workdir)
    where = f"from --teacher {teacher_workdir}"
    distill_dump.check_same_vocabulary(config, teacher.tokenizer, where)
    return None, teacher, teacher.tokenizer.serialized_model_proto(), where
  if not logits_dir:
    raise ValueError("distill train needs --logits LOGITS_DIR (from refinedweb distill dump), "
                     "or config.distill.online=True with --teacher WORKDIR")
  if not os.path.isdir(logits_dir):
    raise FileNotFoundError(f"logits directory {logits_dir!r} does not exist; write it with: "
                            f"refinedweb distill dump --teacher WORKDIR --out {logits_dir}")
  store = logit_store.LogitStore(logits_dir)
  from refinedweb_jax.data import tokenizer as tok
  where = f"from --logits {logits_dir}"
  distill_dump.check_same_vocabulary(config, tok.Tokenizer(model_proto=store.tokenizer_proto()),
                                     where)
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
                  teacher_workdir: str | None = None):
  """Trains (resuming from workdir's newest checkpoint) and evaluates a distilled student."""
  os.makedirs(workdir, exist_ok=True)
  store, teacher, proto, where = _load_teacher_store(config, logits_dir, teacher_workdir)
  exp = trainer.Experiment(config, workdir)
  distill_dump.check_same_tokenizer(exp, proto, where)
  kd, t = config.distill, config.train
  if store is not None:
    missing = sorted({t_.name for t_ in exp.tasks} - set(store.offsets))
    if missing:
      raise ValueError(f"tasks {', '.join(missing)} of config.mixture.tasks have no teacher "
                       f"logits in {logits_dir!r}; it holds: {', '.join(store.offsets)}")
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=t.checkpoint_every,
                                 keep=t.keep_checkpoints, async_save=t.async_checkpointing)
  log = trainer.run_logger(workdir, ckpt)
  rng = jax.random.key(config.seed)
  d = config.data
  state, shardings = trainer.create_train_state(exp.model, exp.tx, exp.mesh, rng,
                                              input_length=d.input_length,
                                              target_length=d.target_length)
  mode = ("sequence-level KD (cross-entropy on teacher outputs)" if kd.sequence_kd else
          f"{'online ' if kd.online else ''}KD alpha={kd.alpha} T={kd.temperature} top-k "
          f"{store.index['top_k'] if store else kd.top_k}")
  log.text(f"student {exp.model_cfg.d_model}d x {exp.model_cfg.num_encoder_layers}+"
           f"{exp.model_cfg.num_decoder_layers} layers, {count_params(state.params):,} params; "
           f"{mode}")
  if kd.sequence_kd:
    train_iter = train_dataset(exp, store, sequence_kd=True)
    step_fn = trainer.jit_train_step(exp.model, config, exp.mesh, shardings)
  elif store is not None:
    train_iter = train_dataset(exp, store, sequence_kd=False)
    step_fn = jit_kd_step(exp, shardings)
  else:
    train_iter = exp.train_iterator()
    step_fn = jit_kd_step(exp, shardings, teacher)
  return trainer.run_loop(exp, state, shardings, step_fn, train_iter, log=log, ckpt=ckpt,
                          rng=rng, tokenizer_proto=proto)


def add_arguments(parser, subcommand: str):
  """The flags of `refinedweb distill dump|train` (besides --config and --config.*)."""
  if subcommand == "dump":
    parser.add_argument("--teacher", required=True, help="the teacher's run directory")
    parser.add_argument("--out", required=True, help="directory for the logits (resumable)")
    parser.add_argument("--sequence-kd", action="store_true",
                        help="also store the teacher's decoded outputs (sequence-level KD)")
  elif subcommand == "train":
    parser.add_argument("--logits", default=None, help="directory from `distill dump`")
    parser.add_argument("--workdir", required=True, help="the student's run directory")
    parser.add_argument("--teacher", default=None,
                        help="teacher run directory, for config.distill.online=True")
  else:
    raise ValueError(f"unknown distill subcommand {subcommand!r}; allowed: "
                     f"{', '.join(SUBCOMMANDS)}")
  return parser


def run(subcommand: str, args, config):
  """Dispatches `refinedweb distill dump|train` with parsed flags and config."""
  if subcommand == "dump":
    distill_dump.dump(config, args.teacher, args.out, sequence_kd=args.sequence_kd)
  elif subcommand == "train":
    train_student(config, args.workdir, logits_dir=args.logits, teacher_workdir=args.teacher)
  else:
    raise ValueError(f"unknown distill subcommand {subcommand!r}; allowed: "
                     f"{', '.join(SUBCOMMANDS)}")
