"""Loading a trained run for inference and evaluation."""

import os

import jax
import numpy as np
import ml_collections

from refinedweb_jax import checkpoint, configs, corpus, decode, evaluation, logger, optim
from refinedweb_jax import sharding, train
from refinedweb_jax import tokenizer as tok
from refinedweb_jax.model import EncoderDecoder


def task_prefix(task: str) -> str:
  """The inputs prefix of a corpus task (QA inputs carry their own 'question: ... context:')."""
  if task not in corpus.TASKS:
    raise ValueError(f"unknown task {task!r}; allowed: {', '.join(corpus.TASKS)}")
  if task.startswith("translate_"):
    _, src, tgt = task.split("_")
    return f"translate {corpus.LANGUAGE_NAMES[src]} to {corpus.LANGUAGE_NAMES[tgt]}: "
  return {"summarize": "summarize: ", "qa": "", "code": "write python: ", "chat": "chat: "}[task]


class RefinedWeb:
  """A trained model with its tokenizer, restored from a workdir's newest checkpoint."""

  def __init__(self, config, params, tokenizer, model, mesh, step, workdir):
    self.config, self.params, self.tokenizer = config, params, tokenizer
    self.model, self.mesh, self.step, self.workdir = model, mesh, step, workdir
    self._greedy = {}

  @classmethod
  def load(cls, workdir: str) -> "RefinedWeb":
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
      raise FileNotFoundError(f"no checkpoint in workdir {workdir!r} (no {ckpt_dir}); "
                              f"train first with: refinedweb train --workdir {workdir}")
    ckpt = checkpoint.Checkpointer(ckpt_dir, async_save=False)
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"no finished checkpoint in {ckpt_dir}; "
                              f"train first with: refinedweb train --workdir {workdir}")
    saved, proto = ckpt.restore_metadata(step)
    config = configs.default_config()
    config.update(ml_collections.ConfigDict(saved))
    tokenizer = tok.Tokenizer(model_proto=proto)
    model = EncoderDecoder(configs.model_config(config, vocab_size=tokenizer.vocab_size))
    mesh = sharding.make_mesh(-1, 1, 1)
    tx, _ = optim.make_optimizer(config.optimizer, config.train.num_steps)
    abstract, _ = train.abstract_train_state(model, tx, mesh,
                                             input_length=config.data.input_length,
                                             target_length=config.data.target_length)
    state = ckpt.restore(step, abstract)
    ckpt.close()
    return cls(config, state.params, tokenizer, model, mesh, step, workdir)

  def generate(self, texts, *, max_new_tokens: int | None = None, batch_size: int = 16):
    """Greedy-decodes each text; yields outputs in order as each batch finishes."""
    if isinstance(texts, str):
      texts = [texts]
    length = max_new_tokens or self.config.train.max_decode_length
    if length not in self._greedy:
      self._greedy[length] = decode.make_greedy_fn(self.model, max_length=length,
                                                   eos_id=self.tokenizer.eos_id)
    input_length = self.config.data.input_length
    rows = self.mesh.shape["data"]
    batch_size = -(-batch_size // rows) * rows
    for start in range(0, len(texts), batch_size):
      chunk = texts[start: start + batch_size]
      inputs = np.zeros((batch_size, input_length), np.int32)
      for i, text in enumerate(chunk):
        ids = self.tokenizer.encode(text)[: input_length - 1] + [self.tokenizer.eos_id]
        inputs[i, : len(ids)] = ids
      inputs = jax.device_put(inputs, sharding.batch_sharding(self.mesh))
      tokens = np.asarray(jax.device_get(self._greedy[length](self.params, inputs)))
      for row in tokens[: len(chunk)]:
        yield self.tokenizer.decode(row.tolist())

  def evaluate(self, split: str = "validation", *, eval_examples=None,
               decode_examples=None) -> dict:
    """Per-task metrics of this checkpoint on a split (-1 examples = the whole split)."""
    exp = train.Experiment(self.config, self.workdir)
    exp.tokenizer = self.tokenizer  # the exact tokenizer the checkpoint was trained with
    log = logger.MetricLogger(self.workdir, enabled=jax.process_index() == 0)
    try:
      evaluator = evaluation.Evaluator(exp, log, split=split, eval_examples=eval_examples,
                                       decode_examples=decode_examples)
      return evaluator.run(self.params, step=self.step)
    finally:
      log.close()
