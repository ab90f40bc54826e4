"""The T5 family (T5 v1.0, v1.1, Flan-T5, mT5) in Hugging Face's format <-> this model.

A Hugging Face T5 is this model with model.position="t5_bias" (bucketed relative
bias, one table per stack), scale_attention=False (T5 folds 1/sqrt(d) into its
initialisation), T5's MLP (ReLU, or gated GELU with the tanh approximation) and
logits scaled by d_model^-0.5 when the embedding is tied. Weight names and layouts:

  shared.weight [V, D]                         token_embedding/embedding
  {en,de}coder.block.i.layer.0.SelfAttention   {en,de}coder_i/(self_)attention
      .q/.k/.v.weight [H*K, D], .o.weight [D, H*K]    qkv [D, 3, H, K], out [H, K, D]
      .relative_attention_bias.weight [N, H] (block 0)  {en,de}coder_relative_bias [N, H]
  decoder.block.i.layer.1.EncDecAttention      decoder_i/cross_attention: query [D, H, K],
      .q, .k/.v                                    key_value [D, 2, H, K]
  ....DenseReluDense.wi / wi_0, wi_1 [F, D], wo [D, F]  mlp/wi_0 [D, F] / wi [D, 2, F], wo [F, D]
  ....layer.j.layer_norm.weight, {en,de}coder.final_layer_norm.weight   .../scale
  lm_head.weight [V, D] (untied)               logits_dense/kernel [D, V]

Errors are one line and name what is wrong: another architecture, a missing weight
file or tensor, a shape that differs (the parameter and both shapes), a tokenizer
that does not fit the vocabulary.
"""

import json
import math
import os

import jax
import numpy as np

from refinedweb_jax.model import scan

ARCHITECTURES = ("T5ForConditionalGeneration", "MT5ForConditionalGeneration")
MODEL_TYPES = ("t5", "mt5")
EXTRA_IDS = 100  # T5's sentinels <extra_id_0> .. <extra_id_99>, after the pieces
# Hugging Face's feed_forward_proj -> (gated_mlp, activation) of this model.
FEED_FORWARD = {"relu": (False, "relu"), "gated-relu": (True, "relu"),
                "gelu": (False, "gelu_exact"), "gated-gelu": (True, "gelu"),
                "gelu_new": (False, "gelu"), "silu": (False, "silu"),
                "gated-silu": (True, "silu")}


def read_config(model_dir: str) -> dict:
  """config.json of a Hugging Face T5-family model directory, checked."""
  path = os.path.join(model_dir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{model_dir!r} is not a Hugging Face model directory: no config.json")
  with open(path) as f:
    hf = json.load(f)
  found = hf.get("architectures") or [hf.get("model_type", "unknown")]
  if hf.get("model_type") not in MODEL_TYPES or not set(found) & set(ARCHITECTURES):
    raise ValueError(f"{path} describes {', '.join(map(str, found))} (model_type "
                     f"{hf.get('model_type')!r}); supported: {', '.join(ARCHITECTURES)}")
  missing = [k for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")
             if k not in hf]
  if missing:
    raise ValueError(f"{path} lacks {', '.join(missing)}: not a complete T5 config")
  if hf.get("feed_forward_proj", "relu") not in FEED_FORWARD:
    raise ValueError(f"{path}: feed_forward_proj {hf['feed_forward_proj']!r} is not supported; "
                     f"allowed: {', '.join(FEED_FORWARD)}")
  return hf


def model_fields(hf: dict) -> dict:
  """The ModelConfig fields of a Hugging Face T5 config."""
  gated, activation = FEED_FORWARD[hf.get("feed_forward_proj", "relu")]
  layers = hf["num_layers"]
  return dict(
      vocab_size=hf["vocab_size"], d_model=hf["d_model"], num_heads=hf["num_heads"],
      head_dim=hf["d_kv"], d_ff=hf["d_ff"], num_encoder_layers=layers,
      num_decoder_layers=hf.get("num_decoder_layers") or layers,
      dropout_rate=float(hf.get("dropout_rate", 0.1)), gated_mlp=gated, activation=activation,
      tie_embeddings=tied(hf),
      norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)), position="t5_bias",
      relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
      relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
      scale_attention=False)


def tied(hf: dict) -> bool:
  """Whether logits use the input embedding, scaled by d_model^-0.5 (T5 v1.0), or their own
  matrix (v1.1, Flan-T5, mT5). transformers 5 writes tie_word_embeddings=true for both and
  says which by scale_decoder_outputs."""
  return bool(hf.get("tie_word_embeddings", True)) and bool(hf.get("scale_decoder_outputs", True))


