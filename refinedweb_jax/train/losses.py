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


def topk_distillation(student_logits_BxTxV, teacher_logprobs_BxTxK, teacher_ids_BxTxK,
                      weights_BxT, *, temperature: float = 1.0):
  """Weighted KL(teacher_T || student_T) over the teacher's top-k tokens plus a tail bucket.

  The teacher gives the log-probabilities of its k most likely tokens; the rest of
  its mass, 1 - sum(exp(top-k)), forms one "tail" bucket. The student's full
  distribution is grouped the same way: its logits at the teacher's k ids and the
  logsumexp of all other entries. Temperature acts on these k+1 buckets alike on
  both sides (p_T ∝ p^(1/T)), so the KL is 0 exactly when the student's grouped
  distribution equals the teacher's; the teacher's tail at T != 1 is not
  recoverable from top-k values, which rules out spreading T over the tail's
  members. At T = 1 this is the KL between the exact grouped distributions; with
  k = V the tail is empty and it is the full-vocabulary KL at any T. The teacher
  arrays are constants (stop_gradient). Returns (kl_sum, weight_sum).
  """
  vocab, k = student_logits_BxTxV.shape[-1], teacher_ids_BxTxK.shape[-1]
  teacher_BxTxK = jax.lax.stop_gradient(teacher_logprobs_BxTxK.astype(jnp.float32))
  ids_BxTxK = jax.lax.stop_gradient(teacher_ids_BxTxK)
  logits_BxTxV = student_logits_BxTxV.astype(jnp.float32)
  student_BxTxK = jnp.take_along_axis(logits_BxTxV, ids_BxTxK, axis=-1)
  if k < vocab:
    rows_NxV = logits_BxTxV.reshape(-1, vocab)
    rows = jnp.arange(rows_NxV.shape[0])[:, None]
    # A finite fill: a fully masked row must give a finite logsumexp and gradient.
    tail_NxV = rows_NxV.at[rows, ids_BxTxK.reshape(-1, k)].set(-1e30)
    student_tail = jax.nn.logsumexp(tail_NxV, axis=-1).reshape(student_BxTxK.shape[:-1])
    mass_BxT = jnp.sum(jnp.exp(teacher_BxTxK), axis=-1)
    # Rounded top-k values may sum past 1: the tail is then empty (-inf, probability 0).
    teacher_tail = jnp.log(jnp.maximum(1.0 - mass_BxT, 0.0))
    student_BxTxK = jnp.concatenate([student_BxTxK, student_tail[..., None]], axis=-1)
    teacher_BxTxK = jnp.concatenate([teacher_BxTxK, teacher_tail[..., None]], axis=-1)
  log_q = jax.nn.log_softmax(student_BxTxK / temperature, axis=-1)
  log_p = jax.nn.log_softmax(teacher_BxTxK / temperature, axis=-1)
  p = jnp.exp(log_p)
  kl_BxT = jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)
  weights_BxT = weights_BxT.astype(jnp.float32)
  return jnp.sum(kl_BxT * weights_BxT), jnp.sum(weights_BxT)
