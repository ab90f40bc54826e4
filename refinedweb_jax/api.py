"""A trained model as an application: translate, summarize, answer, write code, chat, generate.

    model = RefinedWeb.load("runs/demo")
    model.translate("42 cats", source="en", target="de")
    model.generate(["chat: hello", "summarize: ..."], beam_size=4)

Each method takes one string (returns one string) or a list (returns a list).
"""

import math
import os
import shlex
import sys

import jax
import numpy as np

from refinedweb_jax import backend, sharding
from refinedweb_jax.data import registry, tasks
from refinedweb_jax.model import decode, quantize
from refinedweb_jax.train import lock, logger, resume, setup, trainer

LONG_INPUT = ("truncate", "error")
WEIGHTS = ("float32", "int8")


def task_prefix(task: str, config) -> str:
  """The inputs prefix of a task the config knows (built-in, own or public)."""
  return registry.for_config(config).get(task, "task").prefix


def _one_or_many(fn):
  """Lets a method take one string (returning one) or a list (returning a list)."""
  def wrapper(self, texts, *args, **kwargs):
    if isinstance(texts, str):
      return fn(self, [texts], *args, **kwargs)[0]
    return fn(self, list(texts), *args, **kwargs)
  wrapper.__doc__, wrapper.__name__ = fn.__doc__, fn.__name__
  return wrapper