def hf_config(cfg) -> dict:
  """config.json for a ModelConfig with T5's positions (export)."""
  ff = {v: k for k, v in FEED_FORWARD.items()}.get((cfg.gated_mlp, cfg.activation))
  if ff is None:
    raise ValueError(f"a {'gated ' if cfg.gated_mlp else ''}{cfg.activation} MLP has no Hugging "
                     f"Face T5 equivalent; allowed: {', '.join(FEED_FORWARD)}")
  return {
      "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
      "vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "d_kv": cfg.head_dim,
      "d_ff": cfg.d_ff, "num_layers": cfg.num_encoder_layers,
      "num_decoder_layers": cfg.num_decoder_layers, "num_heads": cfg.num_heads,
      "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
      "relative_attention_max_distance": cfg.relative_attention_max_distance,
      "dropout_rate": cfg.dropout_rate, "layer_norm_epsilon": cfg.norm_epsilon,
      "initializer_factor": 1.0, "feed_forward_proj": ff,
      "tie_word_embeddings": cfg.tie_embeddings, "is_encoder_decoder": True,
      "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0, "use_cache": True,
      "torch_dtype": "float32"}


def check_tokenizer(pieces: int, vocab_size: int, where: str):
  """T5's vocabulary is the tokenizer's pieces, 100 extra ids and padding to a multiple of 128."""
  most = -(-(pieces + EXTRA_IDS) // 128) * 128
  if not pieces <= vocab_size <= most:
    raise ValueError(
        f"tokenizer {where} has {pieces} pieces but the model's vocab_size is {vocab_size}: a T5 "
        f"vocabulary is the pieces, then {EXTRA_IDS} extra ids (<extra_id_0..99>) and padding to "
        f"a multiple of 128 (here {pieces}..{most}); use the spiece.model saved with this model")


class Weights:
  """A model directory's tensors by Hugging Face name, read one at a time as NumPy arrays."""

  def __init__(self, model_dir: str):
    self.model_dir = model_dir
    self._files = {}  # tensor name -> file
    index = os.path.join(model_dir, "model.safetensors.index.json")
    single = os.path.join(model_dir, "model.safetensors")
    torch_bin = os.path.join(model_dir, "pytorch_model.bin")
    if os.path.isfile(index):
      with open(index) as f:
        self._files = {k: os.path.join(model_dir, v) for k, v in json.load(f)["weight_map"].items()}
    elif os.path.isfile(single):
      names = set(_safetensors_header(single)[0]) - {"__metadata__"}
      self._files = dict.fromkeys(names, single)
    elif os.path.isfile(torch_bin):
      self._torch = _read_torch(torch_bin)
      self._files = dict.fromkeys(self._torch, torch_bin)
    else:
      raise FileNotFoundError(f"no weights in {model_dir!r}: expected model.safetensors, "
                              "model.safetensors.index.json or pytorch_model.bin")

  def __contains__(self, name: str) -> bool:
    return name in self._files

  def __getitem__(self, name: str) -> np.ndarray:
    if name not in self._files:
      raise ValueError(f"{self.model_dir}: weight {name!r} is missing")
    path = self._files[name]
    if path.endswith(".bin"):
      return self._torch[name]
    header, start = _safetensors_header(path)
    if header[name]["dtype"] == "BF16":  # NumPy has no bfloat16: map the bytes as ml_dtypes'
      import ml_dtypes
      begin, end = header[name]["data_offsets"]
      return np.memmap(path, dtype=ml_dtypes.bfloat16, mode="r", offset=start + begin,
                       shape=tuple(header[name]["shape"]))
    from safetensors import safe_open
    with safe_open(path, framework="np") as f:
      return f.get_tensor(name)


def _safetensors_header(path: str):
  """(the file's JSON header, where its data starts): 8 bytes of header size, then the header."""
  with open(path, "rb") as f:
    size = int.from_bytes(f.read(8), "little")
    return json.loads(f.read(size)), 8 + size


def _read_torch(path: str) -> dict:
  try:
    import torch
  except ImportError as e:
    raise ValueError(f"{path} is a PyTorch file and needs torch installed; or save the model "
                     "as safetensors (save_pretrained's default)") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.float().numpy() for k, v in state.items()}


def _attention_names(stack: str, i: int, part: str) -> str:
  layer, module = {"attention": (0, "SelfAttention"), "self_attention": (0, "SelfAttention"),
                   "cross_attention": (1, "EncDecAttention")}[part]
  return f"{stack}.block.{i}.layer.{layer}.{module}"


def _layer_norms(stack: str) -> dict:
  """Our norm names in a layer -> the Hugging Face layer index holding that norm."""
  if stack == "encoder":
    return {"pre_attention_norm": 0, "pre_mlp_norm": 1}
  return {"pre_self_attention_norm": 0, "pre_cross_attention_norm": 1, "pre_mlp_norm": 2}


