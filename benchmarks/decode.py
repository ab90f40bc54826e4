"""Decoding throughput at the T5-small shape, next to HF transformers' PyTorch T5 in the same run.

  pip install -r benchmarks/requirements-decode.txt   # torch + transformers, for the peer
  python benchmarks/decode.py                          # batch 1 and 8, 64 new tokens
  python benchmarks/decode.py --markdown --repeats 5

Both models have the T5-small shape (d_model 512, 6+6 layers, 8 heads of 64, ReLU d_ff 2048,
vocab 32128, tied embeddings), random weights, float32, the same random input ids, and emit
exactly --new-tokens tokens per row (EOS is never chosen: ours gets eos_id -1, HF gets
min_new_tokens). Ours: the jitted lax.while_loop with a key/value cache (decode.py). The peer:
`T5ForConditionalGeneration.generate` (KV cache on) under torch.inference_mode. The peer is
skipped, saying so, when torch or transformers are not installed. The second peer:
CTranslate2 (`pip install ctranslate2`), the CPU inference engine, with the HF peer's
random weights converted to float32 and to int8, `Translator.translate_batch` on the
same ids (as token strings), min/max decoding length = --new-tokens. "ours int8" is our
decoder on the same weights quantized by model/quantize.py (int8 weights per output
channel, int8 activations per row, int8 matmuls: what CTranslate2's int8 does); it is
compared with CTranslate2 int8, our float32 decoder with the float32 peers.
benchmarks/int8_accuracy.py measures what int8 costs a trained run.
"""

import argparse
import datetime
import os
import platform
import time

import jax
import numpy as np

from refinedweb_jax.model import decode, quantize
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder, count_params

T5_SMALL = dict(vocab_size=32128, d_model=512, num_heads=8, head_dim=64, d_ff=2048,
                num_encoder_layers=6, num_decoder_layers=6, gated_mlp=False, activation="relu",
                tie_embeddings=True)
SETTINGS = {"greedy": {}, "beam4": dict(beam_size=4, length_penalty=0.6),
            "sample": dict(temperature=1.0, top_k=50)}


def _median_seconds(fn, repeats):
  fn()  # warm-up (compilation for ours)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def t5_small(inputs):
  """Our model at the T5-small shape with random float32 weights: (model, params)."""
  model = EncoderDecoder(ModelConfig(**T5_SMALL))
  return model, model.init(jax.random.key(0), inputs[:1, :8], inputs[:1, :4])["params"]


def ours(inputs, method, new_tokens, repeats, weights="float32"):
  """(tokens/s, compile seconds, params) of our cached decoder; weights "int8" quantizes
  them first (model/quantize.py)."""
  model, params = t5_small(inputs)
  if weights == "int8":
    params = jax.jit(quantize.quantize)(params)
  settings = decode.Decoding(max_new_tokens=new_tokens, **SETTINGS[method])
  fn = decode.make_decode_fn(model, settings, eos_id=-1)
  inputs = jax.numpy.asarray(inputs)
  start = time.perf_counter()
  compiled = fn.lower(params, inputs, jax.random.key(0)).compile()
  compile_s = time.perf_counter() - start
  run = lambda: jax.block_until_ready(compiled(params, inputs, jax.random.key(0)))
  out = np.asarray(run())
  assert out.shape == (inputs.shape[0], new_tokens), out.shape
  return inputs.shape[0] * new_tokens / _median_seconds(run, repeats), compile_s, params


def hf_t5_config(tie_embeddings: bool = True, **extra):
  """transformers.T5Config at the T5-small shape (the peers' model)."""
  import transformers
  return transformers.T5Config(
      vocab_size=T5_SMALL["vocab_size"], d_model=512, d_kv=64, d_ff=2048, num_layers=6,
      num_decoder_layers=6, num_heads=8, feed_forward_proj="relu",
      tie_word_embeddings=tie_embeddings, decoder_start_token_id=0, pad_token_id=0,
      eos_token_id=1, **extra)


