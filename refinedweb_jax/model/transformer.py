"""The RefinedWeb encoder-decoder Transformer (Flax Linen).

Pre-norm residual blocks (RMSNorm), rotary position embeddings (RoPE) on
self-attention queries and keys (cross-attention has no positions), optional
gated MLP, tied or separate output embedding, packed-sequence support through
segment ids and per-segment positions, and a key/value cache for decoding.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from refinedweb_jax.model import attention
from refinedweb_jax.model.attention import sparse as sparse_attention
from refinedweb_jax.model.layers import ACTIVATIONS, MLP, RMSNorm, dense as _dense

PRESETS = {
    "tiny": dict(vocab_size=512, d_model=32, num_heads=4, head_dim=8, d_ff=64,
                 num_encoder_layers=2, num_decoder_layers=2),
    "small": dict(vocab_size=8000, d_model=384, num_heads=6, head_dim=64, d_ff=1024,
                  num_encoder_layers=4, num_decoder_layers=4),
    "base": dict(vocab_size=32128, d_model=768, num_heads=12, head_dim=64, d_ff=2048,
                 num_encoder_layers=12, num_decoder_layers=12),
    "large": dict(vocab_size=32128, d_model=1024, num_heads=16, head_dim=64, d_ff=2816,
                  num_encoder_layers=24, num_decoder_layers=24),
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# Per-layer rematerialisation: "full" keeps only each layer's inputs for the backward
# pass; "dots" also keeps the outputs of weight matmuls (not attention scores).
REMAT_POLICIES = {"none": None, "full": None,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Model hyper-parameters.

  Shape legend used in names across the package: B batch, S source (encoder)
  length, T target (decoder) length, D d_model, H heads, K head dim, F ffn
  width, V vocabulary, L cache length.
  """
  vocab_size: int = 8000
  d_model: int = 384
  num_heads: int = 6
  head_dim: int = 64
  d_ff: int = 1024
  num_encoder_layers: int = 4
  num_decoder_layers: int = 4
  dropout_rate: float = 0.0
  gated_mlp: bool = True
  activation: str = "gelu"
  tie_embeddings: bool = True
  dtype: str = "float32"
  rope_max_wavelength: float = 10_000.0
  norm_epsilon: float = 1e-6
  encoder_attention: str = "dense"
  decoder_attention: str = "dense"
  encoder_dense_every: int = 0
  decoder_dense_every: int = 0
  dense_implementation: str = "xla"
  attention_window: int = 256
  attention_block_size: int = 64
  attention_stride: int = 256
  attention_summary: int = 8
  attention_variant: str = "fixed"
  attention_global_blocks: int = 1
  attention_window_blocks: int = 3
  attention_random_blocks: int = 3
  attention_global_positions: str = "0-15"
  attention_seed: int = 0
  remat: str = "none"

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "num_heads", "head_dim", "d_ff",
                 "num_encoder_layers", "num_decoder_layers"):
      if getattr(self, name) <= 0:
        raise ValueError(f"model.{name} must be > 0, got {getattr(self, name)}")
    if self.dtype not in DTYPES:
      raise ValueError(f"unknown model.dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"unknown model.remat {self.remat!r}; allowed: {', '.join(REMAT_POLICIES)}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f"unknown model.activation {self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"model.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    attention.check_kind(self.encoder_attention, "model.encoder_attention")
    attention.check_kind(self.decoder_attention, "model.decoder_attention")
    for stack in ("encoder", "decoder"):
      if getattr(self, f"{stack}_dense_every") < 0:
        raise ValueError(f"model.{stack}_dense_every must be >= 0 (0 = never), got "
                         f"{getattr(self, stack + '_dense_every')}")
      if getattr(self, f"{stack}_attention") != "dense":
        self.attention_spec(stack, 0)  # validates the sparse sizes now, not at trace time

  def attention_kind(self, stack: str, layer: int) -> str:
    """The attention kind of one layer: every `*_dense_every`-th layer is dense."""
    every = getattr(self, f"{stack}_dense_every")
    if every and (layer + 1) % every == 0:
      return "dense"
    return getattr(self, f"{stack}_attention")

  def attention_spec(self, stack: str, layer: int):
    """The SparseSpec of a sparse layer (random blocks seeded per layer), or None if dense."""
    kind = self.attention_kind(stack, layer)
    if kind == "dense":
      return None
    return sparse_attention.SparseSpec(
        kind, window=self.attention_window, block_size=self.attention_block_size,
        stride=self.attention_stride, summary=self.attention_summary,
        variant=self.attention_variant, num_global_blocks=self.attention_global_blocks,
        num_window_blocks=self.attention_window_blocks,
        num_random_blocks=self.attention_random_blocks,
        global_positions=parse_positions(self.attention_global_positions),
        seed=self.attention_seed + layer)

  @classmethod
  def from_preset(cls, preset: str, **overrides) -> "ModelConfig":
    """Builds a config from a named preset plus keyword overrides."""
    if preset not in PRESETS:
      raise ValueError(f"unknown model preset {preset!r}; allowed: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise ValueError(f"unknown model config key(s) {unknown}; allowed: {sorted(fields)}")
    return cls(**{**PRESETS[preset], **overrides})

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]


def parse_positions(text: str) -> tuple:
  """'0-15,40' -> (0, 1, ..., 15, 40); the flag model.attention_global_positions."""
  positions = []
  for part in filter(None, (p.strip() for p in str(text).split(","))):
    lo, dash, hi = part.partition("-")
    try:
      positions += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    except ValueError:
      raise ValueError(f"bad model.attention_global_positions {text!r}: use comma-separated "
                       f"ints or ranges like '0-15,40'") from None
  return tuple(sorted(set(positions)))


class MultiHeadAttention(nn.Module):
  """Self-attention (dense or sparse) or dense cross-attention, with a decoding cache."""
  cfg: ModelConfig
  causal: bool = False
  rotary: bool = True
  kind: str = "dense"
  spec: Any = None

  @nn.compact
  def __call__(self, x_BxTxD, kv_BxSxD, *, segment_ids_BxT=None, positions_BxT=None,
               cross_mask_Bx1xTxS=None, decode: bool = False, cross: bool = False):
    cfg = self.cfg
    hk = (cfg.num_heads, cfg.head_dim)
    q = _dense(cfg, hk, -1, ("embed", "heads", "kv"), "query")(x_BxTxD)
    if decode and cross:
      # Encoder keys/values are projected once, when the cache is created, and kept
      # head-major (BxHxSxK) so that no decoding step has to transpose them.
      key = self.variable("cache", "cross_key", lambda: _heads_major(_dense(
          cfg, hk, -1, ("embed", "heads", "kv"), "key")(kv_BxSxD)))
      value = self.variable("cache", "cross_value", lambda: _heads_major(_dense(
          cfg, hk, -1, ("embed", "heads", "kv"), "value")(kv_BxSxD)))
      out = attention.cached_attention(q, key.value, value.value, cross_mask_Bx1xTxS)
      return _dense(cfg, cfg.d_model, (-2, -1), ("heads", "kv", "embed"), "out")(out)
    else:
      k = _dense(cfg, hk, -1, ("embed", "heads", "kv"), "key")(kv_BxSxD)
      v = _dense(cfg, hk, -1, ("embed", "heads", "kv"), "value")(kv_BxSxD)
    if self.rotary:
      q = attention.rotary_embedding(q, positions_BxT, cfg.rope_max_wavelength)
      k = attention.rotary_embedding(k, positions_BxT, cfg.rope_max_wavelength)
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
    if cross:
      out = attention.dense_attention(q, k, v, cross_mask_Bx1xTxS,
                                      implementation=cfg.dense_implementation)
    elif decode and self.has_variable("cache", "cached_key"):
      k, v, mask = self._update_cache(k, v, positions_BxT)
      out = attention.cached_attention(q, k, v, mask)
    elif decode:  # creating the cache: the output is not used
      self._update_cache(k, v, positions_BxT)
      out = attention.dense_attention(q, k, v, None, implementation=cfg.dense_implementation)
    else:
      out = attention.self_attention(q, k, v, segment_ids_BxT, kind=self.kind,
                                     causal=self.causal, spec=self.spec,
                                     implementation=cfg.dense_implementation)
    return _dense(cfg, cfg.d_model, (-2, -1), ("heads", "kv", "embed"), "out")(out)

  def _update_cache(self, k_Bx1xHxK, v_Bx1xHxK, positions_Bx1):
    """Writes this step's key/value at its position; the mask admits positions <= it.

    The cache is head-major, BxHxLxK, the layout the per-step attention reads.
    """
    is_initialized = self.has_variable("cache", "cached_key")
    # On creation the input spans the whole target length L, which sizes the cache.
    shape = _heads_major(k_Bx1xHxK).shape
    cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, k_Bx1xHxK.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, v_Bx1xHxK.dtype)
    if not is_initialized:
      return None
    batch, length = cached_key.value.shape[0], cached_key.value.shape[2]
    if k_Bx1xHxK.shape[1] != 1:
      raise ValueError(f"cached decoding takes one token per step, got {k_Bx1xHxK.shape[1]}")
    index = positions_Bx1[0, 0]
    cached_key.value = jax.lax.dynamic_update_slice_in_dim(
        cached_key.value, _heads_major(k_Bx1xHxK), index, 2)
    cached_value.value = jax.lax.dynamic_update_slice_in_dim(
        cached_value.value, _heads_major(v_Bx1xHxK), index, 2)
    j = jnp.arange(length)
    mask = j <= index
    if self.spec is not None:
      # The row of the sparse pattern for this position, over the cache length.
      mask &= sparse_attention.allowed(self.spec, index, j, length, causal=True)
    return (cached_key.value, cached_value.value,
            jnp.broadcast_to(mask[None, None, None, :], (batch, 1, 1, length)))


