"""One train-step row on an accelerator: ours (a preset, RoPE or T5's bias) with MFU, or HF's
PyTorch T5 peer; each in its own process (accelerator_check.sh runs one row per part).

  python benchmarks/accelerator_train.py --preset base --batch 64 --chip-peak-tflops 989 \
      --json /tmp/base.json                                   # ours; prints its verdicts
  python benchmarks/accelerator_train.py --hf base --batch 64 --versus /tmp/base.json
  python benchmarks/accelerator_train.py --preset tiny --quick  # CPU smoke, seconds

Ours: the project's jitted train step (AdamW, cross-entropy + z-loss, clipping, the
non-finite guard) at --preset (and --position: rope, or t5_bias for T5's bias in every
kernel), in --dtype (bfloat16 compute, float32 parameters and optimizer state), on random
all-real batches of B x (256 + 64) at the fixed --batch (no search: accelerator_check.sh
states the batches per device memory). The peer (--hf SHAPE): Hugging Face's
T5ForConditionalGeneration at the same shape and batch, bf16 autocast over float32
weights, fused AdamW and gradient clipping, under torch.compile (eager with --eager, and
on CPU); running out of memory is one table row, not a failure. MFU: the analytic matmul
FLOPs (train_throughput.analytic_flops) per second over --chip-peak-tflops. Verdicts,
printed as soon as the row is measured: base >= 40% MFU and traced and compiled in
<= 60 s, large >= 50% MFU; with --versus ours' row: ours >= 2.5x HF torch.compile's tokens/s.
"""

import argparse
import datetime
import json
import os
import platform

import jax
import numpy as np

from refinedweb_jax import backend
from refinedweb_jax.model.config import ModelConfig
import train_throughput  # benchmarks/train_throughput.py
from train_throughput import T5_SMALL, analytic_flops
from decode import _median_seconds  # benchmarks/decode.py: a warm-up call, then the median

TARGETS = {"base_mfu": 0.40, "base_vs_hf": 2.5, "large_mfu": 0.50, "base_compile_s": 60.0}
# The peer's shapes: HF T5 configs of the same sizes as our presets.
HF_SHAPES = {
    "t5-small": dict(d_model=512, d_kv=64, num_heads=8, d_ff=2048, num_layers=6,
                     feed_forward_proj="relu"),
    "base": dict(d_model=768, d_kv=64, num_heads=12, d_ff=2048, num_layers=12,
                 feed_forward_proj="gated-gelu"),
    "tiny": dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                 feed_forward_proj="gated-gelu"),
}
TABLE = ("| model | batch | tokens/s | s/step | TFLOP/s | MFU | compile s / ratio |\n"
         "|---|---|---|---|---|---|---|")


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
    compiled = False  # the CPU smoke times eager
  try:
    return _hf_rows(shape, batch, source, target, steps, compiled, vocab, device)
  except torch.cuda.OutOfMemoryError:
    return f"out of memory at batch {batch}"
  except RuntimeError as e:  # CPU and older torch raise a plain RuntimeError
    if "out of memory" not in str(e).lower():
      raise
    return f"out of memory at batch {batch}"


def _hf_rows(shape, batch, source, target, steps, compiled, vocab, device):
  """hf_peer's measurement (torch and transformers imported)."""
  import torch
  import transformers
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
  return {"tokens": batch * (source + target) / seconds, "seconds": seconds,
          "compiled": compiled}