def peer(inputs, method, new_tokens, repeats):
  """tokens/s of HF transformers' T5ForConditionalGeneration.generate, or None if missing."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  model = transformers.T5ForConditionalGeneration(hf_t5_config()).eval()
  ids = torch.from_numpy(inputs.astype(np.int64))
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


def encoder_seconds(inputs, repeats):
  """Seconds of our encoder plus the cross-attention key/value projections for one batch,
  the part of a decode call that does not repeat per step."""
  model, params = t5_small(inputs)

  def start(params, inputs):
    enc = model.apply({"params": params}, inputs, method="encode")
    return decode.init_cache(model, params, enc, inputs, max_length=1)
  run = jax.jit(start)
  return _median_seconds(lambda: jax.block_until_ready(run(params, inputs)), repeats)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batches", default="1,8")
  p.add_argument("--methods", default="greedy,beam4,sample",
                 help=f"comma-separated, of: {', '.join(SETTINGS)}")
  p.add_argument("--input-length", type=int, default=64)
  p.add_argument("--new-tokens", type=int, default=64)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--target", type=float, default=2.0,
                 help="required ours / HF tokens/s for greedy at batch 8")
  p.add_argument("--markdown", action="store_true")
  p.add_argument("--no-peers", action="store_true",
                 help="ours only (e.g. on a GPU, where the CPU peers say nothing)")
  args = p.parse_args()
  methods = args.methods.split(",")
  for m in methods:
    if m not in SETTINGS:
      p.error(f"unknown method {m!r}; allowed: {', '.join(SETTINGS)}")
  rng = np.random.default_rng(0)
  print(f"# decode benchmark {datetime.date.today()} on {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__} ({jax.default_backend()}), "
        f"{args.input_length} input tokens, {args.new_tokens} new tokens, float32")
  rows, params_note = [], ""
  for batch in map(int, args.batches.split(",")):
    inputs = rng.integers(2, T5_SMALL["vocab_size"], (batch, args.input_length)).astype(np.int32)
    for method in methods:
      ours_tps, compile_s, params = ours(inputs, method, args.new_tokens, args.repeats)
      params_note = f"{count_params(params) / 1e6:.1f}M parameters"
      int8_tps = ours(inputs, method, args.new_tokens, args.repeats, "int8")[0]
      peer_tps = None if args.no_peers else peer(inputs, method, args.new_tokens, args.repeats)
      ct2 = {t: None if args.no_peers else
             ctranslate2_peer(inputs, method, args.new_tokens, args.repeats, t)
             for t in ("float32", "int8")}
      rows.append((batch, method, ours_tps, compile_s, peer_tps, ct2, int8_tps))
      ratio = f"{ours_tps / peer_tps:.2f}x" if peer_tps else "peer skipped"
      print(f"batch {batch} {method}: ours {ours_tps:.0f} tok/s (compile {compile_s:.1f} s), "
            f"ours int8 {int8_tps:.0f} tok/s, "
            f"HF {peer_tps or 0:.0f} tok/s -> {ratio}; CTranslate2 float32 "
            f"{ct2['float32'] or 0:.0f}, int8 {ct2['int8'] or 0:.0f} tok/s", flush=True)
  print(f"# model: {params_note}")
  cell = lambda x: f"{x:.0f}" if x else "skipped"
  if args.markdown:
    print("\n| batch | decoding | ours tok/s | ours int8 tok/s | HF PyTorch tok/s | "
          "CTranslate2 float32 | CTranslate2 int8 | float32: ours / HF, CT2 | "
          "int8: ours / CT2 | ours compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"
    for batch, method, o, c, h, ct2, o8 in rows:
      print(f"| {batch} | {method} | {o:.0f} | {o8:.0f} | {cell(h)} | {cell(ct2['float32'])} | "
            f"{cell(ct2['int8'])} | {ratio(o, h)}, {ratio(o, ct2['float32'])} | "
            f"{ratio(o8, ct2['int8'])} | {c:.1f} |")
  # Like for like: our float32 decoder against the float32 peers, our int8 one against
  # CTranslate2's int8.
  behind = [(b, m) for b, m, o, _, h, ct2, o8 in rows
            if any(x and x > o for x in (h, ct2["float32"])) or (ct2["int8"] or 0) > o8]
  print(("PASS: ahead of every peer in every row (float32 vs float32, int8 vs int8)"
         if not behind else
         "FAIL: behind a peer at " + ", ".join(f"batch {b} {m}" for b, m in behind)))
  target = [(o, h) for b, m, o, _, h, _, _ in rows if b == 8 and m == "greedy"]
  if not target or target[0][1] is None:
    print("target: not checked (needs greedy at batch 8 and torch + transformers installed)")
  else:
    ours_tps, peer_tps = target[0]
    ratio = ours_tps / peer_tps
    print(f"target greedy batch 8 ours/HF >= {args.target}: {ratio:.2f}x "
          f"{'PASS' if ratio >= args.target else 'FAIL'}")
    floor = matmul_floor(8, args.new_tokens, args.repeats)
    inputs = rng.integers(2, T5_SMALL["vocab_size"], (8, args.input_length)).astype(np.int32)
    encoder = encoder_seconds(jax.numpy.asarray(inputs), args.repeats) / args.new_tokens
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


if __name__ == "__main__":
  main()
