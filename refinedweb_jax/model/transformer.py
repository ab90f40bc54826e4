"""The RefinedWeb encoder-decoder Transformer (Flax Linen).

Pre-norm residual blocks (RMSNorm), positions on self-attention only (rotary
embeddings on queries and keys, or T5's relative position bias: one table per stack,
shared by its layers), optional gated MLP, tied or separate output embedding,
packed-sequence support through segment ids and per-segment positions, and a
key/value cache for decoding. With model.position="t5_bias", scale_attention=False
and T5's MLP this is T5 (v1.0, v1.1, mT5) exactly (convert/hf_t5.py).
"""


import flax.linen as nn
import jax
import jax.numpy as jnp

from refinedweb_jax.model import attention, quantize, scan
from refinedweb_jax.model.attention import dense, kinds, relative
from refinedweb_jax.model.config import REMAT_POLICIES, ModelConfig
from refinedweb_jax.model.layers import MLP, RMSNorm, dense as _dense

class MultiHeadAttention(nn.Module):
  """Self-attention (dense or sparse) or dense cross-attention, with a decoding cache."""
  cfg: ModelConfig
  causal: bool = False
  rotary: bool = True
  kind: str = "dense"

  @nn.compact
  def __call__(self, x_BxTxD, kv_BxSxD, *, segment_ids_BxT=None, positions_BxT=None,
               kv_segment_ids_BxS=None, decode: bool = False, cross: bool = False,
               relative_table=None, layer=0):
    """kv_segment_ids_BxS: the encoder's segments (cross-attention); relative_table: the
    stack's T5 bias table, N buckets x H heads (self-attention); layer: this layer's index
    in its stack (an int, or traced in a scan over layers)."""
    cfg = self.cfg
    hk = (cfg.num_heads, cfg.head_dim)
    names = ("embed", None, "heads", "kv")  # the stacked axis stays whole: heads split
    if cross:  # the query from the decoder, keys and values (one matmul) from the encoder
      q = _dense(cfg, hk, -1, ("embed", "heads", "kv"), "query")(x_BxTxD)
      kv_proj = _dense(cfg, (2,) + hk, -1, names, "key_value")
    else:  # one matmul for queries, keys and values
      qkv_BxTx3xHxK = _dense(cfg, (3,) + hk, -1, names, "qkv")(x_BxTxD)
      q, k, v = (qkv_BxTx3xHxK[:, :, i] for i in range(3))
    if not cfg.scale_attention:
      # Every kernel divides by sqrt(K); T5's unscaled scores undo it here.
      q = q * jnp.asarray(cfg.head_dim ** 0.5, q.dtype)
    if decode and cross:
      # Encoder keys/values are projected once, when the cache is created, and kept
      # head-major (BxHxSxK) so that no decoding step has to transpose them.
      kv = None if self.has_variable("cache", "cross_key") else kv_proj(kv_BxSxD)
      key = self.variable("cache", "cross_key", lambda: _heads_major(kv[:, :, 0]))
      value = self.variable("cache", "cross_value", lambda: _heads_major(kv[:, :, 1]))
      # Beam search keeps one cache row per example: the W beams of an example (adjacent
      # rows) attend to it as W query positions, so the cache is never copied per beam.
      rows = key.value.shape[0]
      q_BxWTxHxK = q.reshape((rows, -1) + q.shape[2:])
      mask = dense.make_attention_mask(segment_ids_BxT.reshape(rows, -1), kv_segment_ids_BxS,
                                       causal=False)
      out = dense.cached_attention(q_BxWTxHxK, key.value, value.value, mask).reshape(q.shape)
      return _dense(cfg, cfg.d_model, (-2, -1), ("heads", "kv", "embed"), "out")(out)
    if cross:
      kv_BxSx2xHxK = kv_proj(kv_BxSxD)
      k, v = kv_BxSx2xHxK[:, :, 0], kv_BxSx2xHxK[:, :, 1]
    bias = None
    if relative_table is not None:
      bias = relative.RelativeBias(relative_table, bidirectional=not self.causal,
                                   max_distance=cfg.relative_attention_max_distance)
    if self.rotary and cfg.position == "rope":
      q = dense.rotary_embedding(q, positions_BxT, cfg.rope_max_wavelength)
      k = dense.rotary_embedding(k, positions_BxT, cfg.rope_max_wavelength)
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
    if cross:
      out = attention.cross_attention(q, k, v, segment_ids_BxT, kv_segment_ids_BxS,
                                      implementation=cfg.dense_implementation)
    elif decode and self.has_variable("cache", "cached_key"):
      k, v, mask = self._update_cache(k, v, positions_BxT, layer)
      if bias is not None:  # this step's query against every cache position
        bias = bias.between(positions_BxT[:1, :], jnp.arange(k.shape[2])[None])
      out = dense.cached_attention(q, k, v, mask, bias)
    elif decode:  # creating the cache: the output is not used
      self._update_cache(k, v, positions_BxT, layer)
      out = jnp.zeros_like(q)
    else:
      out = attention.self_attention(q, k, v, segment_ids_BxT, kind=self.kind,
                                     causal=self.causal, cfg=cfg.attention,
                                     implementation=cfg.dense_implementation, bias=bias,
                                     layer=layer)
    return _dense(cfg, cfg.d_model, (-2, -1), ("heads", "kv", "embed"), "out")(out)

  def _update_cache(self, k_Bx1xHxK, v_Bx1xHxK, positions_Bx1, layer):
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
    mask = kinds.allowed(self.kind, self.cfg.attention, index, jnp.arange(length), length,
                         causal=True, layer=layer)
    return (cached_key.value, cached_value.value,
            jnp.broadcast_to(mask[None, None, None, :], (batch, 1, 1, length)))


