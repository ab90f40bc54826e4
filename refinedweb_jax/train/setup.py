"""A run's parts assembled from its config: tasks, tokenizer, model, mesh; and trained runs.

build(config) prepares what training needs (the built-in corpus, the tokenizer) and
checks that the batch splits over the mesh; restore(path) gives a trained run's
parts from its checkpoint (its own config and tokenizer) with its parameters only,
on the mesh its config asks for. Training, evaluation, distillation and the API
all start from a Setup.
"""

import dataclasses
import hashlib
import os
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils

from refinedweb_jax import configs, sharding
from refinedweb_jax.data import pipeline, tasks as tasks_lib
from refinedweb_jax.data import tokenizer as tok
from refinedweb_jax.evaluate.evaluator import Evaluator
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model import scan
from refinedweb_jax.model.transformer import EncoderDecoder, flat_params
from refinedweb_jax.train import checkpoint, resume, step as step_lib


@dataclasses.dataclass
class Setup:
  """What a run is made of; `tasks` are the mixture's, in config order."""
  config: ml_collections.ConfigDict
  tasks: list
  tokenizer: Any
  model_cfg: ModelConfig
  model: EncoderDecoder
  mesh: jax.sharding.Mesh

  def mixture(self):
    """(train sources, rates) of the mixture's tasks, in config order."""
    m = self.config.mixture
    sources = [task.source("train") for task in self.tasks]
    rates = tasks_lib.mixture_rates(
        {t.name: len(s) for t, s in zip(self.tasks, sources)}, method=m.rate, cap=m.cap,
        temperature=m.temperature, weights=tasks_lib.parse_weights(m.weights))
    return sources, [rates[t.name] for t in self.tasks]

  def alignment(self) -> tuple:
    """Where packed examples may start in the encoder and decoder rows."""
    return (self.model_cfg.packing_alignment("encoder"),
            self.model_cfg.packing_alignment("decoder"))

  def train_iterator(self, sources=None, **pipeline_args):
    """This host's infinite batched iterator over the mixture (pipeline.train_dataset)."""
    d = self.config.data
    default_sources, rates = self.mixture()
    ds = pipeline.train_dataset(
        sources or default_sources, rates, self.tokenizer,
        batch_size=d.batch_size // jax.process_count(), input_length=d.input_length,
        target_length=d.target_length, pack=d.pack, seed=d.shuffle_seed,
        shard_index=jax.process_index(), shard_count=jax.process_count(),
        alignment=self.alignment(), **pipeline_args)
    return iter(ds)

  def evaluator(self, log, *, split: str = "validation", eval_examples=None,
                decode_examples=None, file_task=None) -> Evaluator:
    """The Evaluator of config.mixture.eval_tasks (default: the trained tasks) on a split,
    or of one `file_task` (a file's examples, `refinedweb eval --input`); examples per
    task default to the config's."""
    t, d = self.config.train, self.config.data
    if file_task is not None:
      chosen = [file_task]
    else:
      names = configs.eval_task_names(self.config)
      trained = {task.name: task for task in self.tasks}
      available = trained if set(names) <= set(trained) else all_tasks(self.config)
      chosen = [available[name] for name in names]
    return Evaluator(
        chosen, self.tokenizer, self.model, self.mesh, log, split=split,
        file_task=file_task is not None,
        input_length=d.input_length, target_length=d.target_length,
        batch_size=t.eval_batch_size, max_decode_length=t.max_decode_length,
        eval_examples=t.eval_examples if eval_examples is None else eval_examples,
        decode_examples=(t.decode_examples_per_task if decode_examples is None
                         else decode_examples))


def run_tasks(config) -> list:
  """The Tasks of config.mixture.tasks, in order."""
  available = all_tasks(config)
  return [available[name] for name in configs.task_names(config)]


def builtin_source(config, split: str):
  """The config's built-in corpus split, every task mixed (datasets.builtin)."""
  from refinedweb_jax.data.datasets import builtin  # TFDS is slow to import: only when read
  d = config.data
  return builtin.data_source(d.data_dir, split, num_train=d.num_train,
                             num_validation=d.num_validation, num_test=d.num_test,
                             seed=d.corpus_seed, long_fraction=d.long_fraction)


def all_tasks(config) -> dict:
  """Every task a config can name, by name: built-in, own (config.own_tasks) and public."""
  d = config.data
  return {**tasks_lib.builtin_tasks(lambda split: builtin_source(config, split)),
          **tasks_lib.own_tasks(config.get("own_tasks", []), d.data_dir),
          **tasks_lib.public_tasks(configs.public_task_names(config), d.public_data_dir)}


