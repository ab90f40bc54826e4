"""Teacher-logit dump throughput against the teacher's evaluation throughput, same examples.

  python benchmarks/distill_dump.py --teacher runs/distill/teacher [--examples 2048]

Times, in real (input + target, non-padding) tokens per second, after one warm-up
batch each: (1) evaluation.Evaluator's eval_step on unpacked padded rows, as
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

from refinedweb_jax import api
from refinedweb_jax.data import pipeline as data
from refinedweb_jax.distill import dump as distill_dump
from refinedweb_jax.evaluate import evaluator as evaluation
from refinedweb_jax.distill import store as logit_store
from refinedweb_jax import sharding
from refinedweb_jax.train import loop as trainer


def packed_eval_throughput(teacher, examples, *, batch_size, input_length, target_length):
  """eval_step tokens/s on the dump's packed rows (the dump minus top-k and host work)."""
  tokenize = data.Tokenize(teacher.tokenizer, input_length, target_length)
  tokenized = [tokenize.map(ex) for ex in examples]
  lengths = np.array([(len(t["inputs"]), len(t["targets"])) for t in tokenized])
  rows = distill_dump.pack_rows(lengths, input_length, target_length)
  step = jax.jit(functools.partial(evaluation.eval_step, model=teacher.model))
  batches = [distill_dump.row_features(tokenized, rows[i: i + batch_size], batch_size,
                                       input_length, target_length)
             for i in range(0, len(rows), batch_size)]
  jax.block_until_ready(step(teacher.params, sharding.to_global(batches[0], teacher.mesh)))
  start = time.time()
  for features in batches:
    jax.block_until_ready(step(teacher.params, sharding.to_global(features, teacher.mesh)))
  return lengths.sum() / (time.time() - start)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--teacher", required=True, help="a trained run directory")
  p.add_argument("--examples", type=int, default=2048)
  p.add_argument("--batch-size", type=int, default=32, help="rows per batch, both paths")
  p.add_argument("--top-k", type=int, default=32)
  p.add_argument("--sequence-kd", type=int, default=0, metavar="N",
                 help="also time the teacher's greedy outputs for the first N examples")
  args = p.parse_args()
  teacher = api.RefinedWeb.load(args.teacher)
  d = teacher.config.data
  exp = trainer.Experiment(teacher.config, args.teacher)
  keys = [(task.source("train"), i) for task in exp.tasks
          for i in range(len(task.source("train")))]
  picks = np.linspace(0, len(keys) - 1, min(args.examples, len(keys))).astype(int)
  examples = [keys[i][0][keys[i][1]] for i in picks]
  sizes = dict(batch_size=args.batch_size, input_length=d.input_length,
               target_length=d.target_length)
  print(f"{jax.devices()[0].platform}, {len(examples)} train examples of {len(exp.tasks)} tasks, "
        f"teacher {teacher.model.cfg.d_model}d x {teacher.model.cfg.num_encoder_layers}+"
        f"{teacher.model.cfg.num_decoder_layers}, batch {args.batch_size} rows of "
        f"{d.input_length}+{d.target_length}, top-k {args.top_k}")
  evaluate = distill_dump.eval_throughput(teacher, examples, **sizes)
  packed = packed_eval_throughput(teacher, examples, **sizes)
  dump, records = distill_dump.dump_throughput(teacher, examples, top_k=args.top_k, **sizes)
  with tempfile.TemporaryDirectory() as tmp:
    path = logit_store.write_shard(tmp, 0, 1, records)
    size = os.path.getsize(path)
  tokens = sum(int.from_bytes(r[4:6], "little") for r in records)
  print(f"eval (unpacked, as refinedweb eval)  {evaluate:10,.0f} tokens/s")
  print(f"eval on the dump's packed rows       {packed:10,.0f} tokens/s")
  print(f"dump (packed, top-k, records)        {dump:10,.0f} tokens/s")
  print(f"dump / eval = {dump / evaluate:.2f}; dump / packed eval = {dump / packed:.2f} "
        "(target >= 0.8)")
  print(f"records: {tokens} target tokens, {sum(map(len, records)) / tokens:.1f} bytes per "
        f"target token encoded, {size / tokens:.1f} on disk (array_record, zstd); "
        f"uncompressed arrays {logit_store.raw_bytes_per_token(args.top_k, 'bfloat16')}")
  if args.sequence_kd:
    run = distill_dump._sequence_fn(teacher, teacher.config)
    tokenize = data.Tokenize(teacher.tokenizer, d.input_length, d.target_length)
    tokenized = [tokenize.map(ex) for ex in examples[: args.sequence_kd]]
    distill_dump.teacher_sequences(run, tokenized[: args.batch_size], args.batch_size,
                                   d.input_length, teacher.tokenizer.eos_id)  # compile
    start = time.time()
    outputs = distill_dump.teacher_sequences(run, tokenized, args.batch_size, d.input_length,
                                             teacher.tokenizer.eos_id)
    seconds = time.time() - start
    print(f"sequence-level KD outputs: {len(outputs) / seconds:.1f} examples/s, "
          f"{sum(map(len, outputs)) / seconds:,.0f} decoded tokens/s (greedy)")


if __name__ == "__main__":
  main()