def _heads_major(x_BxTxHxK):
  return jnp.transpose(x_BxTxHxK, (0, 2, 1, 3))


def _remat(block, cfg: ModelConfig, static_argnums: tuple, scanned: bool):
  """A layer's block under nn.remat with the model.remat policy (unchanged for "none").

  Inside a scan the loop already keeps XLA from merging the recomputation with the
  forward pass, so the barriers of prevent_cse are not needed there.
  """
  if cfg.remat == "none":
    return block
  return nn.remat(block, policy=REMAT_POLICIES[cfg.remat], static_argnums=static_argnums,
                  prevent_cse=not scanned)


class EncoderLayer(nn.Module):
  """Pre-norm self-attention and MLP; `scanned`: a layer of a scan (its index is traced)."""
  cfg: ModelConfig
  kind: str = "dense"
  scanned: bool = False

  def __call__(self, x_BxSxD, layer, segments_BxS, positions_BxS, relative_table,
               deterministic: bool):
    # Static argument numbers count self as 0; an unrolled layer's index stays a Python int.
    static = (6,) if self.scanned else (2, 6)
    return _remat(EncoderLayer.block, self.cfg, static, self.scanned)(
        self, x_BxSxD, layer, segments_BxS, positions_BxS, relative_table, deterministic)

  @nn.compact
  def block(self, x_BxSxD, layer, segments_BxS, positions_BxS, relative_table,
            deterministic: bool):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_attention_norm")(x_BxSxD)
    h = MultiHeadAttention(cfg, kind=self.kind, name="attention")(
        h, h, segment_ids_BxT=segments_BxS, positions_BxT=positions_BxS,
        relative_table=relative_table, layer=layer)
    x_BxSxD = x_BxSxD + drop(h, deterministic=deterministic)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_mlp_norm")(x_BxSxD)
    x_BxSxD = x_BxSxD + drop(MLP(cfg, name="mlp")(h, deterministic), deterministic=deterministic)
    return nn.with_logical_constraint(x_BxSxD, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  """Pre-norm causal self-attention, cross-attention and MLP (see EncoderLayer)."""
  cfg: ModelConfig
  kind: str = "dense"
  scanned: bool = False

  def __call__(self, y_BxTxD, layer, enc_BxSxD, segments_BxT, enc_segments_BxS, positions_BxT,
               relative_table, deterministic: bool, decode: bool):
    # Cached decoding has no backward pass to save memory for: no remat there.
    static = (8, 9) if self.scanned else (2, 8, 9)
    block = DecoderLayer.block if decode else _remat(DecoderLayer.block, self.cfg, static,
                                                     self.scanned)
    return block(self, y_BxTxD, layer, enc_BxSxD, segments_BxT, enc_segments_BxS,
                 positions_BxT, relative_table, deterministic, decode)

  @nn.compact
  def block(self, y_BxTxD, layer, enc_BxSxD, segments_BxT, enc_segments_BxS, positions_BxT,
            relative_table, deterministic: bool, decode: bool):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_self_attention_norm")(y_BxTxD)
    h = MultiHeadAttention(cfg, causal=True, kind=self.kind, name="self_attention")(
        h, h, segment_ids_BxT=segments_BxT, positions_BxT=positions_BxT, decode=decode,
        relative_table=relative_table, layer=layer)
    y_BxTxD = y_BxTxD + drop(h, deterministic=deterministic)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_cross_attention_norm")(y_BxTxD)
    h = MultiHeadAttention(cfg, rotary=False, name="cross_attention")(
        h, enc_BxSxD, segment_ids_BxT=segments_BxT, kv_segment_ids_BxS=enc_segments_BxS,
        decode=decode, cross=True)
    y_BxTxD = y_BxTxD + drop(h, deterministic=deterministic)
    h = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="pre_mlp_norm")(y_BxTxD)
    y_BxTxD = y_BxTxD + drop(MLP(cfg, name="mlp")(h, deterministic), deterministic=deterministic)
    return nn.with_logical_constraint(y_BxTxD, ("batch", "length", "embed"))


