"""A run's parts from its settled config: tasks, tokenizer, model, mesh; and trained runs.

build(config) prepares what training needs (the built-in corpus, the tokenizer, or a
run's tokenizer to continue or fine-tune from) and checks that the batch splits over the
mesh; restore(path) gives a trained run's parts from its checkpoint (its own config and
tokenizer) with its parameters only, on the mesh its config asks for. Training,
evaluation, distillation and the API all start from a Run.
"""

import dataclasses
import hashlib
import os
import shlex
import tempfile
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils

from refinedweb_jax import backend, configs, sharding
from refinedweb_jax.data import pipeline, registry, stream, tasks as tasks_lib
from refinedweb_jax.data import tokenizer as tok
from refinedweb_jax.evaluate.evaluator import Evaluator
from refinedweb_jax.model import fused, scan
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder, flat_params
from refinedweb_jax.train import checkpoint, resume, step as step_lib


@dataclasses.dataclass
class Run:
  """What a run is made of; `tasks` are the mixture's, in config order."""
  config: ml_collections.ConfigDict
  tasks: list
  tokenizer: Any
  model_cfg: ModelConfig
  model: EncoderDecoder
  mesh: jax.sharding.Mesh

  def mixture(self):
    """(train sources, rates) of the mixture's tasks, in config order."""
    mixture = self.config.mixture
    sources = [task.source("train") for task in self.tasks]
    rates = tasks_lib.mixture_rates(
        {t.name: len(s) for t, s in zip(self.tasks, sources)}, method=mixture.rate,
        cap=mixture.cap, temperature=mixture.temperature,
        weights=tasks_lib.parse_weights(mixture.weights))
    return sources, [rates[t.name] for t in self.tasks]

  def alignment(self) -> tuple:
    """Where packed examples may start in the encoder and decoder rows."""
    return (self.model_cfg.packing_alignment("encoder"),
            self.model_cfg.packing_alignment("decoder"))

  def train_iterator(self, sources=None, *, tokenize=None, target_features=(),
                     lengths_key: str = "") -> stream.GlobalBatches:
    """This process's rows of the global batch stream over the mixture (data/stream.py):
    the same global batches for any number of processes and devices.

    tokenize: the example transform (default pipeline.Tokenize); target_features: arrays
    it adds beside the targets; lengths_key: what else fixes the transform's token
    lengths (a teacher store's), for the length tables' cache in data.data_dir.
    """
    d = self.config.data
    default_sources, rates = self.mixture()
    sources = sources or default_sources
    transform = tokenize or pipeline.Tokenize(self.tokenizer, d.input_length, d.target_length)
    proto = hashlib.sha256(self.tokenizer.serialized_model_proto()).hexdigest()[:16]
    lengths = []
    for task, source in zip(self.tasks, sources):
      key = f"{task.name}:{len(source)}:{proto}:{d.input_length}:{d.target_length}:{lengths_key}"
      name = hashlib.sha256(key.encode()).hexdigest()[:20]
      path = None if "://" in str(d.data_dir) else os.path.join(d.data_dir, "lengths",
                                                                 f"{name}.npy")
      lengths.append(stream.length_table(source, transform, path))
    workers, prefetch = host_threads(d)
    return stream.batches(
        sources, rates, transform, batch_size=d.batch_size, input_length=d.input_length,
        target_length=d.target_length, pack=d.pack, seed=d.shuffle_seed,
        alignment=self.alignment(), rows=sharding.local_rows(self.mesh, d.batch_size),
        lengths=lengths, target_features=target_features, workers=workers, prefetch=prefetch)

  def evaluator(self, log, *, split: str = "validation", eval_examples=None,
                decode_examples=None, file_task=None, task_names=None) -> Evaluator:
    """The Evaluator of `task_names` (default: config.mixture.eval_tasks, else the trained
    tasks) on a split, or of one `file_task` (a file's examples, `refinedweb eval --input`);
    examples per task default to the config's."""
    t, d = self.config.train, self.config.data
    if file_task is not None:
      chosen = [file_task]
    else:
      known = registry.for_config(self.config)
      names = task_names or configs.eval_task_names(self.config)
      trained = {task.name: task for task in self.tasks}
      chosen = [trained.get(name) or known.get(name, "--tasks") for name in names]
    return Evaluator(
        chosen, self.tokenizer, self.model, self.mesh, log, split=split,
        file_task=file_task is not None,
        input_length=d.input_length, target_length=d.target_length,
        batch_size=t.eval_batch_size, max_decode_length=t.max_decode_length,
        eval_examples=t.eval_examples if eval_examples is None else eval_examples,
        decode_examples=(t.decode_examples_per_task if decode_examples is None
                         else decode_examples))


# Batches built ahead by worker threads: a few on CPU, where the step is slow and cores
# are few; more on accelerators, whose steps take milliseconds (data.workers/prefetch).
HOST_THREADS = {"cpu": (2, 2)}
ACCELERATOR_THREADS = (8, 8)


