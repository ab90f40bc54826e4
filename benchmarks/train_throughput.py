"""Training throughput against HF transformers' PyTorch T5 and the machine's matmul peak.

  python benchmarks/train_throughput.py                # T5-small shape, then mini, small and base
  python benchmarks/train_throughput.py --steps 5 --presets small   # a markdown table

Every row trains one step at a time on batch 8 x (256 input + 64 target) tokens, all real
(no padding), AdamW, float32, random weights and ids. Ours: train.step.jit_train_step
(the project's step: cross-entropy + z-loss over the vocabulary, gradient clipping,
AdamW with weight decay). The peer, at the T5-small shape only (d_model 512, 6+6
layers, 8 heads of 64, ReLU d_ff 2048, vocab 32128, untied head):
T5ForConditionalGeneration's loss, backward and torch.optim.AdamW, skipped, saying so,
when torch or transformers are missing.

Achieved FLOP/s use an analytic count of the matmuls (training = 3 x forward):
  forward = 2 * B * (S * P_enc + T * P_dec + S * P_cross_kv)
            + 4 * B * L_enc * S^2 * H*K + 4 * B * L_dec * (T^2 + T*S) * H*K
with P_enc = L_enc * (4 D HK + m D F), P_dec = L_dec * (6 D HK + m D F) + D V (the head),
P_cross_kv = L_dec * 2 D HK, m = 2 (ReLU) or 3 (gated). The peak is the best FLOP/s of
XLA's dot (in --dtype) on the model's own GEMM shapes, measured in the same run. The
BigBird row (--bigbird-length, batch 1) counts only the (query, key) pairs its encoder
computes (benchmarks/attention_scaling.py's density) and has its own GEMM shapes' peak.
"""

import argparse
import datetime
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from refinedweb_jax import backend, configs
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder, count_params
from refinedweb_jax.train import losses as train_losses, optim, setup, step as step_lib

from decode import _median_seconds  # benchmarks/decode.py: a warm-up call, then the median

T5_SMALL = dict(vocab_size=32128, d_model=512, num_heads=8, head_dim=64, d_ff=2048,
                num_encoder_layers=6, num_decoder_layers=6, gated_mlp=False,
                activation="relu", tie_embeddings=False)
TARGET_PEAK, TARGET_PEER = 0.65, 2.5
# experiments/train_small_bigbird_16k.py's model: `small` with a BigBird encoder.
BIGBIRD = dict(vocab_size=2000, encoder_attention="bigbird", attention=dict(
    block_size=64, window_blocks=3, global_blocks=1, random_blocks=3))


def analytic_flops(cfg: ModelConfig, batch: int, source: int, target: int,
                   encoder_pairs: float | None = None) -> float:
  """Matmul FLOPs of one training step (forward, backward = 2 x forward).

  encoder_pairs: the (query, key) pairs an encoder layer computes per row (a sparse
  kind's density x S^2); S^2 when None.
  """
  d, hk, f, v = cfg.d_model, cfg.num_heads * cfg.head_dim, cfg.d_ff, cfg.vocab_size
  m = 3 if cfg.gated_mlp else 2
  enc = cfg.num_encoder_layers * (4 * d * hk + m * d * f)
  dec = cfg.num_decoder_layers * (6 * d * hk + m * d * f) + d * v
  cross_kv = cfg.num_decoder_layers * 2 * d * hk
  forward = 2 * batch * (source * enc + target * dec + source * cross_kv)
  pairs = source * source if encoder_pairs is None else encoder_pairs
  forward += 4 * batch * cfg.num_encoder_layers * pairs * hk
  forward += 4 * batch * cfg.num_decoder_layers * (target * target + target * source) * hk
  return 3.0 * forward


def matmul_peak(cfg: ModelConfig, batch: int, source: int, target: int, repeats: int) -> float:
  """The best FLOP/s of XLA's dot over the step's GEMM shapes (M, K) x (K, N), in the
  model's compute dtype."""
  d, hk, f, v = cfg.d_model, cfg.num_heads * cfg.head_dim, cfg.d_ff, cfg.vocab_size
  shapes = {(batch * source, d, hk), (batch * source, d, f), (batch * source, f, d),
            (batch * target, d, v), (batch * target, v, d)}
  best = 0.0
  for m, k, n in sorted(shapes):
    a = jnp.asarray(np.random.default_rng(0).standard_normal((m, k)), cfg.compute_dtype)
    b = jnp.asarray(np.random.default_rng(1).standard_normal((k, n)), cfg.compute_dtype)
    dot = jax.jit(jnp.dot)
    seconds = _median_seconds(lambda: jax.block_until_ready(dot(a, b)), repeats)
    best = max(best, 2.0 * m * k * n / seconds)
  return best


