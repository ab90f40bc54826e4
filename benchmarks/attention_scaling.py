"""Time and memory of dense vs sparse self-attention (forward + backward) as length grows.

  python benchmarks/attention_scaling.py                              # 1k..32k, the full table
  python benchmarks/attention_scaling.py --lengths 512,1024 --repeats 1   # a quick check
  python benchmarks/attention_scaling.py --markdown                   # the table as Markdown
  python benchmarks/attention_scaling.py --position t5_bias           # with T5's relative bias

Each row jits jax.value_and_grad of sum(attention(q, k, v) * cotangent) w.r.t. q, k, v and
reports the median wall time after one warm-up call, the compiled executable's memory
(argument + output + temp - alias bytes, from `memory_analysis()`) and how far the process's
peak RSS rose above its RSS at the row's start (compile included; host memory, so on an
accelerator only the compiled figure is device memory). Dense is skipped when its compiled
memory exceeds --memory-budget-gib. --position t5_bias adds T5's relative position bias
(32 buckets, max distance 128) on every kind, its table differentiated too.
"""

import argparse
import datetime
import os
import platform
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from refinedweb_jax.model import attention
from refinedweb_jax.model.attention import blocked, dispatch, kinds, relative

KINDS = ("dense", "local", "strided/fixed", "strided/strided", "bigbird", "global_local")
GIB, MIB = 2 ** 30, 2 ** 20


def parse_args(argv=None):
  """Command-line flags; the defaults are the benchmark's reference sizes."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ints = lambda s: [int(x) for x in s.split(",") if x]
  p.add_argument("--lengths", type=ints, default=[1024, 2048, 4096, 8192, 16384, 32768])
  p.add_argument("--kinds", type=lambda s: s.split(","), default=list(KINDS),
                 help=f"comma-separated subset of {','.join(KINDS)}")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--head-dim", type=int, default=64)
  p.add_argument("--repeats", type=int, default=3, help="timed calls per row (median reported)")
  p.add_argument("--causal", action="store_true", help="causal patterns (default: bidirectional)")
  p.add_argument("--position", default="rope", choices=relative.POSITIONS,
                 help="t5_bias: add T5's relative position bias (rope: positions are not "
                      "attention's business)")
  p.add_argument("--dense-implementation", default="auto", choices=dispatch.IMPLEMENTATIONS,
                 help="dense rows' kernel (auto: the one a model layer gets on this backend)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="q, k, v and cotangent dtype (bfloat16: what training computes in)")
  p.add_argument("--memory-budget-gib", type=float, default=16.0,
                 help="skip dense when its compiled memory exceeds this")
  p.add_argument("--window", type=int, default=256)
  p.add_argument("--block-size", type=int, default=64)
  p.add_argument("--stride", type=int, default=256, help="strided/strided: local width and "
                 "period of the strided keys")
  # The fixed pattern sees `summary` columns of every period, so its keys per query grow
  # as n * summary / stride: a long period with one summary column keeps it near linear.
  p.add_argument("--fixed-stride", type=int, default=512, help="strided/fixed: period")
  p.add_argument("--summary", type=int, default=1, help="strided/fixed: summary columns")
  p.add_argument("--num-global-blocks", type=int, default=1)
  p.add_argument("--num-window-blocks", type=int, default=3)
  p.add_argument("--num-random-blocks", type=int, default=3)
  p.add_argument("--num-global-positions", type=int, default=16,
                 help="global_local attends globally from/to positions 0..this-1")
  p.add_argument("--query-chunk", type=int, default=blocked.QUERY_CHUNK.default)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--scaling-target", type=float, default=2.3,
                 help="max time(2n)/time(n) at the largest doubling for PASS")
  p.add_argument("--speedup-length", type=int, default=8192)
  p.add_argument("--speedup-target", type=float, default=15.0,
                 help="min dense/sparse time ratio at --speedup-length for PASS")
  p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
  args = p.parse_args(argv)
  unknown = [k for k in args.kinds if k not in KINDS]
  if unknown:
    p.error(f"unknown kinds {unknown}; allowed: {', '.join(KINDS)}")
  return args


def make_spec(kind, args):
  """(kind, AttentionConfig) of a sparse row label (None for dense)."""
  if kind == "dense":
    return None
  base, _, variant = kind.partition("/")
  return base, kinds.AttentionConfig(
      window=args.window, block_size=args.block_size,
      stride=args.fixed_stride if kind == "strided/fixed" else args.stride,
      summary=args.summary, variant=variant or "fixed", global_blocks=args.num_global_blocks,
      window_blocks=args.num_window_blocks, random_blocks=args.num_random_blocks,
      global_positions=f"0-{args.num_global_positions - 1}", seed=args.seed,
      query_chunk=args.query_chunk)


def density(spec, length, causal, rows_per_chunk=128):
  """Fraction of allowed (query, key) pairs: `allowed` (as in `pattern`) a few rows at a time."""
  if spec is None:
    return (length + 1) / (2 * length) if causal else 1.0
  kind, cfg = spec
  chunk = min(rows_per_chunk, length)
  starts = jnp.arange(0, length, chunk)
  j = jnp.arange(length)[None, :]

  @jax.jit
  def counts(starts):
    def one(start):
      i = start + jnp.arange(chunk)[:, None]
      # Rows past the end (last chunk) are masked out rather than padded into the pattern.
      m = kinds.allowed(kind, cfg, i, j, length, causal) & (i < length)
      return jnp.sum(m, dtype=jnp.int32)  # <= chunk * length, far below 2**31
    return jax.lax.map(one, starts)

  return int(np.asarray(counts(starts), np.int64).sum()) / length ** 2


def make_step(kind, spec, causal, implementation):
  """Jitted value_and_grad of sum(attention * cotangent) w.r.t. q, k, v (and the bias table),
  through the model's own attention layer, so every row runs the kernel dispatch.py picks."""
  def loss(q, k, v, segment_ids, cotangent, table=None):
    bias = None if table is None else relative.RelativeBias(
        table, bidirectional=not causal, max_distance=128)
    out = attention.self_attention(q, k, v, segment_ids, kind=spec[0] if spec else "dense",
                                   causal=causal, cfg=spec[1] if spec else None,
                                   implementation=implementation, bias=bias)
    return jnp.sum(out.astype(jnp.float32) * cotangent.astype(jnp.float32))
  step = jax.value_and_grad(loss, argnums=(0, 1, 2))
  with_table = jax.value_and_grad(loss, argnums=(0, 1, 2, 5))
  return jax.jit(lambda *inputs: (with_table if len(inputs) == 6 else step)(*inputs))


