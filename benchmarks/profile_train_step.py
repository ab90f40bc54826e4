"""Where a train step's time goes: a jax.profiler trace of XLA's ops, summed by what they do.

  python benchmarks/profile_train_step.py                    # the T5-small shape, batch 8
  python benchmarks/profile_train_step.py --preset small --batch 16 --top 25
  python benchmarks/profile_train_step.py --override activation=gelu --override gated_mlp=true

Traces --steps calls of the project's jitted train step (train_throughput.py's batch and
optimizer) with `jax.profiler.trace(create_perfetto_trace=True)`, reads the Perfetto JSON
and joins each op with its line in the compiled HLO. Ops run concurrently (XLA:CPU runs
independent thunks side by side), so time is counted on the wall clock: the share of the
step during which at least one matmul (XLA dot or YNNPACK fusion) runs, the share in
which only other ops run (listed by op, with the source line JAX recorded for it), and
idle time. The trace stays in --trace-dir for TensorBoard / Perfetto.
"""

import argparse
import bisect
import collections
import glob
import gzip
import json
import os
import re
import sys

import jax

from refinedweb_jax.model.config import ModelConfig

from train_throughput import T5_SMALL, train_step_of  # benchmarks/train_throughput.py

MATMUL = ("ynn_fusion", "dot", "ynn")
SKIP = ("$", "Thunk", "Slinky", "PjitFunction")


def _merged(intervals):
  out = []
  for start, end in sorted(intervals):
    if out and start <= out[-1][1]:
      out[-1][1] = max(out[-1][1], end)
    else:
      out.append([start, end])
  return out


def _covered(merged, starts, start, end) -> float:
  """How much of [start, end) the merged intervals cover."""
  total, j = 0.0, bisect.bisect_right(starts, end) - 1
  while j >= 0 and merged[j][1] > start:
    total += max(0.0, min(end, merged[j][1]) - max(start, merged[j][0]))
    j -= 1
  return total


def hlo_sources(hlo_text: str) -> dict:
  """{instruction name: (shape, the op_name JAX recorded)} from compiled HLO text."""
  out = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+)", line)
    if m and m.group(1) not in out:
      op = re.search(r'op_name="([^"]+)"', line)
      out[m.group(1)] = (m.group(2), op.group(1) if op else "")
  return out


def summarize(trace_path: str, hlo_text: str, steps: int, top: int) -> str:
  data = json.load(gzip.open(trace_path))
  events = data["traceEvents"] if isinstance(data, dict) else data
  ops = [e for e in events if e.get("ph") == "X" and not e["name"].startswith(SKIP)]
  runs = [e for e in events if e.get("ph") == "X"
          and e["name"] == "ThunkExecutor::Execute (wait for completion)"]
  wall = sum(e["dur"] for e in runs) / steps
  spans = lambda es: [(e["ts"], e["ts"] + e["dur"]) for e in es]
  matmuls = _merged(spans(e for e in ops if e["name"].startswith(MATMUL)))
  every = _merged(spans(ops))
  busy = sum(b - a for a, b in every) / steps
  with_matmul = sum(b - a for a, b in matmuls) / steps
  starts = [m[0] for m in matmuls]
  alone = collections.defaultdict(float)
  for e in ops:
    if not e["name"].startswith(MATMUL):
      end = e["ts"] + e["dur"]
      alone[e["name"]] += (e["dur"] - _covered(matmuls, starts, e["ts"], end)) / steps
  sources = hlo_sources(hlo_text)
  lines = [f"step {wall / 1e3:.0f} ms on the wall clock: a matmul running "
           f"{with_matmul / 1e3:.0f} ms ({with_matmul / wall:.0%}), only other ops "
           f"{(busy - with_matmul) / 1e3:.0f} ms ({(busy - with_matmul) / wall:.0%}), idle "
           f"{(wall - busy) / 1e3:.0f} ms ({(wall - busy) / wall:.0%})",
           f"\nops running with no matmul beside them, ms per step (top {top}):"]
  by_source = collections.defaultdict(float)
  for name, ms in alone.items():
    shape, source = sources.get(name, ("?", ""))
    where = re.sub(r"^jit\([^)]*\)/", "", source)
    by_source[re.sub(r"\b(encoder|decoder)_\d+", r"\1_N", where) or name] += ms / 1e3
  for where, ms in sorted(by_source.items(), key=lambda x: -x[1])[:top]:
    lines.append(f"{ms:8.1f}  {where[-150:]}")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", default="", help="a model preset (default: the T5-small shape)")
  p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                 help="a ModelConfig field, e.g. activation=relu (repeatable)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--source", type=int, default=256)
  p.add_argument("--target", type=int, default=64)
  p.add_argument("--steps", type=int, default=3, help="traced steps (after two warm-ups)")
  p.add_argument("--top", type=int, default=15)
  p.add_argument("--trace-dir", default="/tmp/refinedweb_profile")
  args = p.parse_args(argv)
  overrides = {}
  for item in args.override:
    key, _, value = item.partition("=")
    default = getattr(ModelConfig(), key, None)
    if default is None or not value:
      p.error(f"--override {item!r}: expected FIELD=VALUE with a ModelConfig field")
    overrides[key] = (value.lower() == "true" if isinstance(default, bool)
                      else type(default)(value))
  cfg = (ModelConfig.from_preset(args.preset, **overrides) if args.preset
         else ModelConfig(**{**T5_SMALL, **overrides}))
  step_fn, state, batch, rng = train_step_of(cfg, args.batch, args.source, args.target)
  for _ in range(2):
    state, metrics = step_fn(state, batch, rng)
    jax.block_until_ready(metrics)
  before = set(glob.glob(os.path.join(args.trace_dir, "plugins/profile/*")))
  with jax.profiler.trace(args.trace_dir, create_perfetto_trace=True):
    for _ in range(args.steps):
      state, metrics = step_fn(state, batch, rng)
      jax.block_until_ready(metrics)
  new = sorted(set(glob.glob(os.path.join(args.trace_dir, "plugins/profile/*"))) - before)
  trace = glob.glob(os.path.join(new[-1], "perfetto_trace.json.gz"))[0]
  hlo = step_fn.lower(state, batch, rng).compile().as_text()
  print(f"# {'preset ' + args.preset if args.preset else 'T5-small shape'} {overrides or ''}, "
        f"batch {args.batch} x ({args.source} + {args.target}), {jax.devices()[0].device_kind}"
        f", trace {new[-1]}")
  print(summarize(trace, hlo, args.steps, args.top))
  return 0


if __name__ == "__main__":
  sys.exit(main())