def _batch(cfg: ModelConfig, batch: int, source: int, target: int) -> dict:
  rng = np.random.default_rng(0)
  ids = lambda n: rng.integers(2, cfg.vocab_size, (batch, n)).astype(np.int32)
  targets = ids(target)
  shifted = np.zeros_like(targets)
  shifted[:, 1:] = targets[:, :-1]
  ones = lambda n: np.ones((batch, n), np.int32)
  positions = lambda n: np.broadcast_to(np.arange(n, dtype=np.int32), (batch, n)).copy()
  return {"encoder_input_tokens": ids(source), "encoder_segment_ids": ones(source),
          "encoder_positions": positions(source), "decoder_input_tokens": shifted,
          "decoder_target_tokens": targets, "decoder_loss_weights": ones(target),
          "decoder_segment_ids": ones(target), "decoder_positions": positions(target)}


def step_parts(cfg: ModelConfig, batch: int, source: int, target: int, steps: int) -> dict:
  """Seconds of the forward pass with the loss, of forward + backward, and of the encoder's
  forward and forward + backward alone: where a train step's time goes."""
  model = EncoderDecoder(cfg)
  data = jax.device_put(_batch(cfg, batch, source, target))
  params = model.init(jax.random.key(0), data["encoder_input_tokens"][:1, :8],
                      data["decoder_input_tokens"][:1, :4])["params"]
  loss = lambda p: train_losses.cross_entropy_sums(p, data, jax.random.key(0), model=model,
                                               z_loss=1e-4)[0]
  encoder = lambda p: jnp.sum(model.apply({"params": p}, data["encoder_input_tokens"],
                                          method="encode") ** 2)
  out = {}
  for name, fn in (("forward", loss), ("forward+backward", jax.grad(loss)),
                   ("encoder forward", encoder), ("encoder forward+backward", jax.grad(encoder))):
    f = jax.jit(fn)
    out[name] = _median_seconds(lambda: jax.block_until_ready(f(params)), steps)
  return out


def train_step_of(cfg: ModelConfig, batch: int, source: int, target: int):
  """(jitted step, train state, batch on device, rng): the project's train step (AdamW as
  configured by default) on a random all-real batch."""
  config = configs.default_config()
  config.train.num_steps = 1000
  model = EncoderDecoder(cfg)
  mesh = setup.make_mesh(config)
  tx, _ = optim.make_optimizer(config.optimizer, config.train.num_steps)
  state, shardings = step_lib.create_train_state(model, tx, mesh, jax.random.key(0),
                                                 input_length=source, target_length=target)
  step_fn = step_lib.jit_train_step(model, config, mesh, shardings)
  return step_fn, state, jax.device_put(_batch(cfg, batch, source, target)), jax.random.key(1)


def ours(cfg: ModelConfig, batch: int, source: int, target: int, steps: int):
  """(tokens/s, seconds per step, compile seconds, parameters) of our jitted train step."""
  step_fn, state, data, rng = train_step_of(cfg, batch, source, target)
  start = time.perf_counter()
  state, metrics = step_fn(state, data, rng)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  holder = [state]

  def one():
    holder[0], m = step_fn(holder[0], data, rng)
    jax.block_until_ready(m)
  seconds = _median_seconds(one, steps)
  return batch * (source + target) / seconds, seconds, compile_s, count_params(state.params)


