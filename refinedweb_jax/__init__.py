"""refinedweb_jax: encoder-decoder Transformer, sparse attention, multi-task learning, distillation."""

__version__ = "0.1.0"
