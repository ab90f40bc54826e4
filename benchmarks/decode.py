"""Decoding throughput at the T5-small shape, next to HF transformers' PyTorch T5 in the same run.

  pip install -r benchmarks/requirements-decode.txt   # torch + transformers, for the peer
  python benchmarks/decode.py                          # CPU: batch 1 and 8; GPU/TPU: 1, 8, 64
  python benchmarks/decode.py --markdown --repeats 5
  python benchmarks/decode.py --quick                  # batch 1 and 8, greedy, 16 tokens

Both models have the T5-small shape (d_model 512, 6+6 layers, 8 heads of 64, ReLU d_ff 2048,
vocab 32128, tied embeddings), random weights, the same random input ids, and emit
exactly --new-tokens tokens per row (EOS is never chosen: ours gets eos_id -1, HF gets
min_new_tokens). Ours: the jitted lax.while_loop with a key/value cache (decode.py), its
parameters initialised once and each (weights, method, batch) compiled once. The peer:
`T5ForConditionalGeneration.generate` (KV cache on) under torch.inference_mode, on the
same device as ours (CUDA on a GPU; none on TPU) in the same dtype. The peer is skipped,
saying so, when torch or transformers are not installed.

On CPU the second peer is CTranslate2 (`pip install ctranslate2`), the CPU inference
engine, with the HF peer's random weights converted to float32 and to int8,
`Translator.translate_batch` on the same ids (as token strings), min/max decoding length
= --new-tokens. "ours int8" is our decoder on the same weights quantized by
model/quantize.py (int8 weights per output channel, int8 activations per row, int8
matmuls: what CTranslate2's int8 does); it is compared with CTranslate2 int8, our float32
decoder with the float32 peers (benchmarks/int8_accuracy.py: what int8 costs a trained
run). On GPU/TPU: bfloat16 (decode.inference_params) and float32, each against HF in the
same dtype. PASS/FAIL lines: ours >= --peer-target x HF at batch 8 and 64, greedy and beam4.
"""

import argparse
import datetime
import os
import platform
import time

import jax
import numpy as np

from refinedweb_jax import backend
from refinedweb_jax.model import decode, quantize
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder, count_params

T5_SMALL = dict(vocab_size=32128, d_model=512, num_heads=8, head_dim=64, d_ff=2048,
                num_encoder_layers=6, num_decoder_layers=6, gated_mlp=False, activation="relu",
                tie_embeddings=True)
SETTINGS = {"greedy": {}, "beam4": dict(beam_size=4, length_penalty=0.6),
            "sample": dict(temperature=1.0, top_k=50)}
WEIGHTS = ("float32", "bfloat16", "int8")
# Defaults per backend: CPU keeps the float32 / int8 comparison with CTranslate2.
DEFAULTS = {"cpu": dict(batches="1,8", methods="greedy,beam4,sample", weights="float32,int8"),
            "accelerator": dict(batches="1,8,64", methods="greedy,beam4",
                                weights="bfloat16,float32")}
QUICK = dict(batches="1,8", methods="greedy", new_tokens=16, input_length=32, repeats=1)


def _median_seconds(fn, repeats):
  fn()  # warm-up (compilation for ours)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


class Ours:
  """Our decoders at the T5-small shape: one random float32 initialisation, shared by every
  batch, method and weights variant ("float32", "bfloat16", "int8")."""

  def __init__(self):
    # Layers scanned or not as a run on this platform has them (backend.auto_scan_layers).
    self.models = {w: EncoderDecoder(ModelConfig(
        **T5_SMALL, dtype=w if w == "bfloat16" else "float32",
        scan_layers=backend.auto_scan_layers())) for w in WEIGHTS}
    dummy = jax.numpy.zeros((1, 8), jax.numpy.int32)
    self.params = {"float32": jax.jit(self.models["float32"].init)(
        jax.random.key(0), dummy, dummy[:, :4])["params"]}
    self.fns = {}

  def weights(self, name):
    if name not in self.params:
      f32 = self.params["float32"]
      self.params[name] = (jax.jit(quantize.quantize)(f32) if name == "int8" else
                           decode.inference_params(f32, self.models[name].cfg))
    return self.params[name]

  def tokens_per_second(self, inputs, method, new_tokens, repeats, weights="float32"):
    """(tokens/s, compile seconds) of one compiled decoder for this batch."""
    key = (weights, method, new_tokens)
    if key not in self.fns:
      settings = decode.Decoding(max_new_tokens=new_tokens, **SETTINGS[method])
      self.fns[key] = decode.make_decode_fn(self.models[weights], settings, eos_id=-1)
    params, inputs = self.weights(weights), jax.numpy.asarray(inputs)
    start = time.perf_counter()
    compiled = self.fns[key].lower(params, inputs, jax.random.key(0)).compile()
    compile_s = time.perf_counter() - start
    run = lambda: jax.block_until_ready(compiled(params, inputs, jax.random.key(0)))
    out = np.asarray(run())
    assert out.shape == (inputs.shape[0], new_tokens), out.shape
    return inputs.shape[0] * new_tokens / _median_seconds(run, repeats), compile_s


