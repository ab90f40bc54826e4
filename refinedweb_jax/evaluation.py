"""Periodic evaluation: loss, token accuracy and perplexity per task, plus decoded samples."""

import collections
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from refinedweb_jax import data, decode, sharding


def forward(model, params, batch, *, deterministic=True, rngs=None):
  """Teacher-forced logits_BxTxV for a feature batch."""
  return model.apply(
      {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
      batch["encoder_segment_ids"], batch["decoder_segment_ids"], batch["encoder_positions"],
      batch["decoder_positions"], deterministic=deterministic, rngs=rngs)


def eval_step(params, batch, *, model):
  """Per-example sums over target tokens: (nll_B, correct_B, weight_B)."""
  logits = forward(model, params, batch)
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll_BxT = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  correct_BxT = jnp.argmax(logits, -1) == targets
  w = weights.astype(jnp.float32)
  return jnp.sum(nll_BxT * w, 1), jnp.sum(correct_BxT * w, 1), jnp.sum(w, 1)


class Evaluator:
  """Runs teacher-forced metrics over a fixed validation slice and greedy-decodes samples."""

  def __init__(self, exp, log):
    self.exp, self.log = exp, log
    cfg, d = exp.config, exp.config.data
    self.source = exp.source("validation")
    rows = exp.mesh.shape["data"] * exp.mesh.shape["fsdp"]
    # Eval batches must split evenly over the batch-sharded mesh axes.
    self.batch_size = -(-cfg.train.eval_batch_size // rows) * rows
    self.batches = list(data.eval_batches(
        self.source, exp.tokenizer, batch_size=self.batch_size, input_length=d.input_length,
        target_length=d.target_length, max_examples=cfg.train.eval_examples, tasks=exp.tasks))
    self.samples = self._pick_samples(cfg.train.decode_samples_per_task)
    self._eval_step = jax.jit(functools.partial(eval_step, model=exp.model))
    self._greedy = decode.make_greedy_fn(exp.model, max_length=cfg.train.max_decode_length,
                                         eos_id=exp.tokenizer.eos_id)

  def _pick_samples(self, per_task: int):
    """The first `per_task` validation examples of each task (scans at most 2,000)."""
    picked = collections.defaultdict(list)
    for i in range(min(len(self.source), 2000)):
      ex = self.source[i]
      wanted = self.exp.tasks is None or ex["task"] in self.exp.tasks
      if wanted and len(picked[ex["task"]]) < per_task:
        picked[ex["task"]].append(ex)
    return [ex for task in sorted(picked) for ex in picked[task]]

  def _run(self, fn, *args):
    with nn.logical_axis_rules(sharding.LOGICAL_RULES), jax.set_mesh(self.exp.mesh):
      return fn(*args)

  def run(self, params, *, step: int, decode: bool = True) -> dict:
    """Computes and logs eval metrics; returns them."""
    totals = collections.defaultdict(lambda: np.zeros(3))
    for features, texts in self.batches:
      loss_B, correct_B, weight_B = jax.device_get(
          self._run(self._eval_step, params, sharding.to_global(features, self.exp.mesh)))
      for i, ex in enumerate(texts):
        for key in (ex["task"], "all"):
          totals[key] += (loss_B[i], correct_B[i], weight_B[i])
    metrics = {}
    for key, (loss, correct, weight) in sorted(totals.items()):
      prefix = "eval" if key == "all" else f"eval/{key}"
      metrics[f"{prefix}/loss"] = loss / max(weight, 1)
      metrics[f"{prefix}/accuracy"] = correct / max(weight, 1)
      metrics[f"{prefix}/perplexity"] = math.exp(min(loss / max(weight, 1), 50.0))
    if decode and self.samples:
      metrics.update(self.decode_samples(params, step))
    self.log.scalars(step, "eval", metrics)
    self.log.text(f"[eval step {step}] loss {metrics['eval/loss']:.4f}  "
                  f"accuracy {metrics['eval/accuracy']:.4f}  "
                  f"perplexity {metrics['eval/perplexity']:.2f}")
    return metrics

  def decode_samples(self, params, step: int) -> dict:
    """Greedy-decodes the sample inputs, logs a table, returns per-task exact match."""
    tok, d = self.exp.tokenizer, self.exp.config.data
    rows = self.exp.mesh.shape["data"] * self.exp.mesh.shape["fsdp"]
    n = -(-len(self.samples) // rows) * rows
    inputs = np.zeros((n, d.input_length), np.int32)
    for i, ex in enumerate(self.samples):
      ids = tok.encode(ex["inputs"])[: d.input_length - 1] + [tok.eos_id]
      inputs[i, : len(ids)] = ids
    inputs = jax.make_array_from_process_local_data(sharding.batch_sharding(self.exp.mesh),
                                                    inputs)
    tokens = np.asarray(jax.device_get(self._run(self._greedy, params, inputs)))
    out, hits = [], collections.defaultdict(list)
    for ex, row in zip(self.samples, tokens):
      prediction = tok.decode(row.tolist())
      out.append({"task": ex["task"], "inputs": ex["inputs"], "targets": ex["targets"],
                  "prediction": prediction})
      hits[ex["task"]].append(float(prediction.strip() == ex["targets"].strip()))
    self.log.samples(step, out)
    for r in out:
      self.log.text(f"  {r['task']:<16} {_clip(r['inputs'], 60):<60} -> "
                    f"{_clip(r['prediction'], 50)}"
                    f"  (target: {_clip(r['targets'], 40)})")
    return {f"eval/{task}/sample_exact_match": float(np.mean(v)) for task, v in hits.items()}


def _clip(text: str, width: int) -> str:
  text = text.replace("\n", "\\n")
  return text if len(text) <= width else text[: width - 1] + "…"