class RefinedWeb:
  """A trained model with its tokenizer, restored from a workdir's or checkpoint's weights."""

  def __init__(self, trained: setup.Trained, *, on_long_input: str = "truncate",
               weights: str = "float32"):
    if on_long_input not in LONG_INPUT:
      raise ValueError(f"on_long_input={on_long_input!r}; allowed: {', '.join(LONG_INPUT)}")
    if weights not in WEIGHTS:
      raise ValueError(f"weights={weights!r}; allowed: {', '.join(WEIGHTS)}")
    self.run, self.params, self.step, self.workdir = (trained.run, trained.params, trained.step,
                                                      trained.workdir)
    if weights == "int8":  # quantize.py: int8 matmuls for decoding
      self.decode_params = jax.jit(quantize.quantize)(self.params)
    else:  # 16-bit weights where the compute dtype is (GPU/TPU): half the bytes per token
      self.decode_params = decode.inference_params(self.params, self.run.model_cfg)
    self.config, self.tokenizer = self.run.config, self.run.tokenizer
    self.model, self.mesh = self.run.model, self.run.mesh
    self.on_long_input = on_long_input
    self._decoders, self._truncated = {}, []

  @classmethod
  def load(cls, path: str, *, on_long_input: str = "truncate", overrides: dict | None = None,
           weights: str = "float32", settled: resume.Settled | None = None) -> "RefinedWeb":
    """Restores a workdir's newest checkpoint, or a given checkpoints/ or checkpoints/STEP.

    Only the parameters are read, onto the model-parallel mesh the run's config asks for.
    `overrides`: {"train.max_decode_length": 32, ...}, changes to the run's own config
    that a later command may make (eval, decoding and mesh settings; resume.settle).
    `weights="int8"` quantizes them for decoding (model/quantize.py).
    """
    if settled is None:
      settled = resume.settle(resume.locate(path)[0], overrides=list((overrides or {}).items()))
    if settled.step is None:  # the flags were checked against a default config: no run
      resume.locate(path)
      raise FileNotFoundError(f"no finished checkpoint in {path}; train first with: "
                              f"refinedweb train --workdir {shlex.quote(str(path))}")
    trained = setup.restore(path, settled.config)
    ckpt_dir = resume.locate(path)[1]
    if (trained.step != settled.step and settled.again is not None
        and os.path.isdir(os.path.join(ckpt_dir, str(settled.step)))):  # not just deleted
      # The settled step's parameters did not read back: the config of the step restored.
      settled = settled.again(trained.step)
      trained = setup.restore(os.path.join(ckpt_dir, str(trained.step)), settled.config)
    return cls(trained, on_long_input=on_long_input, weights=weights)

  # -- applications ---------------------------------------------------------------------------

  def translate(self, text, source: str = "en", target: str = "de", **decoding):
    """Translates between en, de, fr and zh."""
    for name, lang in (("source", source), ("target", target)):
      if lang not in tasks.LANGUAGE_NAMES:
        raise ValueError(f"unknown {name} language {lang!r}; allowed: "
                         f"{', '.join(tasks.LANGUAGE_NAMES)}")
    if source == target:
      raise ValueError(f"source and target are both {source!r}; pick two different languages")
    return self._with_prefix(text, tasks.translation_prefix(source, target), decoding)

  def summarize(self, text, **decoding):
    """A short summary of a document."""
    return self._with_prefix(text, tasks.prefix("summarize"), decoding)

  summarization = summarize

  def answer(self, question, context, **decoding):
    """Extractive answer to a question about a context (strings, or equal-length lists)."""
    if isinstance(question, str) != isinstance(context, str) or (
        not isinstance(question, str) and len(question) != len(context)):
      raise ValueError("answer takes a question and a context, or two lists of equal length")
    return self.generate(tasks.qa_input(question, context) if isinstance(question, str) else
                         [tasks.qa_input(q, c) for q, c in zip(question, context)], **decoding)

  def generate_code(self, description, **decoding):
    """A Python function for an English or Chinese description."""
    return self._with_prefix(description, tasks.prefix("code"), decoding)

  def chat(self, messages, **decoding):
    """The assistant's reply to a conversation (tasks.chat_prompt); a list of them -> replies."""
    if isinstance(messages, list) and messages and isinstance(messages[0], list):
      return self.generate([tasks.chat_prompt(m) for m in messages], **decoding)
    return self.generate(tasks.chat_prompt(messages), **decoding)

  def _with_prefix(self, text, prefix, decoding):
    texts = [text] if isinstance(text, str) else list(text)
    out = self.generate([prefix + t for t in texts], **decoding)
    return out[0] if isinstance(text, str) else out

  # -- generation -----------------------------------------------------------------------------

  @_one_or_many
  def generate(self, prompts, **decoding):
    """Decodes each full prompt (task prefix included). Decoding settings: decode.Decoding."""
    return list(self.stream(prompts, **decoding))

  def stream(self, prompts, *, batch_size: int = 16, **decoding):
    """Yields each prompt's output in order, as soon as its batch finishes."""
    settings = self.decoding(**decoding)
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows_step = sharding.batch_rows(self.mesh)
    self._truncated = []
    encoded = [self._encode(i, p) for i, p in enumerate(prompts)]
    self._report_truncated(prompts)
    largest = _round_up(2 ** math.ceil(math.log2(max(1, min(batch_size, len(encoded))))),
                        rows_step)
    decode.check_memory(self.model.cfg, rows=largest * settings.beam_size,
                        source_length=self.config.data.input_length,
                        max_length=settings.max_new_tokens, flag="--max-new-tokens")
    for number, start in enumerate(range(0, len(encoded), batch_size)):
      chunk = encoded[start: start + batch_size]
      # Batches come in power-of-two sizes (one compilation each), whole rows per device.
      rows = _round_up(2 ** math.ceil(math.log2(len(chunk))), rows_step)
      inputs = np.zeros((rows, self._input_length(max(map(len, chunk)))), np.int32)
      for i, ids in enumerate(chunk):
        inputs[i, : len(ids)] = ids
      inputs = jax.device_put(inputs, sharding.batch_sharding(self.mesh))
      rng = jax.random.fold_in(jax.random.key(settings.seed), number)
      tokens = np.asarray(jax.device_get(self._decoder(settings)(self.decode_params, inputs,
                                                                 rng)))
      for row in tokens[: len(chunk)]:
        yield self.tokenizer.decode(row.tolist())

  def decoding(self, **settings) -> decode.Decoding:
    """decode.Decoding from keyword settings; max_new_tokens defaults to the config's."""
    settings.setdefault("max_new_tokens", self.config.train.max_decode_length)
    try:
      return decode.Decoding(**settings)
    except TypeError:
      allowed = [f.name for f in decode.dataclasses.fields(decode.Decoding)]
      raise ValueError(f"unknown decoding setting in {sorted(settings)}; allowed: "
                       f"{', '.join(allowed)}") from None

  def _decoder(self, settings):
    if settings not in self._decoders:
      self._decoders[settings] = decode.make_decode_fn(self.model, settings,
                                                       eos_id=self.tokenizer.eos_id)
    return self._decoders[settings]

  def _encode(self, index: int, text: str) -> list[int]:
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"input {index} is empty; give a non-empty string")
    ids = self.tokenizer.encode(text)
    limit = self.config.data.input_length - 1  # room for EOS
    if len(ids) > limit:
      if self.on_long_input == "error":
        raise ValueError(f"input {index} has {len(ids)} tokens, more than the model's input "
                         f"length {limit} (+EOS); shorten it or load with "
                         "on_long_input='truncate'")
      self._truncated.append((index, len(ids)))
      ids = ids[:limit]
    return ids + [self.tokenizer.eos_id]

  def _report_truncated(self, prompts):
    """One line on stderr for the inputs of a call that were cut to the input length."""
    cut, self._truncated = self._truncated, []
    if cut and jax.process_index() == 0:
      index, longest = max(cut, key=lambda c: c[1])
      print(f"refinedweb: {len(cut)} of {len(prompts)} input(s) are longer than the model's "
            f"input length {self.config.data.input_length - 1} tokens (+EOS) and were "
            f"truncated (the longest: input {index}, {longest} tokens)", file=sys.stderr,
            flush=True)

  def _input_length(self, longest: int) -> int:
    """A power-of-two bucket: padding changes no pattern, dense or sparse."""
    return min(self.config.data.input_length, max(16, 2 ** math.ceil(math.log2(longest))))

  def evaluate(self, split: str = "validation", *, eval_examples=None, decode_examples=None,
               tasks=None) -> dict:
    """Per-task metrics of this checkpoint on a split (-1 examples = the whole split).

    `tasks`: names among those the run's config knows (default: its eval tasks). The
    metrics replace any of the same step and split in metrics.jsonl (test ones under
    test/), and every decoded example lands in <workdir>/predictions/<split>_step<N>.jsonl.
    """
    return self._evaluate(lambda log: self.run.evaluator(
        log, split=split, eval_examples=eval_examples, decode_examples=decode_examples,
        task_names=tasks), split)

  def evaluate_file(self, task: tasks.Task, *, split: str = "test") -> dict:
    """Metrics of this checkpoint on every example of `task` (e.g. a file's, own_data.read),
    with predictions in <workdir>/predictions/<task>_step<N>.jsonl."""
    return self._evaluate(lambda log: self.run.evaluator(
        log, split=split, eval_examples=-1, decode_examples=-1, file_task=task), split,
        name=task.name)

  def _evaluate(self, make_evaluator, split: str, name: str | None = None) -> dict:
    main = jax.process_index() == 0
    log = logger.MetricLogger(self.workdir, enabled=main, tensorboard=False)
    # While a trainer holds the run (its lock), metrics.jsonl is only appended to: rewriting
    # it to replace a row would race the trainer's own appends.
    replace = not os.path.exists(os.path.join(self.workdir, lock.NAME))
    try:
      evaluator = make_evaluator(log)
      path = os.path.join(self.workdir, "predictions", f"{name or split}_step{self.step}.jsonl")
      metrics = evaluator.run(self.params, step=self.step, replace=replace, predictions=path)
    finally:
      log.close()
    if main:
      logger.rewrite_tensorboard(self.workdir, evaluator.namespace)
      if evaluator.samples:  # nothing decoded (decode_examples=0): no predictions file
        print(f"predictions: {path}", flush=True)
    return metrics


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