LAYERS = {"encoder": EncoderLayer, "decoder": DecoderLayer}


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

  def init(self, rngs, *args, **kwargs):
    """Module.init, compiled as one program: run op by op, a scanned stack's per-layer
    initializers (vmapped over its layers) would each compile on their own."""
    arrays = [jnp.asarray(a) if a is not None else None for a in args]
    return jax.jit(lambda r, a: nn.Module.init(self, r, *a, **kwargs))(rngs, arrays)

  def setup(self):
    cfg = self.cfg
    self.embedding = nn.Embed(
        cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=jnp.float32,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                    ("vocab", "embed")),
        name="token_embedding")
    # Each layer takes (input, index, *args): 4 more args in the encoder, 7 in the decoder.
    self.encoder_layers = scan.build(cfg, "encoder", EncoderLayer, 4)
    self.decoder_layers = scan.build(cfg, "decoder", DecoderLayer, 7)
    self.encoder_norm = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="encoder_norm")
    self.decoder_norm = RMSNorm(cfg.norm_epsilon, cfg.compute_dtype, name="decoder_norm")
    self.dropout = nn.Dropout(cfg.dropout_rate)
    if not cfg.tie_embeddings:
      # Logits come out of the matmul in float32 (accumulated so), never rounded to bf16.
      self.logits_dense = _dense(cfg, cfg.vocab_size, -1, ("embed", "vocab"), "logits_dense",
                                 out_dtype=jnp.float32)
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
    partitioner can only turn into batch-split activations by replicating them. Rows
    are gathered from the float32 table and cast afterwards, so the gradient's
    scatter-add into the table runs in float32 whatever the compute dtype.
    """
    table_VxD = nn.with_logical_constraint(self.embedding.embedding, ("vocab", None))
    if table_VxD.dtype == jnp.int8:  # quantize.quantize's weights: rows times their scales
      scale_V = self.embedding.variables["params"]["embedding_scale"]
      rows = jnp.take(table_VxD, tokens_BxT, axis=0).astype(jnp.float32)
      return (rows * jnp.take(scale_V, tokens_BxT, axis=0)[..., None]).astype(
          self.cfg.compute_dtype)
    return jnp.take(table_VxD, tokens_BxT, axis=0).astype(self.cfg.compute_dtype)

  def _tied_logits(self, y_BxTxD):
    """y times the embedding table; T5/Mesh-TF's 1/sqrt(D) keeps them near unit variance."""
    table_VxD = self.embedding.embedding
    if table_VxD.dtype == jnp.int8:
      scale_V = self.embedding.variables["params"]["embedding_scale"]
      logits = quantize.int8_dot(y_BxTxD, table_VxD, scale_V, ((y_BxTxD.ndim - 1,), (1,)),
                                 jnp.float32)
    else:  # compute-dtype operands, float32 products: the logits are never rounded to bf16
      dtype = self.cfg.compute_dtype
      logits = jax.lax.dot_general(y_BxTxD.astype(dtype), table_VxD.astype(dtype),
                                   (((y_BxTxD.ndim - 1,), (1,)), ((), ())),
                                   preferred_element_type=jnp.float32)
    return logits / jnp.sqrt(self.cfg.d_model)

  def encode(self, inputs_BxS, inputs_segment_ids=None, inputs_positions=None, *,
             deterministic: bool = True):
    """Token ids -> encoder output enc_BxSxD."""
    segments, positions = _default_segments_and_positions(inputs_BxS, inputs_segment_ids,
                                                          inputs_positions)
    x_BxSxD = self.dropout(self._embed(inputs_BxS), deterministic=deterministic)
    x_BxSxD = nn.with_logical_constraint(x_BxSxD, ("batch", "length", "embed"))
    x_BxSxD = scan.run(self.cfg, "encoder", self.encoder_layers, x_BxSxD, segments, positions,
                       self._relative_table("encoder"), deterministic)
    return self.dropout(self.encoder_norm(x_BxSxD), deterministic=deterministic)

  def decode(self, enc_BxSxD, inputs_BxS, decoder_input_tokens_BxT, inputs_segment_ids=None,
             decoder_segment_ids=None, decoder_positions=None, *, deterministic: bool = True,
             decode: bool = False, head: bool = True):
    """Encoder output + shifted targets -> float32 logits_BxTxV (head=False: the normed
    decoder output y_BxTxD that the vocabulary projection takes).

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
    y_BxTxD = self.dropout(self._embed(decoder_input_tokens_BxT), deterministic=deterministic)
    y_BxTxD = nn.with_logical_constraint(y_BxTxD, ("batch", "length", "embed"))
    y_BxTxD = scan.run(self.cfg, "decoder", self.decoder_layers, y_BxTxD, enc_BxSxD,
                       dec_segments, enc_segments, positions, self._relative_table("decoder"),
                       deterministic, decode)
    y_BxTxD = self.dropout(self.decoder_norm(y_BxTxD), deterministic=deterministic)
    return self.logits(y_BxTxD) if head else y_BxTxD

  def logits(self, y_BxTxD):
    """The decoder's normed output -> float32 logits_BxTxV."""
    if self.cfg.tie_embeddings:
      logits_BxTxV = self._tied_logits(y_BxTxD)
    else:
      logits_BxTxV = self.logits_dense(y_BxTxD)
    logits_BxTxV = nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "vocab"))
    return logits_BxTxV.astype(jnp.float32)

  def output_layer(self):
    """(w_VxD, scale): logits = scale * y @ w^T; the float32 parameter, never copied whole."""
    if self.cfg.tie_embeddings:
      return self.embedding.embedding, self.cfg.d_model ** -0.5
    if self.is_initializing():
      self.logits_dense(jnp.zeros((1, self.cfg.d_model), self.cfg.compute_dtype))
    return nn.meta.unbox(self.logits_dense.variables["params"]["kernel"]).T, 1.0

  def features(self, inputs_BxS, decoder_input_tokens_BxT, inputs_segment_ids=None,
               decoder_segment_ids=None, inputs_positions=None, decoder_positions=None, *,
               deterministic: bool = True):
    """(decoder output y_BxTxD before the vocabulary projection, w_VxD, scale): __call__'s
    logits are scale * y @ w^T (losses.projected_cross_entropy takes them so)."""
    enc_BxSxD = self.encode(inputs_BxS, inputs_segment_ids, inputs_positions,
                            deterministic=deterministic)
    y_BxTxD = self.decode(enc_BxSxD, inputs_BxS, decoder_input_tokens_BxT, inputs_segment_ids,
                          decoder_segment_ids, decoder_positions, deterministic=deterministic,
                          head=False)
    return (y_BxTxD, *self.output_layer())

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


def forward_features(model, params, batch, *, deterministic=True, rngs=None):
  """Teacher-forced (y_BxTxD, w_VxD, scale) of a batch: logits = scale * y @ w^T."""
  return model.apply(
      {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
      batch["encoder_segment_ids"], batch["decoder_segment_ids"], batch["encoder_positions"],
      batch["decoder_positions"], deterministic=deterministic, rngs=rngs,
      method=EncoderDecoder.features)


def flat_params(params) -> dict:
  """{parameter names, e.g. ('encoder_0', 'mlp', 'wo', 'kernel'): leaf} of a (possibly boxed)
  parameter tree: only the dict keys of each path, not Flax's box attributes."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey)): leaf
          for path, leaf in leaves}


def count_params(params) -> int:
  """Number of scalars in a (possibly boxed) parameter tree."""
  return sum(x.size for x in jax.tree.leaves(nn.meta.unbox(params)))
