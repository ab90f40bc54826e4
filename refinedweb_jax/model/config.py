"""ModelConfig: the model's hyper-parameters, its presets and per-layer attention."""

import dataclasses

import jax
import jax.numpy as jnp

from refinedweb_jax.model.attention import dispatch, kinds, relative
from refinedweb_jax.model.attention.kinds import AttentionConfig
from refinedweb_jax.model.layers import ACTIVATIONS

PRESETS = {
    # Every field given explicitly (an imported T5's config): ModelConfig's defaults otherwise.
    "custom": {},
    "tiny": dict(vocab_size=512, d_model=32, num_heads=4, head_dim=8, d_ff=64,
                 num_encoder_layers=2, num_decoder_layers=2),
    # The default job's: fast enough on 2 CPU cores to learn the built-in translations.
    "mini": dict(vocab_size=2000, d_model=192, num_heads=4, head_dim=48, d_ff=768,
                 num_encoder_layers=3, num_decoder_layers=3, activation="relu"),
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
STACKS = ("encoder", "decoder")
# A field a resumed run may change (config_keys/model.py): how the model computes, not what
# it is.
RESUMABLE = {"resumable": True}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Model hyper-parameters.

  Shape legend used in names across the package: B batch, S source (encoder)
  length, T target (decoder) length, D d_model, H heads, K head dim, F ffn
  width, V vocabulary, L cache length, W beams, J top-k entries.
  """
  vocab_size: int = 8000
  d_model: int = 384
  num_heads: int = 6
  head_dim: int = 64
  d_ff: int = 1024
  num_encoder_layers: int = 4
  num_decoder_layers: int = 4
  dropout_rate: float = dataclasses.field(default=0.0, metadata=RESUMABLE)
  gated_mlp: bool = True
  activation: str = "gelu"
  tie_embeddings: bool = True
  dtype: str = dataclasses.field(default="float32", metadata=RESUMABLE)
  # Positions: "rope" (rotary embeddings on self-attention) or "t5_bias" (T5's bucketed
  # relative position bias, one table per stack shared by its layers; relative.py).
  position: str = "rope"
  rope_max_wavelength: float = 10_000.0
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  # Scores divided by sqrt(head_dim); T5 folds that into its initialisation instead.
  scale_attention: bool = True
  norm_epsilon: float = 1e-6
  encoder_attention: str = "dense"
  decoder_attention: str = "dense"
  encoder_dense_every: int = 0
  decoder_dense_every: int = 0
  # The dense layers' kernel: "auto" picks per backend (attention/dispatch.py).
  dense_implementation: str = dataclasses.field(default="auto", metadata=RESUMABLE)
  attention: AttentionConfig = dataclasses.field(default_factory=AttentionConfig)
  remat: str = dataclasses.field(default="none", metadata=RESUMABLE)
  # nn.scan over each stack's layers (model/scan.py): compile time flat in depth. False
  # unrolls them, the layout of runs saved before layers were scanned. A config that leaves
  # it unset gets backend.auto_scan_layers (scanned on GPU and TPU, unrolled on CPU).
  scan_layers: bool = True

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "num_heads", "head_dim", "d_ff",
                 "num_encoder_layers", "num_decoder_layers"):
      if getattr(self, name) <= 0:
        raise ValueError(f"model.{name} must be > 0, got {getattr(self, name)}")
    for name, allowed in (("dtype", DTYPES), ("remat", REMAT_POLICIES),
                          ("activation", ACTIVATIONS),
                          ("dense_implementation", dispatch.IMPLEMENTATIONS)):
      if getattr(self, name) not in allowed:
        raise ValueError(f"unknown model.{name} {getattr(self, name)!r}; allowed: "
                         f"{', '.join(allowed)}")
    if self.position not in relative.POSITIONS:
      raise ValueError(f"unknown model.position {self.position!r}; allowed: "
                       f"{', '.join(relative.POSITIONS)}")
    if self.position == "t5_bias":
      relative.check(self.relative_attention_num_buckets, self.relative_attention_max_distance)
    elif self.head_dim % 2:
      raise ValueError(f"model.head_dim must be even for model.position='rope', got "
                       f"{self.head_dim}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"model.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    kinds.check_sizes(self.attention)  # also when no layer is sparse: a typo is an error
    for stack in STACKS:
      kind = kinds.check_kind(getattr(self, f"{stack}_attention"), f"model.{stack}_attention")
      if getattr(self, f"{stack}_dense_every") < 0:
        raise ValueError(f"model.{stack}_dense_every must be >= 0 (0 = never), got "
                         f"{getattr(self, stack + '_dense_every')}")
      if kind != "dense":
        kinds.check(kind, self.attention)  # the sparse sizes now, not at trace time

  def attention_kind(self, stack: str, layer: int) -> str:
    """The attention kind of one layer: every `*_dense_every`-th layer is dense."""
    every = getattr(self, f"{stack}_dense_every")
    if every and (layer + 1) % every == 0:
      return "dense"
    return getattr(self, f"{stack}_attention")

  def packing_alignment(self, stack: str) -> int:
    """Packed examples of this stack start on multiples of this (1: anywhere)."""
    layers = getattr(self, f"num_{stack}_layers")
    if any(kinds.aligned(self.attention_kind(stack, i)) for i in range(layers)):
      return self.attention.block_size
    return 1

  def check_lengths(self, input_length: int, target_length: int):
    """Raises if a layer's attention sizes cannot serve sequences of these lengths."""
    for stack, length in zip(STACKS, (input_length, target_length)):
      for layer in range(getattr(self, f"num_{stack}_layers")):
        kinds.check_length(self.attention_kind(stack, layer), self.attention, length,
                           "model.attention")

  @classmethod
  def from_preset(cls, preset: str, **overrides) -> "ModelConfig":
    """Builds a config from a named preset plus keyword overrides (attention: a dict)."""
    if preset not in PRESETS:
      raise ValueError(f"unknown model preset {preset!r}; allowed: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise ValueError(f"unknown model config key(s) {unknown}; allowed: {sorted(fields)}")
    attention = overrides.pop("attention", None) or {}
    if isinstance(attention, dict):
      names = {f.name for f in dataclasses.fields(AttentionConfig)}
      bad = sorted(set(attention) - names)
      if bad:
        raise ValueError(f"unknown model.attention key(s) {bad}; allowed: {sorted(names)}")
      attention = AttentionConfig(**attention)
    return cls(**{**PRESETS[preset], **overrides, "attention": attention})

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]
