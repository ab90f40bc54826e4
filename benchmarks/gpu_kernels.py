"""Registers, spills and shared memory of every Triton kernel of the model's attention, for sm_90a.

  python benchmarks/gpu_kernels.py                  # every case: a markdown table
  python benchmarks/gpu_kernels.py --only t5bias --kernel dq   # cases and kernels by name

No GPU needed. Each case is one attention layer of the `base` shape (12 heads of 64,
bf16, encoder 512 tokens, decoder 128) as the model calls it, differentiated, with the
dispatcher made to see a GPU, lowered for CUDA; the Triton kernels (XLA custom calls
`__gpu$xla.gpu.triton`, the module's bytecode in their backend_config) are read back,
compiled by pip's `triton` for sm_90a (H100/H200) with the warps and stages the lowering
chose, and `ptxas -v` (triton's bundled ptxas) reports registers, spill stores/loads
and static shared memory. A kernel that spills shows nonzero spill bytes. A compile of
a spilling kernel takes up to a minute on one CPU core.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from refinedweb_jax import backend
from refinedweb_jax.model import attention
from refinedweb_jax.model.attention import kinds, relative
from refinedweb_jax.model.attention.kinds import AttentionConfig

HEADS, DIM, SOURCE, TARGET, BATCH = 12, 64, 512, 128, 2


def triton_kernels(lowered):
  """[(name, TTIR text, num_warps, num_stages, grid)] of a lowered module's Triton calls."""
  from jax._src.lib.mlir import ir
  from jax._src.lib.triton import dialect as tt_dialect
  module = lowered.compiler_ir("stablehlo")
  tt_dialect.register_dialect(module.context)
  found, seen = [], set()

  def walk(op):
    for region in op.regions:
      for block in region.blocks:
        for inner in block.operations:
          if (inner.operation.name == "stablehlo.custom_call"
              and "triton" in ir.StringAttr(inner.attributes["call_target_name"]).value):
            config = ir.DictAttr(inner.attributes["mhlo.backend_config"])
            raw = ir.StringAttr(config["ir"]).value_bytes
            if raw not in seen:
              seen.add(raw)
              with module.context:
                text = ir.Module.parse(raw).operation.get_asm(enable_debug_info=False)
              number = lambda key: ir.IntegerAttr(config[key]).value
              found.append((ir.StringAttr(config["name"]).value, text, number("num_warps"),
                            number("num_stages"),
                            tuple(number(f"grid_{a}") for a in "xyz")))
          walk(inner.operation)

  walk(module.operation)
  return found


def compile_sm90(ttir: str, num_warps: int, num_stages: int) -> dict:
  """ptxas -v's registers, spill stores/loads (bytes) and shared memory of one kernel."""
  os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
  import triton
  from triton.backends.compiler import GPUTarget
  from triton.backends.nvidia.compiler import get_ptxas
  with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "kernel.ttir")
    with open(src, "w") as f:
      f.write(ttir)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    ptx = os.path.join(tmp, "kernel.ptx")
    with open(ptx, "w") as f:
      f.write(kernel.asm["ptx"])
    report = subprocess.run([get_ptxas(90).path, "-v", "--gpu-name", "sm_90a", ptx, "-o",
                             os.path.join(tmp, "kernel.cubin")], capture_output=True,
                            text=True, check=True).stderr
  find = lambda pattern: int(m.group(1)) if (m := re.search(pattern, report)) else 0
  return dict(registers=find(r"Used (\d+) registers"),
              spill_stores=find(r"(\d+) bytes spill stores"),
              spill_loads=find(r"(\d+) bytes spill loads"),
              smem=kernel.metadata.shared, ptx_lines=kernel.asm["ptx"].count("\n"))