def _row(label, batch, tokens, seconds, flops, peak, last):
  mfu = flops / seconds / (peak * 1e12) if peak else None
  print(f"| {label} | {batch} | {tokens:,.0f} | {seconds:.3f} | {flops / seconds / 1e12:.1f} | "
        f"{'' if mfu is None else f'{mfu:.1%}'} | {last} |", flush=True)
  return mfu


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="base", help="ours: a model preset, or t5-small")
  p.add_argument("--position", default="rope", choices=("rope", "t5_bias"))
  p.add_argument("--hf", metavar="SHAPE", help=f"the peer instead, at one of "
                 f"{', '.join(HF_SHAPES)}")
  p.add_argument("--eager", action="store_true", help="the peer without torch.compile")
  p.add_argument("--batch", type=int, default=8, help="rows per batch (fixed)")
  p.add_argument("--source", type=int, default=256)
  p.add_argument("--target", type=int, default=64)
  p.add_argument("--steps", type=int, default=3, help="timed steps (median)")
  p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  p.add_argument("--chip-peak-tflops", type=float, default=0.0,
                 help="the chip's dense peak in --dtype, e.g. 989 for an H100/H200 in bf16")
  p.add_argument("--json", help="ours: write the row here (for the peer's --versus)")
  p.add_argument("--versus", help="the peer: ours' --json row, for the ratio verdict")
  p.add_argument("--header", action="store_true", help="print the table header first")
  p.add_argument("--quick", action="store_true",
                 help="CPU smoke: 2 x (32 + 16), 1 step (use --preset tiny / --hf tiny)")
  args = p.parse_args()
  backend.configure()
  if args.quick:
    args.batch, args.source, args.target, args.steps = 2, 32, 16, 1
  s, t, verdict = args.source, args.target, lambda ok: "PASS" if ok else "FAIL"
  if args.header:
    print(f"# {platform.node()}, {jax.devices()[0].device_kind}, jax {jax.__version__}, "
          f"{datetime.date.today()}; {args.dtype}, B x ({s} + {t}), median of {args.steps} "
          "steps\n" + TABLE, flush=True)
  if args.hf:
    if args.hf not in HF_SHAPES:
      p.error(f"unknown --hf {args.hf!r}; allowed: {', '.join(HF_SHAPES)}")
    vocab = 512 if args.hf == "tiny" else 32128
    theirs = hf_peer(args.hf, args.batch, s, t, args.steps, not args.eager, vocab=vocab)
    if isinstance(theirs, str):
      print(f"| HF PyTorch T5, {args.hf} | {args.batch} | {theirs} | | | | |", flush=True)
      return
    label = f"HF PyTorch T5{' + torch.compile' if theirs['compiled'] else ' (eager)'}"
    cfg = _config(args.hf, "rope", args.dtype, vocab)
    ratio = ""
    ours_row = None
    if args.versus and os.path.exists(args.versus):  # absent when ours failed
      with open(args.versus) as f:
        ours_row = json.load(f)
    if ours_row:
      ratio = f"ours {ours_row['tokens'] / theirs['tokens']:.2f}x"
    _row(f"{label}, {args.hf}", args.batch, theirs["tokens"], theirs["seconds"],
         analytic_flops(cfg, args.batch, s, t), args.chip_peak_tflops, ratio)
    if ours_row and args.hf == "base" and theirs["compiled"]:
      r = ours_row["tokens"] / theirs["tokens"]
      print(f"{verdict(r >= TARGETS['base_vs_hf'])}: base ({ours_row['position']}) at {r:.2f}x "
            f"HF torch.compile's tokens/s at batch {args.batch} (target >= "
            f"{TARGETS['base_vs_hf']}x)", flush=True)
    return
  cfg = _config(args.preset, args.position, args.dtype)
  row = ours(cfg, args.batch, s, t, args.steps)
  label = f"ours, {args.preset}" + (", T5 bias" if args.position == "t5_bias" else "")
  mfu = _row(label, args.batch, row["tokens"], row["seconds"],
             analytic_flops(cfg, args.batch, s, t), args.chip_peak_tflops,
             f"{row['compile']:.1f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(row, batch=args.batch, mfu=mfu, position=args.position), f)
  key = f"{args.preset}_mfu"
  if mfu is not None and key in TARGETS:
    print(f"{verdict(mfu >= TARGETS[key])}: {label[6:]} at {mfu:.1%} MFU (target >= "
          f"{TARGETS[key]:.0%})", flush=True)
  if args.preset == "base":
    print(f"{verdict(row['compile'] <= TARGETS['base_compile_s'])}: {label[6:]} traced and "
          f"compiled in {row['compile']:.1f} s (target <= {TARGETS['base_compile_s']:.0f} s)",
          flush=True)


def _config(name: str, position: str, dtype: str, vocab: int | None = None) -> ModelConfig:
  """Our model at a preset or the T5-small shape (tiny: a 512-token vocabulary)."""
  if name == "t5-small":
    return ModelConfig(**T5_SMALL, dtype=dtype, position=position)
  extra = {"vocab_size": vocab or 512} if name == "tiny" else {}
  return ModelConfig.from_preset(name, dtype=dtype, position=position, **extra)


if __name__ == "__main__":
  main()
