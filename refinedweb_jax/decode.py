"""Key/value-cached decoding inside a jitted lax.while_loop."""

import functools

import jax
import jax.numpy as jnp


def init_cache(model, params, enc_BxSxD, inputs_BxS, max_length: int):
  """The decoder cache: zeroed self-attention K/V of length L, encoder K/V projected once."""
  batch = inputs_BxS.shape[0]
  dummy_BxL = jnp.zeros((batch, max_length), jnp.int32)
  _, variables = model.apply({"params": params}, enc_BxSxD, inputs_BxS, dummy_BxL,
                             decode=True, method="decode", mutable=["cache"])
  return variables["cache"]


def greedy_decode(model, params, inputs_BxS, *, max_length: int, eos_id: int,
                  inputs_segment_ids=None):
  """Greedy decoding; returns tokens_BxL, each row padded with 0 after its EOS."""
  enc_BxSxD = model.apply({"params": params}, inputs_BxS, inputs_segment_ids, method="encode")
  cache = init_cache(model, params, enc_BxSxD, inputs_BxS, max_length)
  batch = inputs_BxS.shape[0]

  def cond(carry):
    step, _, _, _, done_B = carry
    return (step < max_length) & ~jnp.all(done_B)

  def body(carry):
    step, prev_B, cache, out_BxL, done_B = carry
    logits_Bx1xV, updated = model.apply(
        {"params": params, "cache": cache}, enc_BxSxD, inputs_BxS, prev_B[:, None],
        inputs_segment_ids, decoder_positions=jnp.full((batch, 1), step, jnp.int32),
        decode=True, method="decode", mutable=["cache"])
    next_B = jnp.argmax(logits_Bx1xV[:, 0], axis=-1).astype(jnp.int32)
    next_B = jnp.where(done_B, 0, next_B)
    out_BxL = jax.lax.dynamic_update_slice_in_dim(out_BxL, next_B[:, None], step, 1)
    return step + 1, next_B, updated["cache"], out_BxL, done_B | (next_B == eos_id)

  carry = (jnp.int32(0), jnp.zeros((batch,), jnp.int32), cache,
           jnp.zeros((batch, max_length), jnp.int32), jnp.zeros((batch,), bool))
  return jax.lax.while_loop(cond, body, carry)[3]


def make_greedy_fn(model, *, max_length: int, eos_id: int):
  """A jitted greedy decoder f(params, inputs_BxS) -> tokens_BxL."""
  return jax.jit(functools.partial(greedy_decode, model, max_length=max_length, eos_id=eos_id))


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
