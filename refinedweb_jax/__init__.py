"""refinedweb_jax: an encoder-decoder Transformer with sparse attention, multi-task learning and distillation."""

__version__ = "0.1.0"