def _heads_major(x_BxTxHxK):
  return jnp.transpose(x_BxTxHxK, (0, 2, 1, 3))


def _remat(block, cfg: ModelConfig, static_argnums: tuple):
  """A layer's block under nn.remat with the model.remat policy (unchanged for "none")."""
  if cfg.remat == "none":
    return block
  return nn.remat(block, policy=REMAT_POLICIES[cfg.remat], static_argnums=static_argnums)


class EncoderLayer(nn.Module):
  cfg: ModelConfig
  index: int = 0

  def __call__(self, x_BxSxD, segments_BxS, positions_BxS, deterministic: bool):
    # Static argument numbers count self as 0.
    return _remat(EncoderLayer.block, self.cfg, (4,))(self, x_BxSxD, segments_BxS,
                                                      positions_BxS, deterministic)

  @nn.compact
  def block(self, x_BxSxD, segments_BxS, positions_BxS, deterministic: bool):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_attention_norm")(x_BxSxD)
    h = MultiHeadAttention(cfg, kind=cfg.attention_kind("encoder", self.index),
                           spec=cfg.attention_spec("encoder", self.index), name="attention")(
                               h, h, segment_ids_BxT=segments_BxS, positions_BxT=positions_BxS)
    x_BxSxD = x_BxSxD + drop(h, deterministic=deterministic)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_mlp_norm")(x_BxSxD)
    x_BxSxD = x_BxSxD + drop(MLP(cfg, name="mlp")(h, deterministic), deterministic=deterministic)
    return nn.with_logical_constraint(x_BxSxD, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  cfg: ModelConfig
  index: int = 0

  def __call__(self, y_BxTxD, enc_BxSxD, segments_BxT, cross_mask, positions_BxT,
               deterministic: bool, decode: bool):
    # Cached decoding has no backward pass to save memory for: no remat there.
    block = DecoderLayer.block if decode else _remat(DecoderLayer.block, self.cfg, (6, 7))
    return block(self, y_BxTxD, enc_BxSxD, segments_BxT, cross_mask, positions_BxT,
                 deterministic, decode)

  @nn.compact
  def block(self, y_BxTxD, enc_BxSxD, segments_BxT, cross_mask, positions_BxT,
            deterministic: bool, decode: bool):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_self_attention_norm")(y_BxTxD)
    h = MultiHeadAttention(cfg, causal=True, kind=cfg.attention_kind("decoder", self.index),
                           spec=cfg.attention_spec("decoder", self.index), name="self_attention")(
                               h, h, segment_ids_BxT=segments_BxT, positions_BxT=positions_BxT,
                               decode=decode)
    y_BxTxD = y_BxTxD + drop(h, deterministic=deterministic)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_cross_attention_norm")(y_BxTxD)
    h = MultiHeadAttention(cfg, rotary=False, name="cross_attention")(
        h, enc_BxSxD, cross_mask_Bx1xTxS=cross_mask, decode=decode, cross=True)
    y_BxTxD = y_BxTxD + drop(h, deterministic=deterministic)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_mlp_norm")(y_BxTxD)
    y_BxTxD = y_BxTxD + drop(MLP(cfg, name="mlp")(h, deterministic), deterministic=deterministic)
    return nn.with_logical_constraint(y_BxTxD, ("batch", "length", "embed"))


def _default_segments_and_positions(tokens_BxT, segment_ids, positions):
  """Unpacked inputs: segment 1 where the token is not padding, positions 0..T-1."""
  if segment_ids is None:
    segment_ids = (tokens_BxT != 0).astype(jnp.int32)
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
  return segment_ids, positions


class EncoderDecoder(nn.Module):
  """Encoder-decoder Transformer; `encode` and `decode` also work on their own."""
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embedding = nn.Embed(
        cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=jnp.float32,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                    ("vocab", "embed")),
        name="token_embedding")
    self.encoder_layers = [EncoderLayer(cfg, i, name=f"encoder_{i}")
                           for i in range(cfg.num_encoder_layers)]
    self.decoder_layers = [DecoderLayer(cfg, i, name=f"decoder_{i}")
                           for i in range(cfg.num_decoder_layers)]
    self.encoder_norm = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="encoder_norm")
    self.decoder_norm = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="decoder_norm")
    self.dropout = nn.Dropout(cfg.dropout_rate)
    if not cfg.tie_embeddings:
      self.logits_dense = _dense(cfg, cfg.vocab_size, -1, ("embed", "vocab"), "logits_dense")

  def _embed(self, tokens_BxT):
    """Embedding lookup from the table gathered whole over fsdp (vocab stays split).

    A lookup in the fsdp-split table would come out split by d_model, which the
    partitioner can only turn into batch-split activations by replicating them.
    """
    table_VxD = nn.with_logical_constraint(self.embedding.embedding, ("vocab", None))
    return jnp.take(table_VxD.astype(self.cfg.compute_dtype), tokens_BxT, axis=0)

  def encode(self, inputs_BxS, inputs_segment_ids=None, inputs_positions=None, *,
             deterministic: bool = True):
    """Token ids -> encoder output enc_BxSxD."""
    segments, positions = _default_segments_and_positions(inputs_BxS, inputs_segment_ids,
                                                          inputs_positions)
    x_BxSxD = self.dropout(self._embed(inputs_BxS), deterministic=deterministic)
    x_BxSxD = nn.with_logical_constraint(x_BxSxD, ("batch", "length", "embed"))
    for layer in self.encoder_layers:
      x_BxSxD = layer(x_BxSxD, segments, positions, deterministic)
    return self.dropout(self.encoder_norm(x_BxSxD), deterministic=deterministic)

  def decode(self, enc_BxSxD, inputs_BxS, decoder_input_tokens_BxT, inputs_segment_ids=None,
             decoder_segment_ids=None, decoder_positions=None, *, deterministic: bool = True,
             decode: bool = False):
    """Encoder output + shifted targets -> float32 logits_BxTxV.

    With decode=True, one token per call at position decoder_positions[:, 0],
    reading and updating the 'cache' collection.
    """
    enc_segments, _ = _default_segments_and_positions(inputs_BxS, inputs_segment_ids, None)
    if decode:
      dec_segments = jnp.ones_like(decoder_input_tokens_BxT, jnp.int32)
      positions = decoder_positions
      if positions is None:
        positions = jnp.broadcast_to(jnp.arange(decoder_input_tokens_BxT.shape[1]),
                                     decoder_input_tokens_BxT.shape)
    else:
      # The shifted-right start token is 0 (padding id) but is a real position:
      # segments must come from the pipeline, or default to all-valid.
      if decoder_segment_ids is None:
        decoder_segment_ids = jnp.ones_like(decoder_input_tokens_BxT, jnp.int32)
      dec_segments, positions = _default_segments_and_positions(
          decoder_input_tokens_BxT, decoder_segment_ids, decoder_positions)
    cross_mask = attention.make_attention_mask(dec_segments, enc_segments, causal=False)
    y_BxTxD = self.dropout(self._embed(decoder_input_tokens_BxT), deterministic=deterministic)
    y_BxTxD = nn.with_logical_constraint(y_BxTxD, ("batch", "length", "embed"))
    for layer in self.decoder_layers:
      y_BxTxD = layer(y_BxTxD, enc_BxSxD, dec_segments, cross_mask, positions, deterministic,
                      decode)
    y_BxTxD = self.dropout(self.decoder_norm(y_BxTxD), deterministic=deterministic)
    if self.cfg.tie_embeddings:
      # Scale as in T5/Mesh-TF so tied logits start near unit variance.
      logits_BxTxV = self.embedding.attend(y_BxTxD) / jnp.sqrt(self.cfg.d_model)
    else:
      logits_BxTxV = self.logits_dense(y_BxTxD)
    logits_BxTxV = nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "vocab"))
    return logits_BxTxV.astype(jnp.float32)

  def __call__(self, inputs_BxS, decoder_input_tokens_BxT, inputs_segment_ids=None,
               decoder_segment_ids=None, inputs_positions=None, decoder_positions=None, *,
               deterministic: bool = True):
    enc_BxSxD = self.encode(inputs_BxS, inputs_segment_ids, inputs_positions,
                            deterministic=deterministic)
    return self.decode(enc_BxSxD, inputs_BxS, decoder_input_tokens_BxT, inputs_segment_ids,
                       decoder_segment_ids, decoder_positions, deterministic=deterministic)


def count_params(params) -> int:
  """Number of scalars in a (possibly boxed) parameter tree."""
  return sum(x.size for x in jax.tree.leaves(nn.meta.unbox(params)))
