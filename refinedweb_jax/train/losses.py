"""Token-sum losses of a train step: cross-entropy on the labels, and knowledge distillation.

Each returns (loss sum, {name: sum, "weight": total weight}) over the batch's target
tokens, for step.train_step, which divides every sum by the total weight.
"""

import jax
import jax.numpy as jnp

from refinedweb_jax.model import losses
from refinedweb_jax.model.transformer import forward, forward_features


def cross_entropy_sums(params, batch, rng, *, model, label_smoothing=0.0, z_loss=0.0):
  """(loss sum, {z_loss, accuracy, weight} sums) over the batch's target tokens.

  The vocabulary projection and the loss run fused, by token chunks
  (losses.projected_cross_entropy): no [tokens, vocab] logits are kept for the backward.
  """
  y_BxTxD, w_VxD, scale = forward_features(model, params, batch, deterministic=False,
                                           rngs={"dropout": rng})
  weights = batch["decoder_loss_weights"].astype(jnp.float32)
  targets_BxT = batch["decoder_target_tokens"]
  loss_N, z_N, correct_N = losses.projected_cross_entropy(
      y_BxTxD.reshape(-1, y_BxTxD.shape[-1]), w_VxD, targets_BxT.reshape(-1), scale=scale,
      dtype=model.cfg.compute_dtype, label_smoothing=label_smoothing, z_loss=z_loss)
  loss_BxT, z_BxT, correct_BxT = (x.reshape(targets_BxT.shape) for x in (loss_N, z_N, correct_N))
  total = lambda x: jnp.sum(x * weights)
  return total(loss_BxT + z_BxT), {"z_loss": total(z_BxT), "accuracy": total(correct_BxT),
                                   "weight": jnp.sum(weights)}


def teacher_topk(model, params, batch, k: int):
  """Teacher-forced (log-probabilities, ids) of the top k, and the log-sum-exp, per position."""
  logits_BxTxV = forward(model, params, batch)
  lse_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
  values_BxTxJ, ids_BxTxJ = jax.lax.top_k(logits_BxTxV, k)
  return values_BxTxJ - lse_BxT[..., None], ids_BxTxJ.astype(jnp.int32), lse_BxT


def kd_sums(params, batch, rng, teacher_params=None, *, model, alpha: float, temperature: float,
            label_smoothing: float = 0.0, z_loss: float = 0.0, teacher_model=None,
            top_k: int = 0):
  """Token sums of alpha * CE + (1 - alpha) * T^2 * KL, for step.train_step.

  The teacher's top-k come from the batch, or from teacher_model(teacher_params) run
  here on the same batch (online); either way they are constants for the gradient.
  """
  logits = forward(model, params, batch, deterministic=False, rngs={"dropout": rng})
  if teacher_model is not None:
    teacher_lp, teacher_ids, _ = teacher_topk(teacher_model, teacher_params, batch, top_k)
  else:
    teacher_lp, teacher_ids = batch["teacher_logprobs"], batch["teacher_ids"]
  teacher_lp, teacher_ids = jax.lax.stop_gradient((teacher_lp, teacher_ids))
  targets = batch["decoder_target_tokens"]
  weights = batch["decoder_loss_weights"].astype(jnp.float32)
  total = lambda x: jnp.sum(x * weights)
  ce_BxT, z_BxT = losses.cross_entropy(logits, targets, label_smoothing=label_smoothing,
                                       z_loss=z_loss)
  kl_BxT = losses.topk_distillation(logits, teacher_lp, teacher_ids, temperature=temperature)
  ce, kl, z = total(ce_BxT), total(kl_BxT), total(z_BxT)
  loss = alpha * ce + (1.0 - alpha) * temperature ** 2 * kl + z  # z-loss whatever alpha is
  return loss, {"ce": ce, "kd_kl": kl, "z_loss": z,
                "accuracy": total(losses.correct(logits, targets)), "weight": jnp.sum(weights)}