def hf_t5_config(tie_embeddings: bool = True, **extra):
  """transformers.T5Config at the T5-small shape (the peers' model)."""
  import transformers
  return transformers.T5Config(
      vocab_size=T5_SMALL["vocab_size"], d_model=512, d_kv=64, d_ff=2048, num_layers=6,
      num_decoder_layers=6, num_heads=8, feed_forward_proj="relu",
      tie_word_embeddings=tie_embeddings, decoder_start_token_id=0, pad_token_id=0,
      eos_token_id=1, **extra)


_HF_MODELS = {}  # (device, dtype) -> the peer's model, built once per run


def peer_device():
  """The torch device on ours' device ("cpu", "cuda"), or None (TPU, or no CUDA torch)."""
  if jax.default_backend() == "cpu":
    return "cpu"
  try:
    import torch
  except ImportError:
    return None
  return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else None


def peer(inputs, method, new_tokens, repeats, weights="float32"):
  """tokens/s of HF transformers' T5ForConditionalGeneration.generate, or None if missing."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  device = peer_device()
  if device is None:
    return None
  if (device, weights) not in _HF_MODELS:
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    model = transformers.T5ForConditionalGeneration(hf_t5_config()).eval()
    _HF_MODELS[device, weights] = model.to(device=device, dtype=getattr(torch, weights))
  model = _HF_MODELS[device, weights]
  ids = torch.from_numpy(inputs.astype(np.int64)).to(device)
  kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=True)
  s = SETTINGS[method]
  if method == "beam4":
    kwargs.update(num_beams=4, length_penalty=s["length_penalty"], do_sample=False)
  elif method == "sample":
    kwargs.update(do_sample=True, temperature=s["temperature"], top_k=s["top_k"])
  else:
    kwargs.update(do_sample=False, num_beams=1)

  def run():
    with torch.inference_mode():
      out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    if device == "cuda":
      torch.cuda.synchronize()
    assert out.shape[1] == new_tokens + 1, out.shape  # + the decoder start token
  return inputs.shape[0] * new_tokens / _median_seconds(run, repeats)


_CT2_MODELS = {}  # compute type -> converted model directory, made once per run


class _IdVocabulary:
  """A stand-in tokenizer for CTranslate2's converter: token i is "t<i>" (pad, eos, unk as T5)."""
  pad_token, eos_token, unk_token = "<pad>", "</s>", "<unk>"

  def __init__(self, size: int):
    self.tokens = [self.pad_token, self.eos_token, self.unk_token] + [
        f"t{i}" for i in range(3, size)]

  def get_vocab(self):
    return {t: i for i, t in enumerate(self.tokens)}

  def convert_ids_to_tokens(self, i):
    return self.tokens[i]


