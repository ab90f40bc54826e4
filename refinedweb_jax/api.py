"""A trained model as an application: translate, summarize, answer, write code, chat, generate.

    model = RefinedWeb.load("runs/demo")
    model.translate("42 cats", source="en", target="de")
    model.generate(["chat: hello", "summarize: ..."], beam_size=4)

Each method takes one string (returns one string) or a list (returns a list).
"""

import json
import math
import os
import warnings

import jax
import ml_collections
import numpy as np

from refinedweb_jax.train import checkpoint
from refinedweb_jax import configs
from refinedweb_jax.data import corpus
from refinedweb_jax.model import decode
from refinedweb_jax.evaluate import evaluator as evaluation
from refinedweb_jax.train import logger
from refinedweb_jax import sharding
from refinedweb_jax.data import tokenizer as tok
from refinedweb_jax.train import loop as trainer
from refinedweb_jax.model.transformer import EncoderDecoder

LONG_INPUT = ("truncate", "error")


def task_prefix(task: str, config=None) -> str:
  """The inputs prefix of a task: built-in corpus tasks, or the config's own/public tasks."""
  own = {t["task"]: t.get("prefix", f"{t['task']}: ") for t in
         (config.get("own_tasks", []) or [] if config is not None else [])}
  if task in own:
    return own[task]
  if config is not None and task in configs.known_tasks(config) and task not in corpus.TASKS:
    from refinedweb_jax.data.datasets import public
    return public.PUBLIC[task].prefix
  if task not in corpus.TASKS:
    raise ValueError(f"unknown task {task!r}; allowed: {', '.join(list(corpus.TASKS) + list(own))}")
  if task.startswith("translate_"):
    _, src, tgt = task.split("_")
    return f"translate {corpus.LANGUAGE_NAMES[src]} to {corpus.LANGUAGE_NAMES[tgt]}: "
  return {"summarize": "summarize: ", "qa": "", "code": "write python: ", "chat": "chat: "}[task]