def _prepare_tokenizer(config, run_tasks_: list) -> str:
  """The run's tokenizer file, trained if missing: on the built-in corpus or the mixture."""
  d = config.data
  vocab_size, fit = configs.tokenizer_vocab_size(config)
  try:
    if d.tokenizer == "builtin":
      return tok.prepare_builtin(
          d.data_dir, num_train=d.num_train, num_validation=d.num_validation,
          num_test=d.num_test, seed=d.corpus_seed, long_fraction=d.long_fraction,
          vocab_size=vocab_size, fit=fit)[1]
    if d.tokenizer == "mixture":
      sources = [t.source("train") for t in run_tasks_]
      text = ",".join(f"{t.name}:{len(s)}" for t, s in zip(run_tasks_, sources))
      key = hashlib.sha256(text.encode()).hexdigest()[:12]  # the mixture's tasks and sizes
      return tok.prepare_for_sources(d.data_dir, key, sources, vocab_size=vocab_size, fit=fit)
  except tok.VocabTooLarge as e:
    raise ValueError(f"config.data.vocab_size={e.requested} is more than the {d.tokenizer} "
                     f"tokenizer's training text holds; the largest that fits is {e.largest}: "
                     f"--config.data.vocab_size={e.largest} (or leave it unset)") from None
  if d.tokenizer.endswith(".model"):  # a SentencePiece file, e.g. a T5's spiece.model
    if not os.path.isfile(d.tokenizer):
      raise FileNotFoundError(f"config.data.tokenizer {d.tokenizer!r}: no such file")
    return d.tokenizer
  raise ValueError(f"unknown config.data.tokenizer {d.tokenizer!r}; allowed: builtin, mixture "
                   "or a SentencePiece model file (*.model)")


def make_mesh(config) -> jax.sharding.Mesh:
  m = config.mesh
  return sharding.make_mesh(m.data, m.fsdp, m.tensor)


def inference_mesh(config) -> jax.sharding.Mesh:
  """The config's model-parallel axes (fsdp, tensor); data takes the remaining devices."""
  return sharding.make_mesh(-1, config.mesh.fsdp, config.mesh.tensor)


def build(config, model_from: str | None = None) -> Setup:
  """Everything training needs from a config; one host prepares data and tokenizer.

  With train.init_from (or `model_from`: a resumed run's own workdir) the model section
  and the tokenizer are that run's; the config's own model fields (attention kinds and
  sizes, dropout, remat, dtype, ...) override its, so that e.g. a sparse encoder
  fine-tunes a dense checkpoint. The preset is always that run's.
  """
  configs.resolve(config)  # e.g. data.tokenizer "auto"; the CLI has done so already
  run_tasks_ = run_tasks(config)
  source = model_from or config.train.get("init_from")
  if jax.process_index() == 0:
    if source:
      for task in run_tasks_:
        task.source("train")  # prepares the task's data once, before other hosts read it
    else:
      _prepare_tokenizer(config, run_tasks_)
  multihost_utils.sync_global_devices("data prepared")
  if source:
    saved, proto = _saved_metadata(source)
    changed = _take_model_section(config, saved.get("model", {}))
    if changed and jax.process_index() == 0:
      print(f"model from {source}; this config changes " + ", ".join(
          f"{k}={v!r}" for k, v in changed.items()), flush=True)
    tokenizer = tok.Tokenizer(model_proto=proto)
  else:
    tokenizer = tok.Tokenizer(_prepare_tokenizer(config, run_tasks_))
  model_cfg = configs.model_config(config, vocab_size=tokenizer.vocab_size)
  mesh = make_mesh(config)
  sharding.check_model_fits(model_cfg, dict(mesh.shape))
  sharding.check_batch(mesh, config.data.batch_size, config.train.microbatches)
  return Setup(config, run_tasks_, tokenizer, model_cfg, EncoderDecoder(model_cfg), mesh)


def saved_config(workdir: str) -> dict | None:
  """The config saved with a run's newest checkpoint, or None when it has none."""
  if not checkpoint.has_steps(os.path.join(workdir, "checkpoints")):
    return None
  return _saved_metadata(workdir)[0]


def check_resume(config, workdir: str) -> list:
  """Before a run resumes: the (key, old, new) changes its config makes to the saved one.

  Raises, naming each key and both values, when a key that fixes the model, tokenizer,
  data or seed differs (resume.resume_changes).
  """
  saved = saved_config(workdir)
  return [] if saved is None else resume.resume_changes(saved, config, workdir)


def run_config(workdir: str):
  """A trained run's own config (as saved with its newest checkpoint) as a ConfigDict."""
  workdir = locate(workdir)[0]
  saved = saved_config(workdir)
  if saved is None:
    raise FileNotFoundError(f"no finished checkpoint in {workdir}; train first with: "
                            f"refinedweb train --workdir {workdir}")
  return configs.from_saved(saved)


def _saved_metadata(path: str):
  """(config dict, tokenizer proto) of a run's newest checkpoint."""
  _, ckpt_dir, step = locate(path)
  ckpt = checkpoint.Checkpointer(ckpt_dir, async_save=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"config.train.init_from {path!r} has no finished checkpoint")
    return ckpt.restore_metadata(step)
  finally:
    ckpt.close()