def peer(batch: int, source: int, target: int, steps: int):
  """(tokens/s, seconds per step, parameters) of HF's PyTorch T5 training, or None."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  from decode import hf_t5_config  # the decode benchmark's peer model, untied here
  cfg = hf_t5_config(tie_embeddings=False, dropout_rate=0.0)
  model = transformers.T5ForConditionalGeneration(cfg).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01)
  rng = np.random.default_rng(0)
  ids = torch.from_numpy(rng.integers(2, cfg.vocab_size, (batch, source)).astype(np.int64))
  labels = torch.from_numpy(rng.integers(2, cfg.vocab_size, (batch, target)).astype(np.int64))

  def one():
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
  seconds = _median_seconds(one, steps)
  return batch * (source + target) / seconds, seconds, sum(p.numel() for p in model.parameters())


def bigbird_row(source: int, target: int, steps: int, dtype: str) -> str:
  """The long-input training step: FLOPs count only the pairs BigBird computes."""
  from attention_scaling import density  # benchmarks/attention_scaling.py
  cfg = ModelConfig.from_preset("small", **BIGBIRD, dtype=dtype,
                                scan_layers=backend.auto_scan_layers())
  pairs = density(("bigbird", cfg.attention), source, False) * source ** 2
  tokens, seconds, compile_s, n = ours(cfg, 1, source, target, steps)
  flops = analytic_flops(cfg, 1, source, target, encoder_pairs=pairs)
  peak = matmul_peak(cfg, 1, source, target, max(steps, 3))
  return (f"small + BigBird encoder, 1 x ({source} + {target}), {n / 1e6:.1f}M parameters, "
          f"{pairs / source ** 2:.1%} of the encoder's pairs: {tokens:,.0f} tokens/s, "
          f"{seconds:.2f} s/step, {flops / 1e9:.0f} GFLOP/step, "
          f"{flops / seconds / 1e9:.0f} GFLOP/s = {flops / seconds / peak:.0%} of its GEMM "
          f"shapes' peak {peak / 1e9:.0f} GFLOP/s (compile {compile_s:.0f} s)")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--source", type=int, default=256)
  p.add_argument("--target", type=int, default=64)
  p.add_argument("--steps", type=int, default=3, help="timed steps per row (median)")
  p.add_argument("--presets", default="mini,small,base", help="presets after the T5-small rows")
  p.add_argument("--bigbird-length", type=int, default=16384,
                 help="the BigBird-encoder row's input length, batch 1 (0: no such row)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="compute dtype of our rows and of the measured peak")
  p.add_argument("--chip-peak-tflops", type=float, default=0.0,
                 help="the chip's nominal peak in --dtype (e.g. 989 for an H100/H200 in "
                      "bfloat16): adds MFU against it")
  p.add_argument("--no-peer", action="store_true", help="skip HF's PyTorch T5 (e.g. on a GPU)")
  p.add_argument("--no-parts", action="store_true", help="skip the forward/backward breakdown")
  args = p.parse_args()
  b, s, t = args.batch, args.source, args.target
  print(f"# {platform.node()}, {os.cpu_count()} CPUs, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}, {datetime.date.today()}; batch {b} x ({s} + {t}), "
        f"{args.dtype}")
  # Layers scanned or not as a run on this platform has them (backend.auto_scan_layers).
  scan = backend.auto_scan_layers()
  small = ModelConfig(**T5_SMALL, dtype=args.dtype, scan_layers=scan)
  rows = [("ours, T5-small shape", small)] + [
      (f"ours, preset {name}", ModelConfig.from_preset(name, dtype=args.dtype, scan_layers=scan))
      for name in args.presets.split(",") if name]
  peak = matmul_peak(small, b, s, t, max(args.steps, 3))
  header = "| model | parameters | tokens/s | s/step | GFLOP/step | GFLOP/s | of peak | compile s |"
  lines = [header, "|" + "---|" * 8]
  results = {}
  for name, cfg in rows:
    tokens, seconds, compile_s, n = ours(cfg, b, s, t, args.steps)
    flops = analytic_flops(cfg, b, s, t)
    results[name] = (tokens, flops / seconds)
    lines.append(f"| {name} | {n / 1e6:.1f}M | {tokens:,.0f} | {seconds:.2f} | "
                 f"{flops / 1e9:.0f} | {flops / seconds / 1e9:.0f} | "
                 f"{flops / seconds / peak:.0%} | {compile_s:.1f} |")
    if args.chip_peak_tflops:
      print(f"{name}: MFU {flops / seconds / (args.chip_peak_tflops * 1e12):.1%} of "
            f"{args.chip_peak_tflops:g} TFLOP/s ({args.dtype})", flush=True)
  theirs = None if args.no_peer else peer(b, s, t, args.steps)
  flops = analytic_flops(small, b, s, t)
  if theirs is None:
    why = "--no-peer" if args.no_peer else "torch or transformers not installed"
    lines.append(f"| HF PyTorch T5, T5-small shape | skipped: {why} | | | | | | |")
  else:
    lines.append(f"| HF PyTorch T5, T5-small shape | {theirs[2] / 1e6:.1f}M | "
                 f"{theirs[0]:,.0f} | {theirs[1]:.2f} | {flops / 1e9:.0f} | "
                 f"{flops / theirs[1] / 1e9:.0f} | {flops / theirs[1] / peak:.0%} | |")
  print("\n".join(lines))
  print(f"matmul peak (XLA dot, {args.dtype}, the T5-small step's GEMM shapes): "
        f"{peak / 1e9:.0f} GFLOP/s")
  if args.bigbird_length:
    print(bigbird_row(args.bigbird_length, t, args.steps, args.dtype))
  if not args.no_parts:
    parts = step_parts(small, b, s, t, args.steps)
    ratio = lambda name: parts[f"{name}forward+backward"] / parts[f"{name}forward"] - 1
    print("T5-small shape, ours: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
          + f"; backward / forward {ratio(''):.2f} (2.0 in FLOPs), encoder's "
          f"{ratio('encoder '):.2f}")
  fraction = results["ours, T5-small shape"][1] / peak
  print(f"{'PASS' if fraction >= TARGET_PEAK else 'FAIL'}: T5-small shape at {fraction:.0%} "
        f"of the matmul peak (target >= {TARGET_PEAK:.0%})")
  if theirs is not None:
    ratio = results["ours, T5-small shape"][0] / theirs[0]
    print(f"{'PASS' if ratio >= TARGET_PEER else 'FAIL'}: {ratio:.2f}x HF PyTorch T5's "
          f"tokens/s (target >= {TARGET_PEER}x)")


if __name__ == "__main__":
  main()
