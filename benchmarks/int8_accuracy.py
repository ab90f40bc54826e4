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
import numpy as np

from refinedweb_jax import api
from refinedweb_jax.data import corpus, pipeline
from refinedweb_jax.evaluate import metrics
from refinedweb_jax.model.transformer import forward
from refinedweb_jax.train import resume


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--examples", type=int, default=256)
  p.add_argument("--batch-size", type=int, default=32)
  args = p.parse_args(argv)
  config = resume.saved_config(args.workdir)
  d = config.data
  examples = list(corpus.generate_split("validation", args.examples, d.corpus_seed,
                                        long_fraction=d.long_fraction))
  full = api.RefinedWeb.load(args.workdir)
  int8 = api.RefinedWeb.load(args.workdir, weights="int8")
  worst, mean, count, agree = teacher_forced(full, int8, examples, batch_size=args.batch_size)
  prompts = [e["inputs"] for e in examples]
  began = time.perf_counter()
  out_full = full.generate(prompts, batch_size=args.batch_size)
  seconds_full = time.perf_counter() - began
  began = time.perf_counter()
  out_int8 = int8.generate(prompts, batch_size=args.batch_size)
  seconds_int8 = time.perf_counter() - began
  same = np.mean([x == y for x, y in zip(out_full, out_int8)])
  em = lambda outs: metrics.exact_match([e["targets"] for e in examples], outs)["exact_match"]
  print(f"# {os.path.abspath(args.workdir)} step {full.step}, {len(examples)} built-in "
        f"validation examples, {jax.devices()[0].device_kind}")
  print(f"teacher-forced logits, int8 vs float32 over {count} target positions: max |diff| "
        f"{worst:.3f}, mean of each position's max |diff| {mean:.4f}, same top token "
        f"{agree:.2%}")
  print(f"greedy outputs identical: {same:.1%}; exact match float32 {em(out_full):.1f}%, int8 "
        f"{em(out_int8):.1f}%; decoding {seconds_full:.1f} s float32, {seconds_int8:.1f} s int8 "
        "(compilation included)")
  return 0


def teacher_forced(full, int8, examples, *, batch_size: int = 32):
  """(largest |diff|, mean of each position's largest |diff|, target positions, fraction with
  the same top token) of the logits of `full`'s float32 parameters and of `int8`'s decoding
  (int8) parameters on the reference targets of `examples`."""
  d = full.config.data
  logits = jax.jit(lambda params, features: forward(full.model, params, features))
  worst, total, count, agree = 0.0, 0.0, 0, 0
  for features, _ in pipeline.eval_batches(examples, full.tokenizer, batch_size=batch_size,
                                           input_length=d.input_length,
                                           target_length=d.target_length):
    a, b = (np.asarray(logits(params, features)) for params in (full.params,
                                                                  int8.decode_params))
    mask = features["decoder_loss_weights"] > 0
    diff = np.abs(a - b).max(-1)[mask]
    worst, total, count = max(worst, float(diff.max())), total + float(diff.sum()), \
        count + int(mask.sum())
    agree += int((a.argmax(-1) == b.argmax(-1))[mask].sum())
  return worst, total / max(count, 1), count, agree / max(count, 1)


if __name__ == "__main__":
  sys.exit(main())