def name_map(cfg) -> dict:
  """Our parameter path (a tuple) -> (Hugging Face names, to_hf, from_hf) for a ModelConfig.

  to_hf maps our array to a tuple of Hugging Face arrays, one per name; from_hf the
  reverse (its arguments in the names' order). A fused projection maps to several names:
  qkv to q, k, v; key_value to k, v; a gated MLP's wi to wi_0, wi_1.
  """
  h, k, d = cfg.num_heads, cfg.head_dim, cfg.d_model
  one = lambda f: (lambda x: (f(x),))
  same = (one(_same), _same)
  out = {("token_embedding", "embedding"): (("shared.weight",), *same)}
  q_in = (one(lambda x: x.reshape(d, h * k).T), lambda x: x.T.reshape(d, h, k))
  o_in = (one(lambda x: x.reshape(h * k, d).T), lambda x: x.T.reshape(h, k, d))
  for stack in ("encoder", "decoder"):
    for i in range(getattr(cfg, f"num_{stack}_layers")):
      ours = f"{stack}_{i}"
      parts = ("attention",) if stack == "encoder" else ("self_attention", "cross_attention")
      for part in parts:
        hf = _attention_names(stack, i, part)
        if part == "cross_attention":
          out[(ours, part, "query", "kernel")] = ((f"{hf}.q.weight",), *q_in)
          out[(ours, part, "key_value", "kernel")] = (
              (f"{hf}.k.weight", f"{hf}.v.weight"), *_stacked(q_in, 2, -3))
        else:
          out[(ours, part, "qkv", "kernel")] = (
              tuple(f"{hf}.{s}.weight" for s in "qkv"), *_stacked(q_in, 3, -3))
        out[(ours, part, "out", "kernel")] = ((f"{hf}.o.weight",), *o_in)
      for norm, layer in _layer_norms(stack).items():
        out[(ours, norm, "scale")] = (
            (f"{stack}.block.{i}.layer.{layer}.layer_norm.weight",), *same)
      ff = f"{stack}.block.{i}.layer.{len(_layer_norms(stack)) - 1}.DenseReluDense"
      if cfg.gated_mlp:
        out[(ours, "mlp", "wi", "kernel")] = (
            (f"{ff}.wi_0.weight", f"{ff}.wi_1.weight"), *_stacked((one(_t), _t), 2, -2))
      else:
        out[(ours, "mlp", "wi_0", "kernel")] = ((f"{ff}.wi.weight",), one(_t), _t)
      out[(ours, "mlp", "wo", "kernel")] = ((f"{ff}.wo.weight",), one(_t), _t)
    out[(f"{stack}_norm", "scale")] = ((f"{stack}.final_layer_norm.weight",), *same)
    out[(f"{stack}_relative_bias",)] = (
        (f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",), *same)
  if not cfg.tie_embeddings:
    out[("logits_dense", "kernel")] = (("lm_head.weight",), one(_t), _t)
  return out


def _stacked(pair, n: int, axis: int):
  """(to_hf, from_hf) of n arrays stacked on `axis`, from the (to_hf, from_hf) of one."""
  to_one, from_one = pair
  to_hf = lambda x: tuple(to_one(x.take(i, axis=axis))[0] for i in range(n))
  from_hf = lambda *xs: np.stack([from_one(x) for x in xs], axis=axis)
  return to_hf, from_hf


def _same(x):
  return x


def _t(x):
  return x.T


def checked_name_map(cfg, paths) -> dict:
  """name_map(cfg), after checking that the model's parameter paths are the ones it maps."""
  names = name_map(cfg)
  if set(paths) != set(names):
    raise ValueError(f"model config and T5 layout disagree on {sorted(set(paths) ^ set(names))}")
  return names


def to_param(weights, entry: tuple, path: tuple, shape: tuple, hf: dict) -> np.ndarray:
  """One of our parameters (float32 NumPy, `shape`) from the Hugging Face weights;
  entry: name_map's (Hugging Face names, to_hf, from_hf) for `path`."""
  hf_names, to_hf, from_hf = entry
  wants = jax.eval_shape(to_hf, jax.ShapeDtypeStruct(tuple(shape), np.float32))
  values = []
  for hf_name, want in zip(hf_names, wants):
    if hf_name == "lm_head.weight" and hf_name not in weights and hf.get(
        "tie_word_embeddings", True):
      # transformers 5 saves v1.1's head tied to the embedding (scale_decoder_outputs=false).
      hf_name = "shared.weight"
    value = np.asarray(weights[hf_name], np.float32)
    if value.shape != want.shape:
      raise ValueError(f"weight {hf_name} has shape {value.shape} but the model needs "
                       f"{want.shape} (for {'/'.join(path)} of shape {tuple(shape)})")
    values.append(value)
  return from_hf(*values)


def from_params(params: dict, cfg) -> dict:
  """Hugging Face weights (name -> float32 NumPy) from our parameters {path: array}.

  A model that scales its attention scores by 1/sqrt(head_dim) has that factor
  folded into its query projections, which is what a T5 computes. Scanned layers
  (model/scan.py) are unstacked first: T5's names are per layer.
  """
  if scan.is_scanned(params):
    params = scan.to_unrolled(params, cfg)
  names = name_map(cfg)
  out = {}
  for path, value in params.items():
    hf_names, to_hf, _ = names[path]
    values = [np.asarray(v, np.float32) for v in to_hf(np.asarray(value, np.float32))]
    for hf_name, v in zip(hf_names, values):
      if cfg.scale_attention and hf_name.endswith(".q.weight"):
        v = v / np.float32(math.sqrt(cfg.head_dim))
      out[hf_name] = np.ascontiguousarray(v)
  return out