def _take_model_section(config, saved: dict) -> dict:
  """config.model := the saved model section, then every field the config itself sets;
  returns those fields that differ from the saved ones."""
  changed = {}
  with config.unlocked():
    mine = config.model.to_dict()
    config.model.preset = saved.get("preset", mine["preset"])
    for key, value in saved.items():
      if key == "attention":
        for name, size in value.items():
          if mine["attention"].get(name) is None:
            config.model.attention[name] = size
          elif mine["attention"][name] != size:
            changed[f"attention.{name}"] = mine["attention"][name]
      elif key != "preset" and mine.get(key) is None:
        config.model[key] = value
      elif key != "preset" and mine[key] != value:
        changed[key] = mine[key]
  return changed


def init_params(config, abstract_params, model_cfg):
  """train.init_from's parameters, placed as `abstract_params` (with shardings) says.

  The source's layers are converted between the scanned and unrolled layouts when the
  two models lay them out differently (model/scan.py). Raises naming the parameter when
  the two models' parameters differ in names or shapes.
  """
  source = restore(config.train.init_from)
  theirs = flat_params(source.params)
  if scan.is_scanned(theirs):
    theirs = scan.to_unrolled(theirs, source.run.model_cfg)
  if model_cfg.scan_layers:
    theirs = scan.to_scanned(theirs, model_cfg)
  ours = flat_params(abstract_params)
  name = "/".join
  if set(theirs) != set(ours):
    raise ValueError(f"config.train.init_from {config.train.init_from!r} has other parameters "
                     f"than this model: only there {sorted(map(name, set(theirs) - set(ours)))[:5]}"
                     f", only here {sorted(map(name, set(ours) - set(theirs)))[:5]}")
  for path, leaf in ours.items():
    if tuple(theirs[path].shape) != tuple(leaf.shape):
      raise ValueError(f"parameter {name(path)} has shape {tuple(theirs[path].shape)} in "
                       f"config.train.init_from {config.train.init_from!r} but "
                       f"{tuple(leaf.shape)} in this model")
  placed = [jax.device_put(theirs[path].astype(leaf.dtype), leaf.sharding)
            for path, leaf in ours.items()]
  return jax.tree.unflatten(jax.tree.structure(abstract_params), placed)


def locate(path: str):
  """A workdir, its checkpoints/ folder or one checkpoints/STEP -> (workdir, ckpt_dir, step)."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return path, os.path.join(path, "checkpoints"), None
  name = os.path.basename(path)
  if name.isdigit() and os.path.isdir(path):
    return os.path.dirname(os.path.dirname(path)), os.path.dirname(path), int(name)
  if name == "checkpoints" and os.path.isdir(path):
    return os.path.dirname(path), path, None
  raise FileNotFoundError(f"no checkpoint in {path!r} (no {os.path.join(path, 'checkpoints')}); "
                          f"train first with: refinedweb train --workdir {path}")


@dataclasses.dataclass
class Trained:
  """A trained run restored from a checkpoint: its Setup, parameters and step."""
  run: Setup
  params: Any
  step: int
  workdir: str


def restore(path: str, overrides=None) -> Trained:
  """A trained run from its newest (or given) checkpoint.

  The config and tokenizer are the ones saved with the checkpoint (or `overrides`, the
  run's config with keys a resumed run may change set otherwise: eval and decoding
  settings, the mesh); only the
  parameters are read (no optimizer state), straight into their shardings on the
  mesh that config asks for (inference_mesh). A newest step that does not read back
  is skipped, with a warning, for the one before (a given step is not).
  """
  workdir, ckpt_dir, step = locate(path)
  ckpt = checkpoint.Checkpointer(ckpt_dir, async_save=False)

  def read(at: int):
    saved, proto = ckpt.restore_metadata(at)
    config = configs.from_saved(saved)
    if overrides is not None:
      resume.resume_changes(saved, overrides, workdir)  # raises for a key it cannot change
      config = overrides
    tokenizer = tok.Tokenizer(model_proto=proto)
    model_cfg = configs.model_config(config, vocab_size=tokenizer.vocab_size)
    model = EncoderDecoder(model_cfg)
    mesh = inference_mesh(config)
    abstract = step_lib.abstract_params(model, mesh, input_length=config.data.input_length,
                                        target_length=config.data.target_length)
    run = Setup(config, run_tasks(config), tokenizer, model_cfg, model, mesh)
    return run, ckpt.restore_params(at, abstract)

  if step is None:
    step, restored = ckpt.restore_newest(read, move_aside=False)
  else:
    restored = read(step)
  ckpt.close()
  if step is None:
    raise FileNotFoundError(f"no finished checkpoint in {ckpt_dir}; "
                            f"train first with: refinedweb train --workdir {workdir}")
  return Trained(restored[0], restored[1], step, workdir)
