"""Token-level losses."""

import jax
import jax.numpy as jnp


def cross_entropy(logits_BxTxV, targets_BxT, weights_BxT, *, label_smoothing: float = 0.0,
                  z_loss: float = 0.0):
  """Weighted softmax cross-entropy with optional label smoothing and z-loss.

  Returns (loss_sum, z_loss_sum, weight_sum); loss_sum includes the z-loss term,
  z_loss * log(Z)^2 per token (PaLM), which keeps the softmax normaliser near 1.
  """
  vocab = logits_BxTxV.shape[-1]
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  # Subtracting the entropy of the smoothed target makes a perfect prediction
  # score 0 whatever the smoothing, so losses stay comparable across runs.
  normalizer = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
  soft_targets = jax.nn.one_hot(targets_BxT, vocab) * (confidence - low) + low
  log_z_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
  log_probs = logits_BxTxV - log_z_BxT[..., None]
  loss_BxT = -jnp.sum(soft_targets * log_probs, axis=-1) - normalizer
  z_loss_BxT = z_loss * jnp.square(log_z_BxT)
  weights_BxT = weights_BxT.astype(jnp.float32)
  return (jnp.sum((loss_BxT + z_loss_BxT) * weights_BxT), jnp.sum(z_loss_BxT * weights_BxT),
          jnp.sum(weights_BxT))


def token_accuracy(logits_BxTxV, targets_BxT, weights_BxT):
  """Returns (number of correct argmax predictions, weight sum)."""
  correct = (jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT).astype(jnp.float32)
  weights_BxT = weights_BxT.astype(jnp.float32)
  return jnp.sum(correct * weights_BxT), jnp.sum(weights_BxT)
