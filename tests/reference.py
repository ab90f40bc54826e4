"""Plain reference implementations the tests compare the fast paths against."""

import jax
import jax.numpy as jnp

from refinedweb_jax.model import decode


def greedy(model, params, inputs_BxS, *, max_length: int, eos_id: int):
  """KV-cached greedy decoding, jitted: the path under test."""
  return jax.jit(lambda p, x: decode.greedy_decode(model, p, x, max_length=max_length,
                                                   eos_id=eos_id))(params, inputs_BxS)


def full_forward_greedy(model, params, inputs_BxS, *, max_length: int, eos_id: int):
  """Greedy decoding by re-running the whole decoder each step (the uncached reference)."""
  batch = inputs_BxS.shape[0]
  out_BxL = jnp.zeros((batch, max_length), jnp.int32)
  done_B = jnp.zeros((batch,), bool)
  forward = jax.jit(lambda p, x, y: model.apply({"params": p}, x, y))
  for step in range(max_length):
    decoder_inputs = jnp.pad(out_BxL[:, :-1], ((0, 0), (1, 0)))
    logits = forward(params, inputs_BxS, decoder_inputs)
    next_B = jnp.where(done_B, 0, jnp.argmax(logits[:, step], axis=-1).astype(jnp.int32))
    out_BxL = out_BxL.at[:, step].set(next_B)
    done_B = done_B | (next_B == eos_id)
  return out_BxL
