"""Compiled memory and step time of the train step per remat policy and microbatch count.

  python benchmarks/remat_memory.py                    # small model, 16 x (256 + 64) tokens
  python benchmarks/remat_memory.py --markdown         # the table as Markdown
  python benchmarks/remat_memory.py --preset tiny --batch-size 8 --steps 1   # quick check

Each row compiles the real jitted train_step (model.remat, train.microbatches) on one
batch of random tokens and reports XLA's memory_analysis() of the executable: temp bytes
(activations kept for the backward pass and other temporaries), peak = argument +
output + temp - alias bytes, and the compiled FLOPs (cost_analysis; recomputation shows
up here); then the median time of --steps steps after one warm-up.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

from refinedweb_jax import configs
from refinedweb_jax.train import optim
from refinedweb_jax import sharding
from refinedweb_jax.train import step as step_lib
from refinedweb_jax.model.transformer import EncoderDecoder, count_params
from train_step_memory import random_batch

HEADER = ["remat", "microbatches", "temp MiB", "peak MiB", "GFLOP", "compile s", "s/step",
          "tokens/s"]


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="small")
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--input-length", type=int, default=256)
  p.add_argument("--target-length", type=int, default=64)
  p.add_argument("--dtype", default="float32", help="model.dtype (compute dtype)")
  p.add_argument("--policies", default="none,full,dots", help="model.remat values")
  p.add_argument("--microbatches", default="1,4", help="train.microbatches values")
  p.add_argument("--steps", type=int, default=3, help="timed steps per row (median)")
  p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
  return p.parse_args(argv)


def measure(args, remat: str, microbatches: int) -> dict:
  """Memory analysis, compile time and median step time for one (policy, microbatches)."""
  config = configs.default_config()
  config.model.preset, config.model.remat, config.model.dtype = args.preset, remat, args.dtype
  config.train.microbatches = microbatches
  model = EncoderDecoder(configs.model_config(config))
  vocab = model.cfg.vocab_size
  tx, _ = optim.make_optimizer(config.optimizer, config.train.num_steps)
  mesh = sharding.make_mesh(-1, 1, 1)
  lengths = dict(input_length=args.input_length, target_length=args.target_length)
  state, shardings = step_lib.create_train_state(model, tx, mesh, jax.random.key(0), **lengths)
  batch = sharding.to_global(random_batch(np.random.default_rng(0), args.batch_size,
                                          args.input_length, args.target_length, vocab), mesh)
  step = step_lib.jit_train_step(model, config, mesh, shardings)
  start = time.time()
  compiled = step.lower(state, batch, jax.random.key(0)).compile()
  compile_s = time.time() - start
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  times = []
  for i in range(args.steps + 1):  # the first call is a warm-up
    start = time.time()
    with sharding.use_mesh(mesh):
      state, metrics = compiled(state, batch, jax.random.key(0))
    jax.block_until_ready(metrics)
    times.append(time.time() - start)
  seconds = statistics.median(times[1:])
  return {"remat": remat, "microbatches": microbatches, "params": count_params(state.params),
          "temp": mem.temp_size_in_bytes,
          "peak": (mem.argument_size_in_bytes + mem.output_size_in_bytes
                   + mem.temp_size_in_bytes - mem.alias_size_in_bytes),
          "gflop": cost.get("flops", float("nan")) / 1e9, "compile_s": compile_s,
          "seconds": seconds,
          "tokens_s": args.batch_size * (args.input_length + args.target_length) / seconds}


def render(rows, markdown: bool) -> str:
  cells = [[r["remat"], str(r["microbatches"]), f"{r['temp'] / 2**20:,.0f}",
            f"{r['peak'] / 2**20:,.0f}", f"{r['gflop']:,.0f}", f"{r['compile_s']:.1f}",
            f"{r['seconds']:.2f}", f"{r['tokens_s']:,.0f}"] for r in rows]
  if markdown:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
  widths = [max(len(c) for c in col) for col in zip(HEADER, *cells)]
  line = lambda row: "  ".join(c.rjust(w) for c, w in zip(row, widths))
  return "\n".join([line(HEADER), line(["-" * w for w in widths])] + [line(c) for c in cells])


def main(argv=None):
  args = parse_args(argv)
  policies = args.policies.split(",")
  counts = [int(m) for m in args.microbatches.split(",")]
  rows = []
  for microbatches in counts:
    for remat in policies:
      rows.append(measure(args, remat, microbatches))
      print(f"  done: remat={remat} microbatches={microbatches}", file=sys.stderr, flush=True)
  md = args.markdown
  print(f"{datetime.date.today()}  {platform.platform()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}" + ("  " if md else ""))
  print(f"preset {args.preset} ({rows[0]['params']:,} params), {args.dtype} compute, batch "
        f"{args.batch_size} x (input {args.input_length} + target {args.target_length}) "
        f"tokens, {jax.device_count()} device(s)\n")
  print(render(rows, md))


if __name__ == "__main__":
  sys.exit(main())
