"""Teacher-logit dump throughput against the teacher's evaluation throughput, same examples.

  python benchmarks/distill_dump.py --teacher runs/distill/teacher [--examples 2048]

Times, in real (input + target, non-padding) tokens per second, after one warm-up
batch each: (1) evaluator.Evaluator's eval_step on unpacked padded rows, as
`refinedweb eval` runs it; (2) the same eval_step on the dump's packed rows; (3) the
dump's whole path (packing, top-k, device-to-host copy, record encoding), without
the disk write. The examples are spread evenly over the train split of the teacher's
mixture. Prints the ratios dump / eval.
"""

import argparse
import functools
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from refinedweb_jax import sharding
from refinedweb_jax.data import pipeline
from refinedweb_jax.distill import dump
from refinedweb_jax.data import logit_store
from refinedweb_jax.evaluate import evaluator
from refinedweb_jax.train import setup


def _tokens(features) -> int:
  return int(np.sum(features["encoder_segment_ids"] > 0) + np.sum(features["decoder_loss_weights"]))


def _timed(step, params, batches, mesh) -> float:
  """Real tokens/s of step over the batches, the first (compilation) not timed."""
  jax.block_until_ready(step(params, sharding.to_global(batches[0], mesh)))
  start = time.time()
  for features in batches:
    jax.block_until_ready(step(params, sharding.to_global(features, mesh)))
  return sum(_tokens(f) for f in batches) / max(time.time() - start, 1e-9)


def eval_throughput(teacher, examples, *, batch_size, input_length, target_length):
  """eval_step tokens/s on unpacked padded rows, as evaluator.Evaluator runs it."""
  run = teacher.run
  step = sharding.jit(functools.partial(evaluator.eval_step, model=run.model), run.mesh)
  batches = [f for f, _ in pipeline.eval_batches(examples, run.tokenizer, batch_size=batch_size,
                                                 input_length=input_length,
                                                 target_length=target_length)]
  return _timed(step, teacher.params, batches, run.mesh)


def packed_eval_throughput(teacher, tokenized, *, batch_size, input_length, target_length):
  """eval_step tokens/s on the dump's packed rows (the dump minus top-k and host work)."""
  run = teacher.run
  step = sharding.jit(functools.partial(evaluator.eval_step, model=run.model), run.mesh)
  batches = [f for f, _ in pipeline.packed_batches(
      tokenized, batch_size=batch_size, input_length=input_length, target_length=target_length,
      alignment=run.alignment())]
  return _timed(step, teacher.params, batches, run.mesh)


def dump_throughput(teacher, tokenized, *, batch_size, input_length, target_length, top_k):
  """(real tokens/s, records) of the dump's packed top-k pass (records encoded, not written)."""
  index = {"input_length": input_length, "target_length": target_length,
           "shard_examples": len(tokenized)}
  topk = dump.topk_fn(teacher, top_k, "bfloat16")
  dump.shard_records(teacher, index, 0, tokenized[:1], topk, batch_size)  # compile
  start = time.time()
  records = dump.shard_records(teacher, index, 0, tokenized, topk, batch_size)
  tokens = sum(len(t["inputs"]) + len(t["targets"]) for t in tokenized)
  return tokens / max(time.time() - start, 1e-9), records


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--teacher", required=True, help="a trained run directory")
  p.add_argument("--examples", type=int, default=2048)
  p.add_argument("--batch-size", type=int, default=32, help="rows per batch, both paths")
  p.add_argument("--top-k", type=int, default=32)
  p.add_argument("--sequence-kd", type=int, default=0, metavar="N",
                 help="also time the teacher's greedy outputs for the first N examples")
  args = p.parse_args()
  teacher = setup.restore(args.teacher)
  run = teacher.run
  d, m = run.config.data, run.model_cfg
  keys = [(task.source("train"), i) for task in run.tasks
          for i in range(len(task.source("train")))]
  picks = np.linspace(0, len(keys) - 1, min(args.examples, len(keys))).astype(int)
  examples = [keys[i][0][keys[i][1]] for i in picks]
  tokenize = pipeline.Tokenize(run.tokenizer, d.input_length, d.target_length)
  tokenized = [tokenize.map(ex) for ex in examples]
  sizes = dict(batch_size=args.batch_size, input_length=d.input_length,
               target_length=d.target_length)
  print(f"{jax.devices()[0].platform}, {len(examples)} train examples of {len(run.tasks)} tasks, "
        f"teacher {m.d_model}d x {m.num_encoder_layers}+{m.num_decoder_layers}, batch "
        f"{args.batch_size} rows of {d.input_length}+{d.target_length}, top-k {args.top_k}")
  evaluate = eval_throughput(teacher, examples, **sizes)
  packed = packed_eval_throughput(teacher, tokenized, **sizes)
  dumped, records = dump_throughput(teacher, tokenized, top_k=args.top_k, **sizes)
  with tempfile.TemporaryDirectory() as tmp:
    path = logit_store.write_shard(tmp, 0, 1, records)
    size = os.path.getsize(path)
  tokens = sum(int.from_bytes(r[4:6], "little") for r in records)
  print(f"eval (unpacked, as refinedweb eval)  {evaluate:10,.0f} tokens/s")
  print(f"eval on the dump's packed rows       {packed:10,.0f} tokens/s")
  print(f"dump (packed, top-k, records)        {dumped:10,.0f} tokens/s")
  print(f"dump / eval = {dumped / evaluate:.2f}; dump / packed eval = {dumped / packed:.2f} "
        "(target >= 0.8)")
  print(f"records: {tokens} target tokens, {sum(map(len, records)) / tokens:.1f} bytes per "
        f"target token encoded, {size / tokens:.1f} on disk (array_record, zstd); "
        f"uncompressed arrays {logit_store.raw_bytes_per_token(args.top_k, 'bfloat16')}")
  if args.sequence_kd:
    sequences = dump.sequence_fn(teacher, run.config)
    some = tokenized[: args.sequence_kd]
    dump.teacher_sequences(sequences, some[: args.batch_size], args.batch_size,
                           d.input_length, run.tokenizer.eos_id)  # compile
    start = time.time()
    outputs = dump.teacher_sequences(sequences, some, args.batch_size, d.input_length,
                                     run.tokenizer.eos_id)
    seconds = time.time() - start
    print(f"sequence-level KD outputs: {len(outputs) / seconds:.1f} examples/s, "
          f"{sum(map(len, outputs)) / seconds:,.0f} decoded tokens/s (greedy)")


if __name__ == "__main__":
  main()