def host_threads(data) -> tuple[int, int]:
  """(worker threads, batches ahead): data.workers and data.prefetch, 0 = by platform."""
  default = HOST_THREADS.get(backend.platform(), ACCELERATOR_THREADS)
  return data.get("workers") or default[0], data.get("prefetch") or default[1]


def run_tasks(config) -> list:
  """The Tasks of config.mixture.tasks, in order."""
  known = registry.for_config(config)
  return [known.get(name) for name in configs.task_names(config)]


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
      return tok.prepare_for_sources(d.data_dir, key, sources, vocab_size=vocab_size, fit=fit,
                                      names=[t.name for t in run_tasks_])
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


def check_data_dir(data_dir: str):
  """Raises (one line) unless data.data_dir is a directory files can be written in."""
  if "://" in str(data_dir):
    return  # a bucket: its writes fail, if they do, with the store's own error
  try:
    os.makedirs(data_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".write-check-"):
      pass
  except OSError as e:
    raise ValueError(f"config.data.data_dir {data_dir!r} is not a directory this process can "
                     f"write in ({e.strerror or e}); give a writable folder, e.g. "
                     "--config.data.data_dir=~/.cache/refinedweb_jax") from None


def make_mesh(config) -> jax.sharding.Mesh:
  mesh = config.mesh
  return sharding.make_mesh(mesh.data, mesh.fsdp, mesh.tensor)


def inference_mesh(config) -> jax.sharding.Mesh:
  """The config's model-parallel axes (fsdp, tensor); data takes the remaining devices."""
  return sharding.make_mesh(-1, config.mesh.fsdp, config.mesh.tensor)


def build(config, tokenizer_from: str | None = None) -> Run:
  """Everything training needs from a settled config; one host prepares data and tokenizer.

  tokenizer_from: a run whose checkpoint holds the tokenizer (the run being continued,
  or train.init_from's); else the config's tokenizer is prepared. A config not settled
  yet (a plain ConfigDict) is settled first, as a new run's (resume.settle).
  """
  if not config.is_locked:  # a config not settled yet: as a new run's
    config = resume.settle(None, base=config).config
  run_tasks_ = run_tasks(config)
  if jax.process_index() == 0:
    check_data_dir(config.data.data_dir)
    if tokenizer_from:
      for task in run_tasks_:
        task.source("train")  # prepares the task's data once, before other hosts read it
    else:
      _prepare_tokenizer(config, run_tasks_)
  multihost_utils.sync_global_devices("data prepared")
  if tokenizer_from:
    tokenizer = tok.Tokenizer(model_proto=resume.saved(tokenizer_from)[1])
  else:
    tokenizer = tok.Tokenizer(_prepare_tokenizer(config, run_tasks_))
  model_cfg = configs.model_config(config, vocab_size=tokenizer.vocab_size)
  mesh = make_mesh(config)
  sharding.check_model_fits(model_cfg, dict(mesh.shape))
  sharding.check_batch(mesh, config.data.batch_size, config.train.microbatches)
  return Run(config, run_tasks_, tokenizer, model_cfg, EncoderDecoder(model_cfg), mesh)


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


@dataclasses.dataclass
class Trained:
  """A trained run restored from a checkpoint: its Run, parameters and step."""
  run: Run
  params: Any
  step: int
  workdir: str


def restore(path: str, config=None) -> Trained:
  """A trained run from its newest (or given) checkpoint.

  The config and tokenizer are the ones saved with the checkpoint, or `config`: the run's
  config settled with changes a later command may make (resume.settle: eval and decoding
  settings, the mesh). Only the parameters are read (no optimizer state), straight into
  their shardings on the mesh that config asks for (inference_mesh). A newest step that
  does not read back is skipped, with a warning, for the one before (a given step is not).
  """
  workdir, ckpt_dir, step = resume.locate(path)
  ckpt = checkpoint.Checkpointer(ckpt_dir, read_only=True)  # a reader changes nothing

  def read(at: int):
    saved, proto = ckpt.restore_metadata(at)
    run_config = configs.from_saved(saved) if config is None else config
    tokenizer = tok.Tokenizer(model_proto=proto)
    model_cfg = configs.model_config(run_config, vocab_size=tokenizer.vocab_size)
    model = EncoderDecoder(model_cfg)
    mesh = inference_mesh(run_config)
    abstract = step_lib.abstract_params(model, mesh, input_length=run_config.data.input_length,
                                        target_length=run_config.data.target_length)
    run = Run(run_config, run_tasks(run_config), tokenizer, model_cfg, model, mesh)
    # Runs saved before the fused projections read in their layout, then fuse (model/fused.py).
    return run, fused.restore_either(lambda a: ckpt.restore_params(at, a), abstract)

  try:
    if step is None:
      step, restored = ckpt.restore_newest(read, move_aside=False, report=checkpoint.report,
                                           required=True)
    else:
      restored = read(step)
  finally:
    ckpt.close()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt_dir} reads back; train first with: "
                            f"refinedweb train --workdir {shlex.quote(str(workdir))}")
  return Trained(restored[0], restored[1], step, workdir)