# -- the notebook workflow: train / evaluate / predict -----------------------------------------


def train(config=None, workdir: str = "runs/notebook", overrides: dict | None = None) -> dict:
  """Trains like `refinedweb train` (continuing the run in workdir); returns the history.

  config: a ConfigDict, a path "config.py[:arg]", or None for the default; a workdir that
  holds a run continues with its own saved config instead. overrides: {"train.num_steps":
  50, ...}, changes either way. Returns {"step", "history": {metric: [[step, value], ...]},
  "eval": the last evaluation's metrics}.
  """
  backend.configure()
  items = list((overrides or {}).items())
  if isinstance(config, str) or config is None:
    settled = resume.settle(workdir, spec=config, overrides=items)
  else:
    settled = resume.settle(workdir, base=config, overrides=items)
  trainer.train(settled, workdir)
  return read_history(workdir)


def evaluate(workdir: str, split: str = "validation", *, examples: int | None = None) -> dict:
  """Per-task metrics {name: float} of a workdir's newest checkpoint (-1 = whole split)."""
  return RefinedWeb.load(workdir).evaluate(split, eval_examples=-1 if examples == -1 else None,
                                           decode_examples=examples)


def predict(workdir: str, inputs, *, task: str | None = None, **decoding):
  """Outputs (str, or a list for a list) for raw inputs, prefixed with `task`'s prefix."""
  model = RefinedWeb.load(workdir)
  prefix = task_prefix(task, model.config) if task else ""
  return model._with_prefix(inputs, prefix, decoding)


def read_history(workdir: str) -> dict:
  """metrics.jsonl -> {"step", "history": {metric: [[step, value], ...]}, "eval": {...}}."""
  history, last_eval, step = {}, {}, 0
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    raise FileNotFoundError(f"{workdir} has no metrics.jsonl")
  for row in logger.read_rows(os.path.join(workdir, "metrics.jsonl")):
    at, split = row.pop("step"), row.pop("split", None)
    step = max(step, at)
    for name, value in row.items():
      history.setdefault(name, []).append([at, value])
    if split == "eval":
      last_eval.update(row)
  return {"step": step, "history": history, "eval": last_eval}
