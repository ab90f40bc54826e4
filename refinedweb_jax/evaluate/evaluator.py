"""Periodic evaluation: loss, token accuracy and perplexity per task, plus decoded samples."""

import collections
import functools
import json
import math

import jax.numpy as jnp
import numpy as np

from refinedweb_jax import sharding
from refinedweb_jax.data import pipeline
from refinedweb_jax.evaluate import sandbox
from refinedweb_jax.model import decode, losses
from refinedweb_jax.model.transformer import forward


def eval_step(params, batch, *, model):
  """Per-example sums over target tokens: (nll_B, correct_B, weight_B)."""
  logits = forward(model, params, batch)
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  nll_BxT, _ = losses.cross_entropy(logits, targets)
  w = weights.astype(jnp.float32)
  return (jnp.sum(nll_BxT * w, 1), jnp.sum(losses.correct(logits, targets) * w, 1),
          jnp.sum(w, 1))


class Evaluator:
  """Per task: teacher-forced loss/accuracy/perplexity and metrics of greedy-decoded outputs."""

  def __init__(self, tasks, tokenizer, model, mesh, log, *, split: str, input_length: int,
               target_length: int, batch_size: int, max_decode_length: int,
               eval_examples: int, decode_examples: int):
    """Examples per task: `eval_examples` teacher-forced, `decode_examples` decoded (-1 = all)."""
    self.tasks, self.tokenizer, self.mesh, self.log = tasks, tokenizer, mesh, log
    self.input_length = input_length
    rows = sharding.batch_rows(mesh)
    # Batches must split evenly over the batch-sharded mesh axes.
    self.batch_size = -(-batch_size // rows) * rows
    decode.check_memory(model.cfg, rows=self.batch_size, source_length=input_length,
                        max_length=max_decode_length, flag="config.train.max_decode_length")
    if any("pass@1" in task.metrics for task in tasks):
      sandbox.check_available()  # before training, not at the first evaluation
    self.batches, self.samples = [], []
    for task in tasks:
      source = task.source(split)
      self.batches += list(pipeline.eval_batches(
          source, tokenizer, batch_size=self.batch_size, input_length=input_length,
          target_length=target_length,
          max_examples=None if eval_examples < 0 else eval_examples))
      n = len(source) if decode_examples < 0 else min(decode_examples, len(source))
      self.samples += [dict(source[i]) for i in range(n)]
    self.by_name = {t.name: t for t in tasks}
    self._eval_step = sharding.jit(functools.partial(eval_step, model=model), mesh)
    self._greedy = sharding.jit(functools.partial(
        decode.greedy_decode, model, max_length=max_decode_length, eos_id=tokenizer.eos_id), mesh)

  def run(self, params, *, step: int, decode: bool = True) -> dict:
    """Computes, logs and prints eval metrics; returns them."""
    totals = collections.defaultdict(lambda: np.zeros(3))
    for features, examples in self.batches:
      # Every process holds the whole eval batch and gets all results back.
      loss_B, correct_B, weight_B = sharding.to_host(
          self._eval_step(params, sharding.from_full_batch(features, self.mesh)))
      for i, ex in enumerate(examples):
        for key in (ex["task"], "all"):
          totals[key] += (loss_B[i], correct_B[i], weight_B[i])
    metrics = {}
    for key, (loss, correct, weight) in sorted(totals.items()):
      prefix = "eval" if key == "all" else f"eval/{key}"
      metrics[f"{prefix}/loss"] = loss / max(weight, 1)
      metrics[f"{prefix}/accuracy"] = correct / max(weight, 1)
      metrics[f"{prefix}/perplexity"] = math.exp(min(loss / max(weight, 1), 50.0))
    if decode and self.samples:
      metrics.update(self.decode_and_score(params, step))
    self.log.scalars(step, "eval", metrics)
    self.log.text(metrics_table(step, metrics, [t.name for t in self.tasks]))
    return metrics

  def predict(self, params, texts):
    """Greedy-decoded strings for input strings (batched, padded to the mesh)."""
    tok, length = self.tokenizer, self.input_length
    out = []
    for start in range(0, len(texts), self.batch_size):
      chunk = texts[start: start + self.batch_size]
      inputs = np.zeros((self.batch_size, length), np.int32)
      for i, text in enumerate(chunk):
        ids = tok.encode(text)[: length - 1] + [tok.eos_id]
        inputs[i, : len(ids)] = ids
      inputs = sharding.from_full_batch({"inputs": inputs}, self.mesh)["inputs"]
      tokens = np.asarray(sharding.to_host(self._greedy(params, inputs)))
      out += [tok.decode(row.tolist()) for row in tokens[: len(chunk)]]
    return out

  def decode_and_score(self, params, step: int) -> dict:
    """Decodes each task's first examples, scores them with the task's metrics, logs samples."""
    predictions = self.predict(params, [ex["inputs"] for ex in self.samples])
    by_task = collections.defaultdict(list)
    for ex, prediction in zip(self.samples, predictions):
      by_task[ex["task"]].append((ex, prediction))
    metrics, rows = {}, []
    for name, pairs in by_task.items():
      task = self.by_name[name]
      examples, preds = [p[0] for p in pairs], [p[1] for p in pairs]
      for metric, value in score(task, examples, preds).items():
        metrics[f"eval/{name}/{metric}"] = value
      rows += [{"task": name, "inputs": ex["inputs"], "targets": ex["targets"],
                "prediction": pred} for ex, pred in pairs]
      ex, pred = pairs[0]
      self.log.text(f"  {name:<16} {_clip(ex['inputs'], 60):<60} -> {_clip(pred, 50)}"
                    f"  (target: {_clip(ex['targets'], 40)})")
    self.log.samples(step, rows)
    return metrics


def score(task, examples, predictions) -> dict:
  """The task's metrics on decoded predictions (0-100 scale)."""
  from refinedweb_jax.evaluate import metrics as m  # sacrebleu and rouge load only here
  targets = [ex["targets"] for ex in examples]
  out = {}
  for name in task.metrics:
    if name == "bleu":
      out.update(m.bleu(targets, predictions, language=task.language))
    elif name == "chrf":
      out.update(m.chrf(targets, predictions))
    elif name == "rouge":
      out.update(m.rouge(targets, predictions))
    elif name == "squad":
      answers = [json.loads(ex["answers"]) if ex.get("answers") else [ex["targets"]]
                 for ex in examples]
      out.update(m.squad(answers, predictions))
    elif name == "pass@1":
      out.update(m.pass_at_1(targets, predictions, tests=[ex["tests"] for ex in examples]))
    elif name == "exact_match":
      out["exact_match"] = 100.0 * float(np.mean(
          [p.strip() == t.strip() for p, t in zip(predictions, targets)]))
    else:
      raise ValueError(f"unknown metric {name!r} for task {task.name}")
  return out


def metrics_table(step: int, metrics: dict, task_names) -> str:
  """A text table: one row per task, loss/accuracy/perplexity and the task's metrics."""
  lines = [f"[eval step {step}] loss {metrics['eval/loss']:.4f}  "
           f"accuracy {metrics['eval/accuracy']:.4f}  perplexity {metrics['eval/perplexity']:.2f}"]
  for name in task_names:
    found = {k[len(f"eval/{name}/"):]: v for k, v in metrics.items()
             if k.startswith(f"eval/{name}/")}
    if found:
      cells = "  ".join(f"{k} {v:.4g}" for k, v in found.items())
      lines.append(f"  {name:<24} {cells}")
  return "\n".join(lines)


def _clip(text: str, width: int) -> str:
  text = text.replace("\n", "\\n")
  return text if len(text) <= width else text[: width - 1] + "…"