def compiled_bytes(compiled):
  """Peak device bytes XLA plans for one call, or None where the backend does not say."""
  try:
    m = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    return None
  if m is None:
    return None
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


def reset_peak_rss():
  """Starts a new peak-RSS window; returns the baseline to subtract from `peak_rss_bytes`."""
  try:
    # Writing 5 resets the kernel's high-water mark (VmHWM) to the current RSS, so each row
    # sees its own peak rather than the largest one of any earlier row.
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return _proc_status_bytes("VmRSS")
  except OSError:
    return peak_rss_bytes()  # no /proc: growth past the process's earlier peak only


def peak_rss_bytes():
  try:
    return _proc_status_bytes("VmHWM")
  except OSError:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _proc_status_bytes(field):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024  # kB
  raise OSError(f"{field} not in /proc/self/status")


def run_row(kind, length, args, inputs):
  """Compiles, checks the budget, warms up and times one (kind, length); returns a row dict."""
  row = dict(length=length, kind=kind)
  try:
    _measure(row, make_spec(kind, args), args, inputs)
  except Exception as e:  # pylint: disable=broad-except  (e.g. out of memory: keep other rows)
    row["note"] = f"failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}"
    row.pop("time_s", None)
  return row


def _measure(row, spec, args, inputs):
  length = row["length"]
  row["density"] = density(spec, length, args.causal)
  rss_before = reset_peak_rss()
  step = make_step(row["kind"], spec, args.causal, args.dense_implementation)
  start = time.perf_counter()
  compiled = step.lower(*inputs).compile()
  row["compile_s"] = time.perf_counter() - start
  row["bytes"] = compiled_bytes(compiled)
  if row["bytes"] is None and spec is None:
    # No compiled estimate: ~4 live B*H*N*N float32 score-sized buffers in forward + backward.
    row["bytes"] = 4 * args.batch * args.heads * length ** 2 * 4  # fp32 scores in any dtype
  if spec is None and row["bytes"] > args.memory_budget_gib * GIB:
    row["note"] = (f"skipped (needs {row['bytes'] / GIB:.3g} GiB > "
                   f"{args.memory_budget_gib:g} GiB budget)")
    return
  jax.block_until_ready(compiled(*inputs))  # warm-up: first-call allocations and caches
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*inputs))
    times.append(time.perf_counter() - start)
  row["time_s"] = statistics.median(times)
  row["rss_bytes"] = peak_rss_bytes() - rss_before


