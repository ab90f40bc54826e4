"""Token-level losses of the model's logits: training, evaluation and distillation use them.

Every function returns one value per target token (shape BxT); callers weight and sum.
"""

import jax
import jax.numpy as jnp


def cross_entropy(logits_BxTxV, targets_BxT, *, label_smoothing: float = 0.0,
                  z_loss: float = 0.0):
  """Softmax cross-entropy with optional label smoothing, and the z-loss: (loss_BxT, z_BxT).

  The z-loss, z_loss * log(Z)^2 per token (PaLM), keeps the softmax normaliser near 1;
  it is returned apart so that a caller can weigh it differently (training adds it).
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
  return loss_BxT, z_loss * jnp.square(log_z_BxT)


def correct(logits_BxTxV, targets_BxT):
  """1.0 where the argmax prediction is the target, else 0.0."""
  return (jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT).astype(jnp.float32)


def topk_distillation(student_logits_BxTxV, teacher_logprobs_BxTxJ, teacher_ids_BxTxJ, *,
                      temperature: float = 1.0):
  """KL(teacher_T || student_T) per token over the teacher's top-k tokens plus a tail bucket.

  The teacher gives the log-probabilities of its k most likely tokens; the rest of
  its mass, 1 - sum(exp(top-k)), forms one "tail" bucket. The student's full
  distribution is grouped the same way: its logits at the teacher's k ids and the
  logsumexp of all other entries. Temperature acts on these k+1 buckets alike on
  both sides (p_T ∝ p^(1/T)), so the KL is 0 exactly when the student's grouped
  distribution equals the teacher's; the teacher's tail at T != 1 is not
  recoverable from top-k values, which rules out spreading T over the tail's
  members. At T = 1 this is the KL between the exact grouped distributions; with
  k = V the tail is empty and it is the full-vocabulary KL at any T. The teacher
  arrays are constants (stop_gradient). Returns kl_BxT.
  """
  vocab, k = student_logits_BxTxV.shape[-1], teacher_ids_BxTxJ.shape[-1]
  teacher_BxTxJ = jax.lax.stop_gradient(teacher_logprobs_BxTxJ.astype(jnp.float32))
  ids_BxTxJ = jax.lax.stop_gradient(teacher_ids_BxTxJ)
  logits_BxTxV = student_logits_BxTxV.astype(jnp.float32)
  student_BxTxJ = jnp.take_along_axis(logits_BxTxV, ids_BxTxJ, axis=-1)
  if k < vocab:
    rows_NxV = logits_BxTxV.reshape(-1, vocab)
    rows = jnp.arange(rows_NxV.shape[0])[:, None]
    # A finite fill: a fully masked row must give a finite logsumexp and gradient.
    tail_NxV = rows_NxV.at[rows, ids_BxTxJ.reshape(-1, k)].set(-1e30)
    student_tail = jax.nn.logsumexp(tail_NxV, axis=-1).reshape(student_BxTxJ.shape[:-1])
    mass_BxT = jnp.sum(jnp.exp(teacher_BxTxJ), axis=-1)
    # Rounded top-k values may sum past 1: the tail is then empty (-inf, probability 0).
    teacher_tail = jnp.log(jnp.maximum(1.0 - mass_BxT, 0.0))
    student_BxTxJ = jnp.concatenate([student_BxTxJ, student_tail[..., None]], axis=-1)
    teacher_BxTxJ = jnp.concatenate([teacher_BxTxJ, teacher_tail[..., None]], axis=-1)
  log_q = jax.nn.log_softmax(student_BxTxJ / temperature, axis=-1)
  log_p = jax.nn.log_softmax(teacher_BxTxJ / temperature, axis=-1)
  p = jnp.exp(log_p)
  return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)
