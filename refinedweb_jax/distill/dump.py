"""`refinedweb distill dump`: a trained teacher's top-k log-probabilities for every target token.

The teacher runs with teacher forcing over the train split of the student config's
task mixture, tokenized with the teacher's tokenizer. Examples are packed first-fit
into fixed-shape rows by the training pipeline's packer (no padding to the longest
example), one jitted forward per batch returns the top-k log-probabilities, their ids
and each row's log-sum-exp, and each shard (a fixed contiguous range of examples) is
written atomically; see store.py for the format. With `sequence_kd` the record also
holds the teacher's own decoded output (Kim & Rush 2016 sequence-level KD).
"""

import functools
import os
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from refinedweb_jax import sharding
from refinedweb_jax.data import pipeline
from refinedweb_jax.data import logit_store
from refinedweb_jax.model import decode
from refinedweb_jax.train import losses as train_losses, setup


def topk_fn(teacher, k: int, value_dtype: str):
  """A jitted f(params, host batch) -> (log-probabilities in value_dtype, ids, lse)."""
  dtype = logit_store.VALUE_DTYPES[value_dtype]
  mesh = teacher.run.mesh

  def fn(params, batch):
    logprobs, ids, lse = train_losses.teacher_topk(teacher.run.model, params, batch, k)
    return logprobs.astype(dtype), ids, lse
  jitted = sharding.jit(fn, mesh)
  # Every process holds the whole batch (the plan is the same everywhere) and gets all
  # results back, so any process count writes the same shards.
  return lambda params, batch: sharding.to_host(jitted(params, sharding.from_full_batch(
      batch, mesh)))


def sequence_fn(teacher, config):
  """A function inputs_BxS -> teacher outputs tokens_BxL (greedy, or beam search)."""
  beam, length = config.distill.sequence_kd_beam, config.data.target_length
  model, mesh, eos = teacher.run.model, teacher.run.mesh, teacher.run.tokenizer.eos_id
  if beam > 1:
    fn = lambda p, x: decode.beam_search(model, p, x, beam_size=beam, alpha=0.6,
                                         max_length=length, eos_id=eos)[0]
  else:
    fn = functools.partial(decode.greedy_decode, model, max_length=length, eos_id=eos)
  jitted = sharding.jit(fn, mesh)

  def run(inputs_BxS):
    inputs = sharding.from_full_batch({"inputs": inputs_BxS}, mesh)["inputs"]
    return np.asarray(sharding.to_host(jitted(teacher.params, inputs)))
  return run


def teacher_sequences(run, tokenized, batch_size: int, input_length: int, eos_id: int):
  """Decoded teacher outputs per example, each ending at (and keeping) its EOS."""
  order = np.argsort([len(t["inputs"]) for t in tokenized], kind="stable")
  out = [None] * len(tokenized)
  for start in range(0, len(order), batch_size):
    chunk = order[start: start + batch_size]
    # Inputs sorted by length, cut to a power-of-two bucket: few shapes, little padding.
    longest = max(len(tokenized[i]["inputs"]) for i in chunk)
    width = min(input_length, max(16, 1 << (longest - 1).bit_length()))
    inputs = np.zeros((batch_size, width), np.int32)
    for row, i in enumerate(chunk):
      inputs[row, : len(tokenized[i]["inputs"])] = tokenized[i]["inputs"]
    tokens = run(inputs)
    for row, i in enumerate(chunk):
      ids = tokens[row].tolist()
      if eos_id in ids:
        ids = ids[: ids.index(eos_id) + 1]
      else:  # ran to the length limit: end it like a truncated target
        ids = ids[:-1] + [eos_id]
      out[i] = np.asarray(ids, np.int32)
  return out


