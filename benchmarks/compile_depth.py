"""Compile time and program size of the train step against depth, scanned and unrolled.

  python benchmarks/compile_depth.py                   # small at 4+4, 12+12, 24+24 layers
  python benchmarks/compile_depth.py --layers 2,8 --preset tiny   # a quick check

For each depth: the project's jitted train step (AdamW, cross-entropy + z-loss) on a
batch of 8 x (256 + 64), traced and lowered (`lower` s: tracing and StableHLO), then
compiled by XLA (`compile` s), with the StableHLO text's size and its dot_general count.
Layers scanned (model.scan_layers=true, the default on GPU and TPU) should stay flat in
depth; unrolled ones grow linearly. Ends with PASS/FAIL: the deepest scanned stack within
--target (1.5x) of the shallowest in lowering time and program size.
"""

import argparse
import datetime
import os
import platform
import time

import jax

from refinedweb_jax.model.config import ModelConfig
from train_throughput import train_step_of  # benchmarks/train_throughput.py

TARGET = 1.5


def measure(cfg: ModelConfig, batch: int, source: int, target: int) -> dict:
  """Seconds to trace + lower and to compile the train step; its StableHLO size and dots."""
  step_fn, state, data, rng = train_step_of(cfg, batch, source, target)
  start = time.perf_counter()
  lowered = step_fn.lower(state, data, rng)
  lowered_s = time.perf_counter() - start
  text = lowered.as_text()
  start = time.perf_counter()
  lowered.compile()
  return {"lower": lowered_s, "compile": time.perf_counter() - start, "bytes": len(text),
          "dots": text.count("dot_general")}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="small")
  p.add_argument("--layers", default="4,12,24", help="encoder (= decoder) depths")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--source", type=int, default=256)
  p.add_argument("--target", type=int, default=64)
  p.add_argument("--no-unrolled", action="store_true", help="scanned rows only")
  args = p.parse_args()
  print(f"# {platform.node()}, {os.cpu_count()} CPUs, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}, {datetime.date.today()}; preset {args.preset}, "
        f"batch {args.batch} x ({args.source} + {args.target})")
  print("| layers | stack | lower s | compile s | StableHLO KB | dots |")
  print("|---|---|---|---|---|---|")
  depths = [int(x) for x in args.layers.split(",")]
  scanned = {}
  for scan in (True,) if args.no_unrolled else (True, False):
    for n in depths:
      cfg = ModelConfig.from_preset(args.preset, num_encoder_layers=n, num_decoder_layers=n,
                                    scan_layers=scan)
      row = measure(cfg, args.batch, args.source, args.target)
      if scan:
        scanned[n] = row
      print(f"| {n}+{n} | {'scanned' if scan else 'unrolled'} | {row['lower']:.2f} | "
            f"{row['compile']:.2f} | {row['bytes'] / 1024:.0f} | {row['dots']} |", flush=True)
  low, high = scanned[min(depths)], scanned[max(depths)]
  for key, what in (("lower", "lowering time"), ("bytes", "program size")):
    ratio = high[key] / low[key]
    print(f"{'PASS' if ratio <= TARGET else 'FAIL'}: scanned {max(depths)}+{max(depths)} "
          f"{what} is {ratio:.2f}x that of {min(depths)}+{min(depths)} (target <= {TARGET}x)")


if __name__ == "__main__":
  main()
