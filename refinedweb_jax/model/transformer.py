"""The RefinedWeb encoder-decoder Transformer (Flax Linen).

Pre-norm residual blocks (RMSNorm), positions on self-attention only (rotary
embeddings on queries and keys, or T5's relative position bias: one table per stack,
shared by its layers), optional gated MLP, tied or separate output embedding,
packed-sequence support through segment ids and per-segment positions, and a
key/value cache for decoding. With model.position="t5_bias", scale_attention=False
and T5's MLP this is T5 (v1.0, v1.1, mT5) exactly (convert/hf_t5.py).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from refinedweb_jax.model import attention, quantize
from refinedweb_jax.model.attention import dense, kinds, relative
from refinedweb_jax.model.config import REMAT_POLICIES, ModelConfig
from refinedweb_jax.model.layers import MLP, RMSNorm, dense as _dense

class MultiHeadAttention(nn.Module):
  """Self-attention (dense or sparse) or dense cross-attention, with a decoding cache."""
  cfg: ModelConfig
  causal: bool = False
  rotary: bool = True
  kind: str = "dense"
  sizes: Any = None  # the layer's AttentionConfig (sparse kinds)

  @nn.compact
  def __call__(self, x_BxTxD, kv_BxSxD, *, segment_ids_BxT=None, positions_BxT=None,
               cross_mask_Bx1xTxS=None, decode: bool = False, cross: bool = False,
               relative_table=None):
    """relative_table: the stack's T5 bias table, N buckets x H heads (self-attention)."""
    cfg = self.cfg
    hk = (cfg.num_heads, cfg.head_dim)
    q = _dense(cfg, hk, -1, ("embed", "heads", "kv"), "query")(x_BxTxD)
    if not cfg.scale_attention:
      # Every kernel divides by sqrt(K); T5's unscaled scores undo it here.
      q = q * jnp.asarray(cfg.head_dim ** 0.5, q.dtype)
    if decode and cross:
      # Encoder keys/values are projected once, when the cache is created, and kept
      # head-major (BxHxSxK) so that no decoding step has to transpose them.
      key = self.variable("cache", "cross_key", lambda: _heads_major(_dense(
          cfg, hk, -1, ("embed", "heads", "kv"), "key")(kv_BxSxD)))
      value = self.variable("cache", "cross_value", lambda: _heads_major(_dense(
          cfg, hk, -1, ("embed", "heads", "kv"), "value")(kv_BxSxD)))
      out = dense.cached_attention(q, key.value, value.value, cross_mask_Bx1xTxS)
      return _dense(cfg, cfg.d_model, (-2, -1), ("heads", "kv", "embed"), "out")(out)
    else:
      k = _dense(cfg, hk, -1, ("embed", "heads", "kv"), "key")(kv_BxSxD)
      v = _dense(cfg, hk, -1, ("embed", "heads", "kv"), "value")(kv_BxSxD)
    bias = None
    if relative_table is not None:
      bias = relative.RelativeBias(relative_table, bidirectional=not self.causal,
                                   max_distance=cfg.relative_attention_max_distance)
    if self.rotary and cfg.position == "rope":
      q = dense.rotary_embedding(q, positions_BxT, cfg.rope_max_wavelength)
      k = dense.rotary_embedding(k, positions_BxT, cfg.rope_max_wavelength)
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
    if cross:
      out = dense.dense_attention(q, k, v, cross_mask_Bx1xTxS,
                                      implementation=cfg.dense_implementation)
    elif decode and self.has_variable("cache", "cached_key"):
      k, v, mask = self._update_cache(k, v, positions_BxT)
      if bias is not None:  # this step's query against every cache position
        bias = bias.between(positions_BxT[:1, :], jnp.arange(k.shape[2])[None])
      out = dense.cached_attention(q, k, v, mask, bias)
    elif decode:  # creating the cache: the output is not used
      self._update_cache(k, v, positions_BxT)
      out = dense.dense_attention(q, k, v, None, implementation=cfg.dense_implementation)
    else:
      out = attention.self_attention(q, k, v, segment_ids_BxT, kind=self.kind,
                                     causal=self.causal, cfg=self.sizes,
                                     implementation=cfg.dense_implementation, bias=bias)
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
    # The row of this layer's causal pattern for this position, over the cache length.
    mask = kinds.allowed(self.kind, self.sizes, index, jnp.arange(length), length, causal=True)
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

  def __call__(self, x_BxSxD, segments_BxS, positions_BxS, deterministic: bool,
               relative_table=None):
    # Static argument numbers count self as 0.
    return _remat(EncoderLayer.block, self.cfg, (4,))(self, x_BxSxD, segments_BxS,
                                                      positions_BxS, deterministic,
                                                      relative_table)

  @nn.compact
  def block(self, x_BxSxD, segments_BxS, positions_BxS, deterministic: bool,
            relative_table=None):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_attention_norm")(x_BxSxD)
    h = MultiHeadAttention(cfg, kind=cfg.attention_kind("encoder", self.index),
                           sizes=cfg.layer_attention("encoder", self.index), name="attention")(
                               h, h, segment_ids_BxT=segments_BxS, positions_BxT=positions_BxS,
                               relative_table=relative_table)
    x_BxSxD = x_BxSxD + drop(h, deterministic=deterministic)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_mlp_norm")(x_BxSxD)
    x_BxSxD = x_BxSxD + drop(MLP(cfg, name="mlp")(h, deterministic), deterministic=deterministic)
    return nn.with_logical_constraint(x_BxSxD, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  cfg: ModelConfig
  index: int = 0

  def __call__(self, y_BxTxD, enc_BxSxD, segments_BxT, cross_mask, positions_BxT,
               deterministic: bool, decode: bool, relative_table=None):
    # Cached decoding has no backward pass to save memory for: no remat there.
    block = DecoderLayer.block if decode else _remat(DecoderLayer.block, self.cfg, (6, 7))
    return block(self, y_BxTxD, enc_BxSxD, segments_BxT, cross_mask, positions_BxT,
                 deterministic, decode, relative_table)

  @nn.compact
  def block(self, y_BxTxD, enc_BxSxD, segments_BxT, cross_mask, positions_BxT,
            deterministic: bool, decode: bool, relative_table=None):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_self_attention_norm")(y_BxTxD)
    h = MultiHeadAttention(cfg, causal=True, kind=cfg.attention_kind("decoder", self.index),
                           sizes=cfg.layer_attention("decoder", self.index),
                           name="self_attention")(
                               h, h, segment_ids_BxT=segments_BxT, positions_BxT=positions_BxT,
                               decode=decode, relative_table=relative_table)
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
    if cfg.position == "t5_bias":
      init = nn.with_logical_partitioning(
          nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"), ("relpos_buckets", "heads"))
      shape = (cfg.relative_attention_num_buckets, cfg.num_heads)
      self.encoder_relative_bias = self.param("encoder_relative_bias", init, shape, jnp.float32)
      self.decoder_relative_bias = self.param("decoder_relative_bias", init, shape, jnp.float32)

  def _relative_table(self, stack: str):
    """The stack's T5 bias table (buckets x heads), or None with RoPE."""
    if self.cfg.position != "t5_bias":
      return None
    return getattr(self, f"{stack}_relative_bias")

  def _embed(self, tokens_BxT):
    """Embedding lookup from the table gathered whole over fsdp (vocab stays split).

    A lookup in the fsdp-split table would come out split by d_model, which the
    partitioner can only turn into batch-split activations by replicating them.
    """
    table_VxD = nn.with_logical_constraint(self.embedding.embedding, ("vocab", None))
    if table_VxD.dtype == jnp.int8:  # quantize.quantize's weights: rows times their scales
      scale_V = self.embedding.variables["params"]["embedding_scale"]
      rows = jnp.take(table_VxD, tokens_BxT, axis=0).astype(jnp.float32)
      return (rows * jnp.take(scale_V, tokens_BxT, axis=0)[..., None]).astype(
          self.cfg.compute_dtype)
    return jnp.take(table_VxD.astype(self.cfg.compute_dtype), tokens_BxT, axis=0)

  def _tied_logits(self, y_BxTxD):
    """y times the embedding table; T5/Mesh-TF's 1/sqrt(D) keeps them near unit variance."""
    table_VxD = self.embedding.embedding
    if table_VxD.dtype == jnp.int8:
      scale_V = self.embedding.variables["params"]["embedding_scale"]
      logits = quantize.int8_dot(y_BxTxD, table_VxD, scale_V, ((y_BxTxD.ndim - 1,), (1,)),
                                 jnp.float32)
    else:
      logits = self.embedding.attend(y_BxTxD)
    return logits / jnp.sqrt(self.cfg.d_model)

  def encode(self, inputs_BxS, inputs_segment_ids=None, inputs_positions=None, *,
             deterministic: bool = True):
    """Token ids -> encoder output enc_BxSxD."""
    segments, positions = _default_segments_and_positions(inputs_BxS, inputs_segment_ids,
                                                          inputs_positions)
    x_BxSxD = self.dropout(self._embed(inputs_BxS), deterministic=deterministic)
    x_BxSxD = nn.with_logical_constraint(x_BxSxD, ("batch", "length", "embed"))
    table = self._relative_table("encoder")
    for layer in self.encoder_layers:
      x_BxSxD = layer(x_BxSxD, segments, positions, deterministic, table)
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
    cross_mask = dense.make_attention_mask(dec_segments, enc_segments, causal=False)
    y_BxTxD = self.dropout(self._embed(decoder_input_tokens_BxT), deterministic=deterministic)
    y_BxTxD = nn.with_logical_constraint(y_BxTxD, ("batch", "length", "embed"))
    table = self._relative_table("decoder")
    for layer in self.decoder_layers:
      y_BxTxD = layer(y_BxTxD, enc_BxSxD, dec_segments, cross_mask, positions, deterministic,
                      decode, table)
    y_BxTxD = self.dropout(self.decoder_norm(y_BxTxD), deterministic=deterministic)
    if self.cfg.tie_embeddings:
      logits_BxTxV = self._tied_logits(y_BxTxD)
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


def forward(model, params, batch, *, deterministic=True, rngs=None):
  """Teacher-forced logits_BxTxV for a batch of model features (pipeline.FEATURES)."""
  return model.apply(
      {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
      batch["encoder_segment_ids"], batch["decoder_segment_ids"], batch["encoder_positions"],
      batch["decoder_positions"], deterministic=deterministic, rngs=rngs)


def flat_params(params) -> dict:
  """{parameter names, e.g. ('encoder_0', 'mlp', 'wo', 'kernel'): leaf} of a (possibly boxed)
  parameter tree: only the dict keys of each path, not Flax's box attributes."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey)): leaf
          for path, leaf in leaves}


def count_params(params) -> int:
  """Number of scalars in a (possibly boxed) parameter tree."""
  return sum(x.size for x in jax.tree.leaves(nn.meta.unbox(params)))