def _packed(batch, length):
  """Two examples per row (the second ends in padding)."""
  seg = np.zeros((batch, length), np.int32)
  seg[:, : length // 2], seg[:, length // 2: length - 8] = 1, 2
  return jnp.asarray(seg)


def _lower(fn, q_len, kv_len, with_table):
  """fn(q, k, v[, table]) differentiated in all of them, lowered for CUDA."""
  q = jax.ShapeDtypeStruct((BATCH, q_len, HEADS, DIM), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((BATCH, kv_len, HEADS, DIM), jnp.bfloat16)
  args = (q, kv, kv) + ((jax.ShapeDtypeStruct((32, HEADS), jnp.float32),) if with_table else ())
  loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32) ** 2)
  grad = jax.jit(jax.grad(loss, tuple(range(len(args)))))
  return grad.trace(*args).lower(lowering_platforms=("cuda",))


def cases():
  """(label, lowered) per attention layer the model can run on GPU through Pallas."""
  seg_s, seg_t = _packed(BATCH, SOURCE), _packed(BATCH, TARGET)
  bias = lambda table, bidirectional: relative.RelativeBias(table, bidirectional, 128)
  for position in ("rope", "t5bias"):
    t5 = position == "t5bias"
    for label, causal, length, seg in (("encoder self", False, SOURCE, seg_s),
                                       ("decoder self (causal)", True, TARGET, seg_t)):
      def fn(q, k, v, *table, causal=causal, seg=seg):
        rel = bias(table[0], not causal) if table else None
        return attention.self_attention(q, k, v, seg, kind="dense", causal=causal, bias=rel)
      yield f"{label}, {position}", lambda fn=fn, length=length, t5=t5: _lower(
          fn, length, length, t5)
  yield "cross, rope/t5bias", lambda: _lower(
      lambda q, k, v: attention.cross_attention(q, k, v, seg_t, seg_s), TARGET, SOURCE, False)
  sparse = {"local": AttentionConfig(window=128, block_size=64),
            "strided": AttentionConfig(stride=64, summary=4, block_size=64),
            "bigbird": AttentionConfig(block_size=64, global_blocks=1, window_blocks=3,
                                       random_blocks=2),
            "global_local": AttentionConfig(window=128, block_size=64, global_positions="0")}
  for kind, cfg in sparse.items():
    for position in ("rope", "t5bias"):
      def fn(q, k, v, *table, kind=kind, cfg=cfg):
        rel = bias(table[0], True) if table else None
        return kinds.attend(kind, cfg, q, k, v, seg_s, causal=False, bias=rel, pallas=True)
      yield f"{kind} blocked parts, {position}", lambda fn=fn, t5=position == "t5bias": _lower(
          fn, SOURCE, SOURCE, t5)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="", help="run the cases whose label contains this")
  parser.add_argument("--kernel", default="", help="compile the kernels whose name contains this")
  parser.add_argument("--head-dim", type=int, default=64, help="per head (base: 64)")
  args = parser.parse_args()
  global DIM
  DIM = args.head_dim
  backend.platform = lambda: "gpu"  # the dispatcher and the blocked parts see a GPU
  print(f"# sm_90a, jax {jax.__version__}, {HEADS} heads x {DIM}, bf16")
  print("| case | kernel | tile (q x k) | warps | stages | registers | spill st/ld (B) "
        "| smem (B) | PTX lines |")
  print("|---|---|---|---|---|---|---|---|---|")
  for label, lower in cases():
    if args.only not in label:
      continue
    for name, ttir, warps, stages, grid in triton_kernels(lower()):
      if args.kernel not in name:
        continue
      tile = re.search(r"_q(\d+)_k(\d+)", name)
      tile = f"{tile[1]}x{tile[2]}" if tile else "?"
      stats = compile_sm90(ttir, warps, stages)
      print(f"| {label} | {re.sub(r'_q[0-9]+_k[0-9]+', '', name)} | {tile} | {warps} | {stages} | "
            f"{stats['registers']} | {stats['spill_stores']}/{stats['spill_loads']} | "
            f"{stats['smem']} | {stats['ptx_lines']} |", flush=True)


if __name__ == "__main__":
  sys.exit(main())