def plan(config, run, teacher, *, sequence_kd: bool) -> dict:
  """The index of a dump: which examples, in which shards, with which settings."""
  d, kd = config.data, config.distill
  tasks, offset = [], 0
  for task in run.tasks:
    count = len(task.source("train"))
    tasks.append({"name": task.name, "count": count, "offset": offset})
    offset += count
  proto = teacher.run.tokenizer.serialized_model_proto()
  return {
      "format": logit_store.FORMAT_VERSION, "num_examples": offset,
      "shard_examples": kd.shard_examples, "num_shards": -(-offset // kd.shard_examples),
      "top_k": kd.top_k, "value_dtype": kd.value_dtype,
      "vocab_size": teacher.run.tokenizer.vocab_size,
      "model_vocab_size": teacher.run.model_cfg.vocab_size,
      "input_length": d.input_length, "target_length": d.target_length,
      "sequence_kd": bool(sequence_kd), "sequence_kd_beam": kd.sequence_kd_beam,
      "tokenizer": logit_store.tokenizer_digest(proto),
      "tasks": tasks, "teacher": {"workdir": os.path.abspath(teacher.workdir),
                                  "step": int(teacher.step)}}


def _check_same_plan(out_dir: str, old: dict, new: dict):
  keys = [k for k in new if k != "teacher"] + ["teacher"]
  changed = [k for k in keys if old.get(k) != new[k]]
  if changed:
    raise ValueError(f"{out_dir!r} holds a dump with other settings ({', '.join(changed)}: "
                     f"{old.get(changed[0])!r} there, {new[changed[0]]!r} now); use a new --out "
                     "directory or the original settings")


def dump(config, teacher_workdir: str, out_dir: str, *, sequence_kd: bool = False,
         max_shards: int | None = None, log=print) -> dict:
  """Writes (or finishes) the dump in out_dir; returns size and throughput statistics."""
  teacher = setup.restore(teacher_workdir)
  tokenizer = teacher.run.tokenizer
  where = f"from --teacher {teacher_workdir}"
  logit_store.check_same_vocabulary(config, tokenizer, where, teacher.run.model_cfg.vocab_size)
  os.makedirs(out_dir, exist_ok=True)
  run = setup.build(config)
  proto = tokenizer.serialized_model_proto()
  logit_store.check_same_tokenizer(run.tokenizer, proto, where)
  index = plan(config, run, teacher, sequence_kd=sequence_kd)
  # Every process computes every batch (from_full_batch); the first writes the files.
  main = jax.process_index() == 0
  log = log if main else (lambda *a: None)
  if os.path.isfile(os.path.join(out_dir, logit_store.INDEX)):
    _check_same_plan(out_dir, logit_store.read_index(out_dir), index)
  elif main:
    with open(os.path.join(out_dir, logit_store.TOKENIZER), "wb") as f:
      f.write(proto)
    logit_store.write_index(out_dir, index)
  for name in os.listdir(out_dir) if main else ():  # leftovers of a killed run
    if ".array_record.tmp-" in name:
      os.remove(os.path.join(out_dir, name))
  multihost_utils.sync_global_devices("dump planned")
  todo = logit_store.missing_shards(out_dir, index)
  log(f"teacher {teacher_workdir} (step {teacher.step}): {index['num_examples']} examples of "
      f"{len(index['tasks'])} tasks in {index['num_shards']} shards, top-k {index['top_k']} "
      f"{index['value_dtype']}; {index['num_shards'] - len(todo)} shards already done")
  sources = [task.source("train") for task in run.tasks]
  topk = topk_fn(teacher, index["top_k"], index["value_dtype"])
  sequences = sequence_fn(teacher, config) if sequence_kd else None
  tokenize = pipeline.Tokenize(tokenizer, index["input_length"], index["target_length"])
  tokens, seconds = 0, 0.0
  for shard in todo[:max_shards]:
    start = time.time()
    tokenized = [tokenize.map(ex) for ex in _shard_examples(index, sources, shard)]
    outputs = None
    if sequences is not None:
      outputs = teacher_sequences(sequences, tokenized, config.distill.dump_batch_size,
                                  index["input_length"], tokenizer.eos_id)
    records = shard_records(teacher, index, shard, tokenized, topk,
                            config.distill.dump_batch_size, outputs)
    if main:
      logit_store.write_shard(out_dir, shard, index["num_shards"], records)
    seconds += time.time() - start
    tokens += sum(len(t["inputs"]) + len(t["targets"]) for t in tokenized)
    log(f"  shard {shard + 1}/{index['num_shards']}: {len(tokenized)} examples, "
        f"{tokens / seconds:,.0f} tokens/s")
  multihost_utils.sync_global_devices("dump written")
  stats = size_stats(out_dir)
  stats["tokens_per_second"] = tokens / seconds if seconds else None
  missing = logit_store.missing_shards(out_dir, index)
  if missing:
    log(f"stopped with {len(missing)} of {index['num_shards']} shards left; run the same "
        "command again to finish")
  else:
    log(f"{out_dir}: {stats['examples']} examples, {stats['target_tokens']} target tokens, "
        f"{stats['bytes'] / 2**20:.2f} MiB in {index['num_shards']} shards = "
        f"{stats['bytes_per_token']:.1f} bytes per target token (uncompressed "
        f"{logit_store.raw_bytes_per_token(index['top_k'], index['value_dtype'])})")
  return stats


def _shard_examples(index: dict, sources, shard: int) -> list:
  """The text examples of one shard, in example order."""
  start = shard * index["shard_examples"]
  stop = min(start + index["shard_examples"], index["num_examples"])
  out = []
  for task, source in zip(index["tasks"], sources):
    lo, hi = max(start, task["offset"]), min(stop, task["offset"] + task["count"])
    out += [source[i - task["offset"]] for i in range(lo, hi)]
  return out


def shard_records(teacher, index: dict, shard: int, tokenized, topk, batch_size: int,
                  outputs=None) -> list[bytes]:
  """Packs a shard's examples, runs the teacher batch by batch, slices out each example."""
  first = shard * index["shard_examples"]
  records, pending = [None] * len(tokenized), None
  batches = pipeline.packed_batches(tokenized, batch_size=batch_size,
                                    input_length=index["input_length"],
                                    target_length=index["target_length"],
                                    alignment=teacher.run.alignment())
  # One batch in flight while the host slices the previous one.
  for batch in [*batches, None]:
    launched = None
    if batch is not None:
      features, example_BxT = batch
      launched = (example_BxT, topk(teacher.params, features))
    if pending is not None:
      example_BxT, arrays = pending
      logprobs, ids, lse = (np.asarray(a) for a in jax.device_get(arrays))
      for r in range(example_BxT.shape[0]):
        for i in np.unique(example_BxT[r][example_BxT[r] >= 0]):
          where = example_BxT[r] == i
          records[i] = logit_store.encode_record(
              first + int(i), logprobs[r, where], ids[r, where], lse[r, where],
              None if outputs is None else outputs[i])
    pending = launched
  return records


def size_stats(out_dir: str) -> dict:
  """Examples, target tokens and bytes on disk of the finished shards."""
  index = logit_store.read_index(out_dir)
  from array_record.python import array_record_module
  examples = tokens = size = 0
  for shard in range(index["num_shards"]):
    path = os.path.join(out_dir, logit_store.shard_name(shard, index["num_shards"]))
    if not os.path.isfile(path):
      continue
    size += os.path.getsize(path)
    reader = array_record_module.ArrayRecordReader(path)
    for raw in reader.read_all():
      examples += 1
      tokens += int.from_bytes(raw[4:6], "little")
    reader.close()
  return {"examples": examples, "target_tokens": tokens, "bytes": size,
          "bytes_per_token": size / max(tokens, 1)}
