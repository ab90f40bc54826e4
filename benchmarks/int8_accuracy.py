"""What int8 weights cost a trained run: logit differences and greedy agreement.

  python benchmarks/int8_accuracy.py --workdir runs/demo            # 256 validation examples
  python benchmarks/int8_accuracy.py --workdir runs/demo --examples 1000

The run's float32 parameters and their int8 quantization (model/quantize.py: weights per
output channel, activations per row, int8 matmuls) score the same built-in validation
examples: teacher-forced logits on the reference targets (largest and mean absolute
difference over real target positions, and how often the top token agrees), then greedy
decoding of every input (how many outputs are identical, and each one's exact match
against the reference).
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from refinedweb_jax import api
from refinedweb_jax.data import corpus
from refinedweb_jax.train import setup


def teacher_forced(model, examples, batch_size: int):
  """(logits of each batch, mask of real target positions) for the float and int8 runs."""
  tok, length = model.tokenizer, model.config.data.input_length
  for start in range(0, len(examples), batch_size):
    chunk = examples[start: start + batch_size]
    src = [tok.encode(e["inputs"])[: length - 1] + [tok.eos_id] for e in chunk]
    tgt = [tok.encode(e["targets"])[:63] + [tok.eos_id] for e in chunk]
    s, t = max(map(len, src)), max(map(len, tgt))
    enc = np.zeros((len(chunk), s), np.int32)
    dec = np.zeros((len(chunk), t), np.int32)
    mask = np.zeros((len(chunk), t), bool)
    for i, (a, b) in enumerate(zip(src, tgt)):
      enc[i, : len(a)] = a
      dec[i, 1: len(b)] = b[:-1]
      mask[i, : len(b)] = True
    yield enc, dec, mask


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--examples", type=int, default=256)
  p.add_argument("--batch-size", type=int, default=32)
  args = p.parse_args(argv)
  config = setup.run_config(args.workdir)
  d = config.data
  examples = list(corpus.generate_split("validation", args.examples, d.corpus_seed,
                                        long_fraction=d.long_fraction))
  full = api.RefinedWeb.load(args.workdir)
  int8 = api.RefinedWeb.load(args.workdir, weights="int8")
  apply = jax.jit(lambda params, enc, dec: full.model.apply({"params": params}, enc, dec))
  worst, total, count, agree = 0.0, 0.0, 0, 0
  for enc, dec, mask in teacher_forced(full, examples, args.batch_size):
    a = np.asarray(apply(full.params, jnp.asarray(enc), jnp.asarray(dec)))
    b = np.asarray(apply(int8.params, jnp.asarray(enc), jnp.asarray(dec)))
    diff = np.abs(a - b).max(-1)[mask]
    worst, total, count = max(worst, float(diff.max())), total + float(diff.sum()), \
        count + int(mask.sum())
    agree += int((a.argmax(-1) == b.argmax(-1))[mask].sum())
  prompts = [e["inputs"] for e in examples]
  began = time.perf_counter()
  out_full = full.generate(prompts, batch_size=args.batch_size)
  seconds_full = time.perf_counter() - began
  began = time.perf_counter()
  out_int8 = int8.generate(prompts, batch_size=args.batch_size)
  seconds_int8 = time.perf_counter() - began
  same = np.mean([x == y for x, y in zip(out_full, out_int8)])
  em = lambda outs: np.mean([o.strip() == e["targets"].strip() for o, e in zip(outs, examples)])
  print(f"# {os.path.abspath(args.workdir)} step {full.step}, {len(examples)} built-in "
        f"validation examples, {jax.devices()[0].device_kind}")
  print(f"teacher-forced logits, int8 vs float32 over {count} target positions: max |diff| "
        f"{worst:.3f}, mean of each position's max |diff| {total / count:.4f}, same top token "
        f"{agree / count:.2%}")
  print(f"greedy outputs identical: {same:.1%}; exact match float32 {em(out_full):.1%}, int8 "
        f"{em(out_int8):.1%}; decoding {seconds_full:.1f} s float32, {seconds_int8:.1f} s int8 "
        "(compilation included)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
