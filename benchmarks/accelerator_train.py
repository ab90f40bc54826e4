"""Train steps on an accelerator: ours at base and large in bf16 with MFU, HF's PyTorch T5 beside.

  python benchmarks/accelerator_train.py --chip-peak-tflops 989          # one H200: ~2.5 min
  python benchmarks/accelerator_train.py --quick                          # CPU smoke (~1 min)

Ours: the project's jitted train step (AdamW, cross-entropy + z-loss, clipping, the
non-finite guard) at the T5-small shape and the `base` and `large` presets, in
--dtype (bfloat16 compute, float32 parameters and optimizer state), on random all-real
batches of B x (256 + 64). --batch auto takes, per model, the largest of 256, 128, 64, 32,
16, 8 rows whose compiled step fits in 85% of the device's memory (8 on CPU). The peer:
Hugging Face's T5ForConditionalGeneration at the T5-small and base shapes, at the batch
ours used for that shape, bf16 autocast over float32 weights, fused AdamW and gradient
clipping, eager and under torch.compile, in the same process. MFU: the analytic matmul
FLOPs (train_throughput.analytic_flops) per second over --chip-peak-tflops.
Ends with PASS/FAIL lines against the targets: base >= 40% MFU and >= 2.5x HF
torch.compile's tokens/s, large >= 50% MFU, base traced and compiled in <= 60 s.
"""

import argparse
import datetime
import platform

import jax
import numpy as np

from refinedweb_jax import backend
from refinedweb_jax.model.config import ModelConfig
import train_throughput  # benchmarks/train_throughput.py
from train_throughput import T5_SMALL, analytic_flops, train_step_of
from decode import _median_seconds  # benchmarks/decode.py: a warm-up call, then the median

TARGETS = {"base_mfu": 0.40, "base_vs_hf": 2.5, "large_mfu": 0.50, "base_compile_s": 60.0}
CANDIDATES = (256, 128, 64, 32, 16, 8)
# The peer's shapes: HF T5 configs of the same sizes as our rows.
HF_SHAPES = {
    "T5-small shape": dict(d_model=512, d_kv=64, num_heads=8, d_ff=2048, num_layers=6,
                           feed_forward_proj="relu"),
    "base": dict(d_model=768, d_kv=64, num_heads=12, d_ff=2048, num_layers=12,
                 feed_forward_proj="gated-gelu"),
    "tiny": dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                 feed_forward_proj="gated-gelu"),
}


def peak_bytes(cfg: ModelConfig, batch: int, source: int, target: int) -> tuple:
  """(bytes that do not grow with the batch, bytes per row) of the compiled step, from
  XLA's memory analysis at `batch` rows (arguments: the state; temporaries: per row)."""
  step_fn, state, data, rng = train_step_of(cfg, batch, source, target)
  memory = step_fn.lower(state, data, rng).compile().memory_analysis()
  if memory is None:
    return None
  fixed = memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
  return fixed, memory.temp_size_in_bytes / batch


def auto_batch(cfg: ModelConfig, source: int, target: int) -> int:
  """The largest candidate batch whose step fits in 85% of the device memory (8 on CPU),
  extrapolated from one compile at the smallest candidate."""
  stats = jax.local_devices()[0].memory_stats() or {}
  measured = stats.get("bytes_limit") and peak_bytes(cfg, CANDIDATES[-1], source, target)
  if not measured:
    return 8
  fixed, per_row = measured
  budget = 0.85 * stats["bytes_limit"]
  return next((b for b in CANDIDATES if fixed + per_row * b <= budget), CANDIDATES[-1])


def ours(cfg: ModelConfig, batch: int, source: int, target: int, steps: int) -> dict:
  """tokens/s, s/step and compile seconds (trace + compile + first step) of our step."""
  tokens, seconds, compile_s, _ = train_throughput.ours(cfg, batch, source, target, steps)
  return {"tokens": tokens, "seconds": seconds, "compile": compile_s}