def ctranslate2_peer(inputs, method, new_tokens, repeats, compute_type: str):
  """tokens/s of CTranslate2 on the HF peer's weights (float32 or int8), or None if missing."""
  try:
    import ctranslate2
    import torch
    import transformers
  except ImportError:
    return None
  import tempfile
  if compute_type not in _CT2_MODELS:
    torch.manual_seed(0)  # the HF peer's weights
    folder = tempfile.mkdtemp(prefix="ct2_")
    transformers.T5ForConditionalGeneration(hf_t5_config()).save_pretrained(
        os.path.join(folder, "hf"))
    vocabulary = _IdVocabulary(T5_SMALL["vocab_size"])

    class Converter(ctranslate2.converters.TransformersConverter):
      def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
        return vocabulary
    Converter(os.path.join(folder, "hf")).convert(
        os.path.join(folder, compute_type), quantization=compute_type, force=True)
    _CT2_MODELS[compute_type] = os.path.join(folder, compute_type)
  translator = ctranslate2.Translator(_CT2_MODELS[compute_type], device="cpu",
                                      compute_type=compute_type, intra_threads=os.cpu_count())
  tokens = [[f"t{i}" for i in row] for row in inputs.tolist()]
  s = SETTINGS[method]
  kwargs = dict(max_decoding_length=new_tokens, min_decoding_length=new_tokens,
                beam_size=1)
  if method == "beam4":
    kwargs.update(beam_size=4, length_penalty=s["length_penalty"])
  elif method == "sample":
    kwargs.update(sampling_topk=s["top_k"], sampling_temperature=s["temperature"])

  def run():
    out = translator.translate_batch(tokens, **kwargs)
    assert len(out[0].hypotheses[0]) == new_tokens, len(out[0].hypotheses[0])
  return inputs.shape[0] * new_tokens / _median_seconds(run, repeats)