def make_inputs(length, args):
  """Random q, k, v, cotangent and all-ones segment ids (one unpadded example per row)."""
  shape = (args.batch, length, args.heads, args.head_dim)
  keys = jax.random.split(jax.random.PRNGKey(args.seed), 4)
  q, k, v, cotangent = (jax.random.normal(key, shape, jnp.dtype(args.dtype)) for key in keys)
  segment_ids = jnp.ones((args.batch, length), jnp.int32)
  if args.position == "t5_bias":
    table = jax.random.normal(jax.random.PRNGKey(args.seed + 1), (32, args.heads))
    return q, k, v, segment_ids, cotangent, table
  return q, k, v, segment_ids, cotangent


def add_flops(rows, args):
  """Achieved FLOP/s on the pairs each pattern allows: 4 * H * K FLOPs per (query, key) pair
  forward (scores and weighted values), 3x that with the backward."""
  for r in rows:
    if "time_s" in r and "density" in r:
      pairs = r["density"] * r["length"] ** 2 * args.batch
      r["flops"] = 12 * pairs * args.heads * args.head_dim / r["time_s"]


def add_ratios(rows):
  """Dense/sparse time and memory ratios against the dense row of the same length."""
  dense = {r["length"]: r for r in rows if r["kind"] == "dense" and "time_s" in r}
  for r in rows:
    d = dense.get(r["length"])
    if r["kind"] != "dense" and d is not None and "flops" in r and "flops" in d:
      r["flops_ratio"] = r["flops"] / d["flops"]
  for r in rows:
    d = dense.get(r["length"])
    if r["kind"] != "dense" and d is not None and "time_s" in r:
      r["time_ratio"] = d["time_s"] / r["time_s"]
      if d["bytes"] and r["bytes"]:
        r["mem_ratio"] = d["bytes"] / r["bytes"]


def fmt_bytes(n):
  if n is None:
    return "?"
  return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def table_cells(r):
  measured = "time_s" in r
  return [str(r["length"]), r["kind"], f"{r['density']:.4f}" if "density" in r else "-",
          f"{r['time_s'] * 1e3:.1f}" if measured else "-",
          f"{r['compile_s']:.1f}" if "compile_s" in r else "-",
          fmt_bytes(r.get("bytes")) if measured else "-",
          fmt_bytes(r["rss_bytes"]) if measured else "-",
          f"{r['time_ratio']:.1f}x" if "time_ratio" in r else "",
          f"{r['mem_ratio']:.1f}x" if "mem_ratio" in r else "",
          f"{r['flops'] / 1e9:.1f}" if "flops" in r else "-",
          f"{r['flops_ratio']:.0%}" if "flops_ratio" in r else "",
          r.get("note", "")]


TABLE_HEADER = ["length", "kind", "density", "time ms", "compile s", "peak mem", "peak RSS +",
                "dense/sparse time", "dense/sparse mem", "GFLOP/s", "of dense's", "note"]
FLOPS_TARGET = 0.5  # the blocked kernel's FLOP/s on the pairs it allows, against dense's


def render(header, rows, markdown):
  """Rows of strings as an aligned text table, or a Markdown table."""
  if markdown:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
  widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
  line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
  return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def scaling(rows, args):
  """time(2n)/time(n) per kind for each doubling in --lengths: (header, cell rows, ratios)."""
  times = {(r["kind"], r["length"]): r["time_s"] for r in rows if "time_s" in r}
  pairs = [(n, 2 * n) for n in sorted(args.lengths) if 2 * n in args.lengths]
  ratios = {(kind, hi): times[kind, hi] / times[kind, lo]
            for kind in args.kinds for lo, hi in pairs
            if (kind, lo) in times and (kind, hi) in times}
  header = ["kind"] + [f"t({hi})/t({lo})" for lo, hi in pairs]
  cells = [[kind] + [f"{ratios[kind, hi]:.2f}" if (kind, hi) in ratios else "-"
                     for _, hi in pairs] for kind in args.kinds]
  return header, cells, ratios, pairs