def hf_peer(shape: str, batch: int, source: int, target: int, steps: int, compiled: bool,
            vocab: int = 32128):
  """tokens/s and s/step of HF T5 training (bf16 autocast, fused AdamW), or a reason."""
  try:
    import torch
    import transformers
  except ImportError:
    return "torch or transformers not installed"
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if compiled and device == "cpu":
    return "torch.compile skipped on CPU"
  torch.manual_seed(0)
  cfg = transformers.T5Config(vocab_size=vocab, dropout_rate=0.0, tie_word_embeddings=False,
                              decoder_start_token_id=0, **HF_SHAPES[shape])
  model = transformers.T5ForConditionalGeneration(cfg).to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01,
                          fused=device == "cuda")
  rng = np.random.default_rng(0)
  ids = torch.from_numpy(rng.integers(2, vocab, (batch, source))).to(device)
  labels = torch.from_numpy(rng.integers(2, vocab, (batch, target))).to(device)
  forward = torch.compile(model) if compiled else model

  def one():
    with torch.autocast(device, dtype=torch.bfloat16):
      loss = forward(input_ids=ids, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device == "cuda":
      torch.cuda.synchronize()
  one()  # torch.compile's first call compiles
  seconds = _median_seconds(one, steps)
  return {"tokens": batch * (source + target) / seconds, "seconds": seconds}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--presets", default="base,large", help="our presets after the T5-small row")
  p.add_argument("--batch", default="auto", help="rows per batch, or auto (see above)")
  p.add_argument("--source", type=int, default=256)
  p.add_argument("--target", type=int, default=64)
  p.add_argument("--steps", type=int, default=5, help="timed steps per row (median)")
  p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  p.add_argument("--chip-peak-tflops", type=float, default=0.0,
                 help="the chip's dense peak in --dtype, e.g. 989 for an H100/H200 in bf16")
  p.add_argument("--no-peer", action="store_true", help="skip HF's PyTorch T5")
  p.add_argument("--quick", action="store_true",
                 help="CPU smoke: the tiny preset, 2 x (32 + 16), 1 step, HF eager only")
  args = p.parse_args()
  backend.configure()
  if args.quick:
    args.presets, args.batch, args.source, args.target, args.steps = "", "2", 32, 16, 1
  models = [(name, ModelConfig.from_preset(name, dtype=args.dtype))
            for name in args.presets.split(",") if name]
  small = ("T5-small shape", ModelConfig(**T5_SMALL, dtype=args.dtype))
  if args.quick:
    small = ("tiny", ModelConfig.from_preset("tiny", dtype=args.dtype, vocab_size=512))
  s, t = args.source, args.target
  print(f"# {platform.node()}, {jax.devices()[0].device_kind}, jax {jax.__version__}, "
        f"{datetime.date.today()}; {args.dtype}, batch {args.batch} x ({s} + {t})", flush=True)
  print("| model | batch | tokens/s | s/step | TFLOP/s | MFU | compile s |")
  print("|---|---|---|---|---|---|---|")
  rows = {}
  # The T5-small shape runs at base's batch, so that both peers compare at one batch.
  for name, cfg in models + [small]:
    if args.batch != "auto":
      batch = int(args.batch)
    elif name == small[0]:
      batch = rows["base"]["batch"] if "base" in rows else 8
    else:
      batch = auto_batch(cfg, s, t)
    row = ours(cfg, batch, s, t, args.steps)
    flops = analytic_flops(cfg, batch, s, t) / row["seconds"]
    mfu = flops / (args.chip_peak_tflops * 1e12) if args.chip_peak_tflops else None
    rows[name] = dict(row, batch=batch, mfu=mfu)
    print(f"| ours, {name} | {batch} | {row['tokens']:,.0f} | {row['seconds']:.3f} | "
          f"{flops / 1e12:.1f} | {'' if mfu is None else f'{mfu:.1%}'} | "
          f"{row['compile']:.1f} |", flush=True)
  for name, cfg in [small] + models:
    if name not in HF_SHAPES or args.no_peer:
      continue
    batch = rows[name]["batch"]
    for compiled in (False, True):
      label = f"HF PyTorch T5{' + torch.compile' if compiled else ''}, {name}"
      theirs = hf_peer(name, batch, s, t, args.steps, compiled, vocab=cfg.vocab_size)
      if isinstance(theirs, str):
        print(f"| {label} | {batch} | skipped: {theirs} | | | | |", flush=True)
        continue
      rows[label] = theirs
      flops = analytic_flops(cfg, batch, s, t) / theirs["seconds"]
      mfu = f"{flops / (args.chip_peak_tflops * 1e12):.1%}" if args.chip_peak_tflops else ""
      print(f"| {label} | {batch} | {theirs['tokens']:,.0f} | {theirs['seconds']:.3f} | "
            f"{flops / 1e12:.1f} | {mfu} | (ours {rows[name]['tokens'] / theirs['tokens']:.2f}x) |",
            flush=True)
  verdict = lambda ok: "PASS" if ok else "FAIL"
  for name, key in (("base", "base_mfu"), ("large", "large_mfu")):
    if name in rows and rows[name]["mfu"] is not None:
      print(f"{verdict(rows[name]['mfu'] >= TARGETS[key])}: {name} at {rows[name]['mfu']:.1%} "
            f"MFU (target >= {TARGETS[key]:.0%})")
  hf = rows.get("HF PyTorch T5 + torch.compile, base")
  if "base" in rows and hf:
    ratio = rows["base"]["tokens"] / hf["tokens"]
    print(f"{verdict(ratio >= TARGETS['base_vs_hf'])}: base at {ratio:.2f}x HF torch.compile's "
          f"tokens/s at batch {rows['base']['batch']} (target >= {TARGETS['base_vs_hf']}x)")
  if "base" in rows:
    print(f"{verdict(rows['base']['compile'] <= TARGETS['base_compile_s'])}: base traced and "
          f"compiled in {rows['base']['compile']:.1f} s (target <= "
          f"{TARGETS['base_compile_s']:.0f} s)")


if __name__ == "__main__":
  main()
