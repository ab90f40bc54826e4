"""Periodic evaluation: loss, token accuracy and perplexity per task, plus decoded samples."""

import collections
import functools
import json
import math
import time
import unicodedata

import jax.numpy as jnp
import numpy as np

from refinedweb_jax import sharding
from refinedweb_jax.data import pipeline
from refinedweb_jax.evaluate import sandbox
from refinedweb_jax.model import decode, losses
from refinedweb_jax.model.transformer import forward


def eval_step(params, batch, *, model):
  """Per target token, weighted: (nll_BxT, correct_BxT, weight_BxT)."""
  logits = forward(model, params, batch)
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  nll_BxT, _ = losses.cross_entropy(logits, targets)
  w = weights.astype(jnp.float32)
  return nll_BxT * w, losses.correct(logits, targets) * w, w


def namespace(split: str) -> str:
  """Where a split's metrics go: validation under eval/ (training's), test under test/."""
  return "eval" if split == "validation" else split


class Evaluator:
  """Per task: teacher-forced loss/accuracy/perplexity and metrics of greedy-decoded outputs.

  The teacher-forced pass packs every task's examples into the same rows (an example
  packed is the example alone), so its cost follows the tokens, not the number of tasks.
  """

  def __init__(self, tasks, tokenizer, model, mesh, log, *, split: str, input_length: int,
               target_length: int, batch_size: int, max_decode_length: int,
               eval_examples: int, decode_examples: int, file_task: bool = False):
    """Examples per task: `eval_examples` teacher-forced, `decode_examples` decoded (-1 = all).

    `file_task`: the one task is a file's (`refinedweb eval --input`): its metrics are
    only <namespace>/<task>/..., in metrics.jsonl rows of split "<namespace>/<task>".
    """
    self.tasks, self.tokenizer, self.mesh, self.log = tasks, tokenizer, mesh, log
    self.split, self.namespace = split, namespace(split)
    self.row_split = f"{self.namespace}/{tasks[0].name}" if file_task else self.namespace
    self.input_length = input_length
    rows = sharding.batch_rows(mesh)
    # Batches must split evenly over the batch-sharded mesh axes.
    self.batch_size = -(-batch_size // rows) * rows
    decode.check_memory(model.cfg, rows=self.batch_size, source_length=input_length,
                        max_length=max_decode_length, flag="config.train.max_decode_length")
    if decode_examples and any("pass@1" in task.metrics for task in tasks):
      sandbox.check_available()  # before training, not at the first evaluation (pass@1
      # scores decoded programs: an evaluation that decodes none runs no sandbox)
    self.by_name = {t.name: t for t in tasks}
    names = list(self.by_name)
    self.samples, examples, owners = [], [], []
    tokenize = pipeline.Tokenize(tokenizer, input_length, target_length)
    for task in tasks:
      source = task.source(split)
      n = len(source) if eval_examples < 0 else min(eval_examples, len(source))
      examples += [tokenize.map(dict(source[i])) for i in range(n)]
      owners += [names.index(task.name)] * n
      n = len(source) if decode_examples < 0 else min(decode_examples, len(source))
      if task.metrics:  # decoding is for the metrics: a task without any decodes nothing
        self.samples += [dict(source[i]) for i in range(n)]
    alignment = (model.cfg.packing_alignment("encoder"), model.cfg.packing_alignment("decoder"))
    self.batches = list(pipeline.packed_batches(
        examples, batch_size=self.batch_size, input_length=input_length,
        target_length=target_length, alignment=alignment))
    # Each example's task, by position in by_name; padding tokens (example -1) go to the
    # last slot, "all", which is summed afresh from the tasks' totals.
    self.owner = np.array(owners + [len(names)])
    self._eval_step = sharding.jit(functools.partial(eval_step, model=model), mesh)
    self._greedy = sharding.jit(functools.partial(
        decode.greedy_decode, model, max_length=max_decode_length, eos_id=tokenizer.eos_id), mesh)

  def run(self, params, *, step: int, decode: bool = True, replace: bool = False,
          predictions: str | None = None) -> dict:
    """Computes, logs and prints eval metrics; returns them. `replace`: a step evaluated
    before gets its metrics.jsonl row replaced; `predictions`: a jsonl file for every
    decoded example (else decoded samples go to samples.jsonl)."""
    began = time.time()
    names = list(self.by_name)
    totals = np.zeros((len(names) + 1, 3))  # per task, then "all": nll, correct, weight
    for features, example_BxT in self.batches:
      # Every process holds the whole eval batch and gets all results back.
      sums = sharding.to_host(self._eval_step(params, sharding.from_full_batch(features,
                                                                               self.mesh)))
      owner = self.owner[np.where(example_BxT >= 0, example_BxT, len(self.owner) - 1)]
      for j, values in enumerate(sums):
        totals[:, j] += np.bincount(owner.ravel(), np.asarray(values).ravel(),
                                    minlength=len(names) + 1)
    totals[-1] = totals[:-1].sum(0)
    ns, metrics = self.namespace, {}
    for key, (loss, correct, weight) in zip(names + ["all"], totals):
      if (key != "all" and not weight) or (key == "all" and self.row_split != ns):
        continue
      prefix = ns if key == "all" else f"{ns}/{key}"
      metrics[f"{prefix}/loss"] = loss / max(weight, 1)
      metrics[f"{prefix}/accuracy"] = correct / max(weight, 1)
      metrics[f"{prefix}/perplexity"] = math.exp(min(loss / max(weight, 1), 50.0))
    teacher_forced = time.time() - began
    rows = []
    if decode and self.samples:
      scores, rows = self.decode_and_score(params)
      metrics.update(scores)
    if self.row_split == ns:
      metrics[f"{ns}/seconds"] = time.time() - began
    self.log.scalars(step, self.row_split, metrics, replace=replace)
    self.log.text(metrics_table(step, metrics, names, ns, teacher_forced=teacher_forced,
                                seconds=time.time() - began))
    if rows:
      self.log.text(samples_text(rows))
      if predictions is None:
        self.log.samples(step, rows)
      else:
        self.log.predictions(predictions, step, rows)
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

  def decode_and_score(self, params) -> tuple[dict, list]:
    """Decodes the samples, scores them with their task's metrics: (metrics, rows)."""
    predictions = self.predict(params, [ex["inputs"] for ex in self.samples])
    by_task = collections.defaultdict(list)
    for ex, prediction in zip(self.samples, predictions):
      by_task[ex["task"]].append((ex, prediction))
    metrics, rows = {}, []
    for name, pairs in by_task.items():
      task = self.by_name[name]
      examples, preds = [p[0] for p in pairs], [p[1] for p in pairs]
      for metric, value in score(task, examples, preds).items():
        metrics[f"{self.namespace}/{name}/{metric}"] = value
      rows += [{"task": name, "inputs": ex["inputs"], "targets": ex["targets"],
                "prediction": pred} for ex, pred in pairs]
    return metrics, rows


def samples_text(rows) -> str:
  """The first decoded example of each task, under its own header."""
  lines, seen = ["  decoded samples (input -> prediction, target):"], set()
  for r in rows:
    if r["task"] not in seen:
      seen.add(r["task"])
      lines.append(f"  {r['task']:<16} {_pad(_clip(r['inputs'], 60), 60)} -> "
                   f"{_clip(r['prediction'], 50)}  (target: {_clip(r['targets'], 40)})")
  return "\n".join(lines)


def _width(text: str) -> int:
  """Columns a terminal gives text: East Asian wide and full-width characters take two."""
  return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
  """text left-aligned in `width` terminal columns (Chinese included)."""
  return text + " " * max(width - _width(text), 0)


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
      out.update(m.exact_match(targets, predictions))
    else:
      raise ValueError(f"unknown metric {name!r} for task {task.name}")
  return out


def metrics_table(step: int, metrics: dict, task_names, ns: str = "eval", *,
                  teacher_forced: float | None = None, seconds: float | None = None) -> str:
  """A text table: one row per task, loss/accuracy/perplexity and the task's metrics."""
  took = "" if seconds is None else f"  ({seconds:.1f} s" + (
      "" if teacher_forced is None else f"; teacher-forced {teacher_forced:.1f} s") + ")"
  title = "eval" if ns == "eval" else f"{ns} eval"
  # A file's evaluation has one task and no overall row: its title shows the task's.
  top = ns if f"{ns}/loss" in metrics else f"{ns}/{list(task_names)[0]}"
  lines = [f"[{title} step {step}] loss {metrics[f'{top}/loss']:.4f}  accuracy "
           f"{metrics[f'{top}/accuracy']:.4f}  perplexity {metrics[f'{top}/perplexity']:.2f}{took}"]
  for name in task_names:
    found = {k[len(f"{ns}/{name}/"):]: v for k, v in metrics.items()
             if k.startswith(f"{ns}/{name}/")}
    if found:
      cells = "  ".join(f"{k} {v:.4g}" for k, v in found.items())
      lines.append(f"  {name:<24} {cells}")
  return "\n".join(lines)


def _clip(text: str, width: int) -> str:
  """text in at most `width` terminal columns, cut with an ellipsis."""
  text = text.replace("\n", "\\n")
  if _width(text) <= width:
    return text
  out = ""
  for c in text:
    if _width(out + c) > width - 1:
      break
    out += c
  return out + "…"
