"""Token-level losses of the model's logits: training, evaluation and distillation use them.

Every function returns one value per target token (shape BxT); callers weight and sum.
"""

import functools

import jax
import jax.numpy as jnp

# Tokens per chunk of the fused vocabulary projection and loss: a chunk's float32 logits
# stay near this many entries (64 MB), whatever the vocabulary.
CHUNK_ENTRIES = 1 << 24


def cross_entropy(logits_BxTxV, targets_BxT, *, label_smoothing: float = 0.0,
                  z_loss: float = 0.0):
  """Softmax cross-entropy with optional label smoothing, and the z-loss: (loss_BxT, z_BxT).

  The z-loss, z_loss * log(Z)^2 per token (PaLM), keeps the softmax normaliser near 1;
  it is returned apart so that a caller can weigh it differently (training adds it).
  """
  vocab = logits_BxTxV.shape[-1]
  confidence, low, normalizer = _smoothing(vocab, label_smoothing)
  soft_targets = jax.nn.one_hot(targets_BxT, vocab) * (confidence - low) + low
  log_z_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
  log_probs = logits_BxTxV - log_z_BxT[..., None]
  loss_BxT = -jnp.sum(soft_targets * log_probs, axis=-1) - normalizer
  return loss_BxT, z_loss * jnp.square(log_z_BxT)


def _smoothing(vocab: int, label_smoothing: float):
  """(confidence, low, normalizer) of label smoothing over `vocab` classes."""
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  # Subtracting the entropy of the smoothed target makes a perfect prediction
  # score 0 whatever the smoothing, so losses stay comparable across runs.
  normalizer = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
  return confidence, low, normalizer


def projected_cross_entropy(y_NxD, w_VxD, targets_N, *, scale: float = 1.0,
                            dtype=jnp.float32, label_smoothing: float = 0.0,
                            z_loss: float = 0.0, chunk: int = 0):
  """cross_entropy and correct of logits = scale * y @ w^T, never holding all the logits.

  The N tokens go through in chunks (`chunk` tokens, default CHUNK_ENTRIES / V): each
  chunk's logits come from `dtype` operands with float32 accumulation, and only their
  log-sum-exp, target logit, sum and argmax are kept; the backward recomputes a chunk's
  logits and multiplies their gradient in `dtype`, summing w's gradient in float32.
  Returns (loss_N, z_N, correct_N), equal to cross_entropy's and correct's.
  """
  vocab = w_VxD.shape[0]
  n = y_NxD.shape[0]
  chunk = min(n, chunk or max(8, CHUNK_ENTRIES // vocab))
  pad = -n % chunk
  y_NxD = jnp.pad(y_NxD, ((0, pad), (0, 0)))
  targets_N = jnp.pad(targets_N.astype(jnp.int32), (0, pad))
  lse, label, total, hit = _vocab_stats(y_NxD, w_VxD, targets_N, float(scale),
                                        jnp.dtype(dtype), chunk)
  lse, label, total, hit = (x[:n] for x in (lse, label, total, hit))
  confidence, low, normalizer = _smoothing(vocab, label_smoothing)
  # -sum(soft * log_softmax) with soft = low everywhere plus (confidence - low) at the label.
  loss_N = lse - (confidence - low) * label - low * total - normalizer
  return loss_N, z_loss * jnp.square(lse), hit


def _chunk_logits(y_CxD, w_VxD, scale, dtype):
  logits = jax.lax.dot_general(y_CxD.astype(dtype), w_VxD.astype(dtype),
                               (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  return logits * scale


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _vocab_stats(y_NxD, w_VxD, targets_N, scale, dtype, chunk):
  """Per token: (log-sum-exp, target logit, sum of logits, argmax == target) of the logits."""
  return _vocab_stats_fwd(y_NxD, w_VxD, targets_N, scale, dtype, chunk)[0]


def _vocab_stats_fwd(y_NxD, w_VxD, targets_N, scale, dtype, chunk):
  w = w_VxD.astype(dtype)  # once, not per chunk

  def one(_, xs):
    y_CxD, t_C = xs
    logits = _chunk_logits(y_CxD, w, scale, dtype)
    label = jnp.take_along_axis(logits, t_C[:, None], axis=-1)[:, 0]
    hit = (jnp.argmax(logits, axis=-1) == t_C).astype(jnp.float32)
    return None, (jax.nn.logsumexp(logits, axis=-1), label, jnp.sum(logits, axis=-1), hit)
  chunks = (y_NxD.reshape(-1, chunk, y_NxD.shape[-1]), targets_N.reshape(-1, chunk))
  _, stats = jax.lax.scan(one, None, chunks)
  stats = tuple(x.reshape(-1) for x in stats)
  return stats, (y_NxD, w_VxD, targets_N, stats[0])


def _vocab_stats_bwd(scale, dtype, chunk, saved, grads):
  y_NxD, w_VxD, targets_N, lse_N = saved
  g_lse, g_label, g_total, _ = grads
  w = w_VxD.astype(dtype)

  def one(dw_VxD, xs):
    y_CxD, t_C, lse_C, gl_C, gt_C, gs_C = xs
    logits = _chunk_logits(y_CxD, w, scale, dtype)
    ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)
    dlogits = (gl_C[:, None] * jnp.exp(logits - lse_C[:, None]) + gs_C[:, None]
               + jnp.where(ids == t_C[:, None], gt_C[:, None], 0.0))
    dlogits = (dlogits * scale).astype(dtype)  # the one [tokens, vocab] gradient, in dtype
    dy = jax.lax.dot_general(dlogits, w, (((1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)
    dw = jax.lax.dot_general(dlogits, y_CxD.astype(dtype), (((0,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)
    return dw_VxD + dw, dy.astype(y_CxD.dtype)

  rows = lambda x: x.reshape((-1, chunk) + x.shape[1:])
  xs = tuple(map(rows, (y_NxD, targets_N, lse_N, g_lse, g_label, g_total)))
  dw, dy = jax.lax.scan(one, jnp.zeros(w_VxD.shape, jnp.float32), xs)
  return dy.reshape(y_NxD.shape), dw.astype(w_VxD.dtype), None


_vocab_stats.defvjp(_vocab_stats_fwd, _vocab_stats_bwd)


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