def _decoder_weights(rng, layers: int):
  """Random float32 weights with the decoder step's matmul shapes: per layer self-attention
  q/k/v/out and cross-attention q/out (512x512 each), the MLP (512x2048, 2048x512); then the
  tied 32128x512 output embedding."""
  d, f = T5_SMALL["d_model"], T5_SMALL["d_ff"]
  w = lambda *shape: (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
  return [(w(6, d, d), w(d, f), w(f, d)) for _ in range(layers)], w(T5_SMALL["vocab_size"], d)


def matmul_floor(batch, new_tokens, repeats):
  """Seconds per decoding step spent in the decoder's weight matmuls alone, for XLA and
  (if installed) torch: the same shapes, distinct weights per layer, `new_tokens` dependent
  steps. No step of a decoder can be faster than its weight matmuls."""
  layers, table = _decoder_weights(np.random.default_rng(0), T5_SMALL["num_decoder_layers"])
  x = np.random.default_rng(1).standard_normal((batch, T5_SMALL["d_model"])).astype(np.float32)
  jnp = jax.numpy

  def step(_, h):
    for attn, wi, wo in layers:
      for j in range(6):
        h = h @ attn[j]
      h = jnp.maximum(h @ wi, 0) @ wo
    logits = jax.lax.dot_general(h, table, (((1,), (1,)), ((), ())))
    return h + 1e-6 * logits[:, : h.shape[1]]
  layers, table = jax.device_put((layers, table))
  run_xla = jax.jit(lambda x: jax.lax.fori_loop(0, new_tokens, step, x))
  result = {"ours": _median_seconds(lambda: jax.block_until_ready(run_xla(x)), repeats)}
  try:
    import torch
  except ImportError:
    return {k: v / new_tokens for k, v in result.items()}
  t_layers = [tuple(torch.from_numpy(np.array(a)) for a in layer) for layer in layers]
  t_table = torch.from_numpy(np.array(table))

  def run_torch():
    with torch.inference_mode():
      h = torch.from_numpy(x)
      for _ in range(new_tokens):
        for attn, wi, wo in t_layers:
          for j in range(6):
            h = h @ attn[j]
          h = torch.relu(h @ wi) @ wo
        h = h + 1e-6 * torch.nn.functional.linear(h, t_table)[:, : h.shape[1]]
  result["HF"] = _median_seconds(run_torch, repeats)
  return {k: v / new_tokens for k, v in result.items()}


def encoder_seconds(ours, inputs, repeats):
  """Seconds of our encoder plus the cross-attention key/value projections for one batch,
  the part of a decode call that does not repeat per step."""
  model = ours.models["float32"]

  def start(params, inputs):
    enc = model.apply({"params": params}, inputs, method="encode")
    return decode.init_cache(model, params, enc, inputs, max_length=1)
  run = jax.jit(start)
  params = ours.weights("float32")
  return _median_seconds(lambda: jax.block_until_ready(run(params, inputs)), repeats)


def cpu_report(args, rows, ours, rng):
  """The CPU table and checks: float32 against HF and CTranslate2, int8 against CT2 int8."""
  cell = lambda x: f"{x:.0f}" if x else "skipped"
  ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"
  if args.markdown:
    print("\n| batch | decoding | ours tok/s | ours int8 tok/s | HF PyTorch tok/s | "
          "CTranslate2 float32 | CTranslate2 int8 | float32: ours / HF, CT2 | "
          "int8: ours / CT2 | ours compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
      o, o8 = r["ours"].get("float32", (0, 0)), r["ours"].get("int8", (0, 0))
      h, ct2 = r["hf"].get("float32"), r["ct2"]
      print(f"| {r['batch']} | {r['method']} | {cell(o[0])} | {cell(o8[0])} | {cell(h)} | "
            f"{cell(ct2['float32'])} | {cell(ct2['int8'])} | {ratio(o[0], h)}, "
            f"{ratio(o[0], ct2['float32'])} | {ratio(o8[0], ct2['int8'])} | {o[1]:.1f} |")
  # Like for like: our float32 decoder against the float32 peers, our int8 one against
  # CTranslate2's int8.
  behind = [r for r in rows if any(
      x and x > r["ours"].get("float32", (0,))[0] for x in (r["hf"].get("float32"),
                                                          r["ct2"]["float32"]))
      or (r["ct2"]["int8"] or 0) > r["ours"].get("int8", (np.inf,))[0]]
  measured = any(r["hf"].get("float32") or r["ct2"]["float32"] or r["ct2"]["int8"]
                 for r in rows)
  print("peers: none measured (--no-peers, or none installed)" if not measured else
        ("PASS: ahead of every peer in every row (float32 vs float32, int8 vs int8)"
         if not behind else "FAIL: behind a peer at " +
         ", ".join(f"batch {r['batch']} {r['method']}" for r in behind)))
  target = [r for r in rows if r["batch"] == 8 and r["method"] == "greedy"]
  if not target or not target[0]["hf"].get("float32") or "float32" not in target[0]["ours"]:
    print("target: not checked (needs greedy at batch 8 and torch + transformers installed)")
    return
  ours_tps, peer_tps = target[0]["ours"]["float32"][0], target[0]["hf"]["float32"]
  print(f"target greedy batch 8 ours/HF >= {args.target}: {ours_tps / peer_tps:.2f}x "
        f"{'PASS' if ours_tps / peer_tps >= args.target else 'FAIL'}")
  floor = matmul_floor(8, args.new_tokens, args.repeats)
  inputs = rng.integers(2, T5_SMALL["vocab_size"], (8, args.input_length)).astype(np.int32)
  encoder = encoder_seconds(ours, jax.numpy.asarray(inputs), args.repeats) / args.new_tokens
  best = 8 / (floor["ours"] + encoder)
  print(f"floor at batch 8, per generated token step: the decoder's weight matmuls alone "
        f"(same shapes) {floor['ours'] * 1e3:.1f} ms with XLA"
        + (f" ({floor['HF'] * 1e3:.1f} ms with torch)" if "HF" in floor else "")
        + f", plus the encoder's share {encoder * 1e3:.1f} ms; measured steps: ours "
        f"{1e3 * 8 / ours_tps:.1f} ms, HF {1e3 * 8 / peer_tps:.1f} ms. With these matmul "
        f"kernels ours cannot exceed {best:.0f} tok/s = {best / peer_tps:.2f}x HF")
  share = ours_tps / best
  print(f"{'PASS' if share >= 0.9 else 'FAIL'}: greedy batch 8 at {share:.0%} of the floor's "
        "tokens/s (target >= 90%)")


def peer_targets(args, rows):
  """PASS/FAIL per batch 8 and 64, greedy and beam 4, weights: ours >= peer_target x HF."""
  checked = 0
  for r in rows:
    if r["batch"] not in (8, 64) or r["method"] not in ("greedy", "beam4"):
      continue
    for weights, (tps, _) in r["ours"].items():
      hf = r["hf"].get(weights)
      if hf:
        checked += 1
        print(f"{'PASS' if tps >= args.peer_target * hf else 'FAIL'}: batch {r['batch']} "
              f"{r['method']} {weights} ours/HF {tps / hf:.2f}x (target >= "
              f"{args.peer_target:g}x)")
  if not checked:
    print(f"peer target >= {args.peer_target:g}x HF at batch 8 and 64: not checked (needs "
          "greedy or beam4 at batch 8 or 64, and HF on this device)")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batches", help="comma-separated (default: 1,8 on CPU, 1,8,64 elsewhere)")
  p.add_argument("--methods", help=f"comma-separated, of: {', '.join(SETTINGS)} (default: "
                 "all on CPU, greedy,beam4 elsewhere)")
  p.add_argument("--weights", help=f"comma-separated, of: {', '.join(WEIGHTS)} (default: "
                 "float32,int8 on CPU, bfloat16,float32 elsewhere)")
  p.add_argument("--input-length", type=int, default=64)
  p.add_argument("--new-tokens", type=int, default=64)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--quick", action="store_true",
                 help="batches 1,8, greedy, 32 input and 16 new tokens, 1 repeat (these flags'"
                 " values are replaced; CPU: about a minute)")
  p.add_argument("--target", type=float, default=2.0,
                 help="required ours / HF tokens/s for greedy at batch 8 (CPU)")
  p.add_argument("--peer-target", type=float, default=3.0,
                 help="required ours / HF tokens/s at batch 8 and 64, greedy and beam4")
  p.add_argument("--markdown", action="store_true")
  p.add_argument("--no-peers", action="store_true", help="ours only")
  args = p.parse_args()
  on_cpu = jax.default_backend() == "cpu"
  for name, value in DEFAULTS["cpu" if on_cpu else "accelerator"].items():
    setattr(args, name, getattr(args, name) or value)
  for name, value in (QUICK if args.quick else {}).items():
    setattr(args, name, value)
  methods, weights = args.methods.split(","), args.weights.split(",")
  for kind, values, allowed in (("method", methods, SETTINGS), ("weights", weights, WEIGHTS)):
    for bad in set(values) - set(allowed):
      p.error(f"unknown {kind} {bad!r}; allowed: {', '.join(allowed)}")
  rng = np.random.default_rng(0)
  device = "" if on_cpu else f", {jax.devices()[0].device_kind}"
  print(f"# decode benchmark {datetime.date.today()} on {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__} ({jax.default_backend()}{device}), "
        f"{args.input_length} input tokens, {args.new_tokens} new tokens, {', '.join(weights)}")
  if not args.no_peers and peer_device() is None:
    print("# HF peer: skipped, no torch device here (TPU, or torch without CUDA)")
  ours, rows = Ours(), []
  for batch in map(int, args.batches.split(",")):
    inputs = rng.integers(2, T5_SMALL["vocab_size"], (batch, args.input_length)).astype(np.int32)
    for method in methods:
      r = dict(batch=batch, method=method, ours={}, hf={}, ct2=dict(float32=None, int8=None))
      for w in weights:
        r["ours"][w] = ours.tokens_per_second(inputs, method, args.new_tokens, args.repeats, w)
      for w in weights:  # after ours: torch's idle threads keep spinning a while
        if not args.no_peers and w != "int8":
          r["hf"][w] = peer(inputs, method, args.new_tokens, args.repeats, w)
      if on_cpu and not args.no_peers:
        r["ct2"] = {t: ctranslate2_peer(inputs, method, args.new_tokens, args.repeats, t)
                    for t in ("float32", "int8")}
      rows.append(r)
      parts = []
      for w, (tps, compile_s) in r["ours"].items():
        hf = r["hf"].get(w)
        parts.append(f"ours {w} {tps:.0f} tok/s (compile {compile_s:.1f} s)" + (
            "" if w == "int8" or args.no_peers else f", HF {hf or 0:.0f} tok/s -> " +
            (f"{tps / hf:.2f}x" if hf else "peer skipped")))
      if on_cpu and not args.no_peers:
        parts.append(f"CTranslate2 float32 {r['ct2']['float32'] or 0:.0f}, "
                     f"int8 {r['ct2']['int8'] or 0:.0f} tok/s")
      print(f"batch {batch} {method}: " + "; ".join(parts), flush=True)
  print(f"# model: {count_params(ours.params['float32']) / 1e6:.1f}M parameters")
  if on_cpu:
    cpu_report(args, rows, ours, rng)
  elif args.markdown:
    print("\n| batch | decoding | weights | ours tok/s | HF PyTorch tok/s | ours / HF | "
          "ours compile s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
      for w, (tps, compile_s) in r["ours"].items():
        hf = r["hf"].get(w)
        print(f"| {r['batch']} | {r['method']} | {w} | {tps:.0f} | "
              f"{f'{hf:.0f}' if hf else 'skipped'} | {f'{tps / hf:.2f}x' if hf else '-'} | "
              f"{compile_s:.1f} |")
  peer_targets(args, rows)


if __name__ == "__main__":
  main()