def checks(rows, ratios, pairs, args):
  """PASS/FAIL lines: linear scaling at the largest doubling, speedup over dense at one length."""
  sparse = [k for k in args.kinds if k != "dense"]
  lines = []
  if pairs:
    lo, hi = pairs[-1]
    ok = []
    for kind in sparse:
      r = ratios.get((kind, hi))
      ok.append(r is not None and r <= args.scaling_target)
      value = f"{r:.2f}" if r is not None else "not measured"
      lines.append(f"{'PASS' if ok[-1] else 'FAIL'}  scaling {kind}: time({hi})/time({lo}) = "
                   f"{value} (target <= {args.scaling_target:g})")
    lines.append(f"{'PASS' if all(ok) else 'FAIL'}  every sparse kind scales linearly from {lo} "
                 f"to {hi}")
  else:
    lines.append("SKIP  scaling: --lengths has no n together with 2n")
  n = args.speedup_length
  by_kind = {r["kind"]: r for r in rows if r["length"] == n}
  if n not in args.lengths or "dense" not in by_kind:
    lines.append(f"SKIP  speedup: length {n} with dense not in this run")
    return lines
  ok = []
  for kind in sparse:
    r = by_kind.get(kind, {}).get("time_ratio")
    ok.append(r is not None and r >= args.speedup_target)
    value = f"{r:.1f}x" if r is not None else "not measured (" + (
        by_kind["dense"].get("note") or "sparse row missing") + ")"
    lines.append(f"{'PASS' if ok[-1] else 'FAIL'}  speedup {kind} over dense at {n}: {value} "
                 f"(target >= {args.speedup_target:g}x)")
  lines.append(f"{'PASS' if all(ok) else 'FAIL'}  every sparse kind is >= "
               f"{args.speedup_target:g}x faster than dense at {n}")
  for kind in sparse:
    r = by_kind.get(kind, {}).get("flops_ratio")
    value = f"{r:.0%}" if r is not None else "not measured"
    lines.append(f"{'PASS' if r is not None and r >= FLOPS_TARGET else 'FAIL'}  {kind} at {n}: "
                 f"{value} of dense's FLOP/s on the pairs it allows (target >= "
                 f"{FLOPS_TARGET:.0%})")
  return lines


def machine_line(args):
  device = jax.devices()[0]
  return (f"{datetime.datetime.now().astimezone().isoformat(timespec='seconds')}  "
          f"{platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"jax {jax.__version__}, device {device.platform}: {device.device_kind} "
          f"(x{jax.device_count()})")


def config_line(args):
  return (f"B={args.batch} H={args.heads} K={args.head_dim} {args.dtype}, forward+backward, "
          f"{'T5 relative bias, ' if args.position == 't5_bias' else ''}"
          f"{'causal' if args.causal else 'bidirectional'}, median of {args.repeats} after 1 "
          f"warm-up; dense={args.dense_implementation}, budget {args.memory_budget_gib:g} GiB; "
          f"window {args.window}, block {args.block_size}, strided/strided stride {args.stride}, "
          f"strided/fixed stride {args.fixed_stride} summary {args.summary}, bigbird "
          f"{args.num_global_blocks}/{args.num_window_blocks}/{args.num_random_blocks} "
          f"global/window/random blocks, global_local "
          f"{args.num_global_positions} global positions")


def main(argv=None):
  args = parse_args(argv)
  start = time.perf_counter()
  rows = []
  for length in sorted(args.lengths):
    inputs = make_inputs(length, args)
    for kind in args.kinds:
      rows.append(run_row(kind, length, args, inputs))
      # Progress goes to stderr so stdout holds only the report.
      print(" ".join(c for c in table_cells(rows[-1]) if c), file=sys.stderr, flush=True)
  add_flops(rows, args)
  add_ratios(rows)
  header, cells, ratios, pairs = scaling(rows, args)
  md = args.markdown
  print(machine_line(args) + ("  \n" if md else "\n") + config_line(args) + "\n")
  print(render(TABLE_HEADER, [table_cells(r) for r in rows], md) + "\n")
  print("kernels: " + (dispatch.report() or "none compiled") + "\n")
  if pairs:
    print(render(header, cells, md) + "\n")
  print("\n".join(("- " if md else "") + line for line in checks(rows, ratios, pairs, args)))
  print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