def chat_prompt(messages) -> str:
  """A conversation -> the chat task's input: 'chat: user: .. assistant: .. user: ..'.

  messages: one string (a single user turn), or a list of {"role", "content"} dicts
  or of strings alternating user / assistant, ending with the user's turn.
  """
  if isinstance(messages, str):
    messages = [messages]
  turns = []
  for i, m in enumerate(messages):
    role, content = (m.get("role"), m.get("content")) if isinstance(m, dict) else (
        ("user", "assistant")[i % 2], m)
    if role != ("user", "assistant")[i % 2]:
      raise ValueError(f"chat message {i} has role {role!r}; roles must alternate user, "
                       "assistant, ... starting with user")
    if not isinstance(content, str) or not content.strip():
      raise ValueError(f"chat message {i} is empty; give non-empty text")
    turns.append(content.strip())
  if not turns or len(turns) % 2 == 0:
    raise ValueError("a chat must end with a user message")
  if len(turns) == 1:
    return "chat: " + turns[0]
  history = " ".join(f"user: {turns[i]} assistant: {turns[i + 1]}"
                     for i in range(0, len(turns) - 1, 2))
  return f"chat: {history} user: {turns[-1]}"


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

  def __init__(self, config, params, tokenizer, model, mesh, step, workdir, *,
               on_long_input: str = "truncate"):
    if on_long_input not in LONG_INPUT:
      raise ValueError(f"on_long_input={on_long_input!r}; allowed: {', '.join(LONG_INPUT)}")
    self.config, self.params, self.tokenizer = config, params, tokenizer
    self.model, self.mesh, self.step, self.workdir = model, mesh, step, workdir
    self.on_long_input = on_long_input
    self._decoders = {}

  @classmethod
  def load(cls, path: str, *, on_long_input: str = "truncate") -> "RefinedWeb":
    """Restores a workdir's newest checkpoint, or a given checkpoints/ or checkpoints/STEP.

    Only the parameters are read (no optimizer state), onto the mesh the run's config asks
    for: its fsdp and tensor sizes, with data taking the remaining devices.
    """
    workdir, ckpt_dir, step = _locate(path)
    ckpt = checkpoint.Checkpointer(ckpt_dir, async_save=False)
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no finished checkpoint in {ckpt_dir}; "
                              f"train first with: refinedweb train --workdir {workdir}")
    saved, proto = ckpt.restore_metadata(step)
    config = configs.default_config()
    config.update(ml_collections.ConfigDict(saved))
    tokenizer = tok.Tokenizer(model_proto=proto)
    model = EncoderDecoder(configs.model_config(config, vocab_size=tokenizer.vocab_size))
    # The config's model-parallel axes (fsdp, tensor); data takes the remaining devices.
    mesh = sharding.make_mesh(-1, config.mesh.fsdp, config.mesh.tensor)
    abstract = trainer.abstract_params(model, mesh, input_length=config.data.input_length,
                                       target_length=config.data.target_length)
    params = ckpt.restore_params(step, abstract)
    ckpt.close()
    return cls(config, params, tokenizer, model, mesh, step, workdir,
               on_long_input=on_long_input)

  # -- applications ---------------------------------------------------------------------------

  def translate(self, text, source: str = "en", target: str = "de", **decoding):
    """Translates between en, de, fr and zh."""
    for name, lang in (("source", source), ("target", target)):
      if lang not in corpus.LANGUAGE_NAMES:
        raise ValueError(f"unknown {name} language {lang!r}; allowed: "
                         f"{', '.join(corpus.LANGUAGE_NAMES)}")
    if source == target:
      raise ValueError(f"source and target are both {source!r}; pick two different languages")
    return self._with_prefix(text, task_prefix(f"translate_{source}_{target}"), decoding)

  def summarize(self, text, **decoding):
    """A short summary of a document."""
    return self._with_prefix(text, task_prefix("summarize"), decoding)

  summarization = summarize

  def answer(self, question, context, **decoding):
    """Extractive answer to a question about a context (strings, or equal-length lists)."""
    if isinstance(question, str) != isinstance(context, str) or (
        not isinstance(question, str) and len(question) != len(context)):
      raise ValueError("answer takes a question and a context, or two lists of equal length")
    prompt = lambda q, c: f"question: {q} context: {c}"
    return self.generate(prompt(question, context) if isinstance(question, str) else
                         [prompt(q, c) for q, c in zip(question, context)], **decoding)

  def generate_code(self, description, **decoding):
    """A Python function for an English or Chinese description."""
    return self._with_prefix(description, task_prefix("code"), decoding)

  def chat(self, messages, **decoding):
    """The assistant's reply to a conversation (see chat_prompt); a list of them -> replies."""
    if isinstance(messages, list) and messages and isinstance(messages[0], list):
      return self.generate([chat_prompt(m) for m in messages], **decoding)
    return self.generate(chat_prompt(messages), **decoding)

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
    encoded = [self._encode(i, p) for i, p in enumerate(prompts)]
    for number, start in enumerate(range(0, len(encoded), batch_size)):
      chunk = encoded[start: start + batch_size]
      # Batches come in power-of-two sizes (one compilation each), whole rows per device.
      rows = _round_up(2 ** math.ceil(math.log2(len(chunk))), rows_step)
      inputs = np.zeros((rows, self._input_length(max(map(len, chunk)))), np.int32)
      for i, ids in enumerate(chunk):
        inputs[i, : len(ids)] = ids
      inputs = jax.device_put(inputs, sharding.batch_sharding(self.mesh))
      rng = jax.random.fold_in(jax.random.key(settings.seed), number)
      tokens = np.asarray(jax.device_get(self._decoder(settings)(self.params, inputs, rng)))
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
      message = (f"input {index} has {len(ids)} tokens, more than the model's input length "
                 f"{limit} (+EOS)")
      if self.on_long_input == "error":
        raise ValueError(message + "; shorten it or load with on_long_input='truncate'")
      warnings.warn(message + "; truncated", stacklevel=4)
      ids = ids[:limit]
    return ids + [self.tokenizer.eos_id]

  def _input_length(self, longest: int) -> int:
    """Dense encoders run on a power-of-two bucket; sparse ones on the trained length."""
    full = self.config.data.input_length
    if self.model.cfg.encoder_attention != "dense":
      return full
    return min(full, max(16, 2 ** math.ceil(math.log2(longest))))

  def evaluate(self, split: str = "validation", *, eval_examples=None,
               decode_examples=None) -> dict:
    """Per-task metrics of this checkpoint on a split (-1 examples = the whole split)."""
    exp = trainer.Experiment(self.config, self.workdir)
    exp.tokenizer = self.tokenizer  # the exact tokenizer the checkpoint was trained with
    log = logger.MetricLogger(self.workdir, enabled=jax.process_index() == 0)
    try:
      evaluator = evaluation.Evaluator(exp, log, split=split, eval_examples=eval_examples,
                                       decode_examples=decode_examples)
      return evaluator.run(self.params, step=self.step)
    finally:
      log.close()


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _locate(path: str):
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


# -- the notebook workflow: train / evaluate / predict -----------------------------------------


def train(config=None, workdir: str = "runs/notebook", overrides: dict | None = None) -> dict:
  """Trains like `refinedweb train` (resuming in workdir); returns the history as plain data.

  config: a ConfigDict, a path "config.py[:arg]", or None for the default; overrides:
  {"train.num_steps": 50, ...}. Returns {"step", "history": {metric: [[step, value], ...]},
  "eval": the last evaluation's metrics}.
  """
  config = configs.load_config(config) if config is None or isinstance(config, str) else config
  for dotted, value in (overrides or {}).items():
    configs.set_value(config, dotted, value)
  configs.validate(config)
  trainer.train_and_evaluate(config, workdir)
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
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      at, split = row.pop("step"), row.pop("split")
      step = max(step, at)
      for name, value in row.items():
        history.setdefault(name, []).append([at, value])
      if split != "train":
        last_eval.update(row)
  return {"step": step, "history": history, "eval": last_eval}
