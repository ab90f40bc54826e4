"""Plain reference implementations the tests compare the fast paths against."""

import jax
import jax.numpy as jnp
import numpy as np

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


def full_forward_sample(model, params, inputs_BxS, rng, *, max_length: int, eos_id: int,
                        temperature: float, top_k: int = 0, top_p: float = 1.0):
  """Sampling as decode.sample_decode draws (the same key per step), re-running the whole
  decoder each step."""
  batch = inputs_BxS.shape[0]
  out_BxL = jnp.zeros((batch, max_length), jnp.int32)
  done_B = jnp.zeros((batch,), bool)
  forward = jax.jit(lambda p, x, y: model.apply({"params": p}, x, y))
  for step in range(max_length):
    logits = forward(params, inputs_BxS, jnp.pad(out_BxL[:, :-1], ((0, 0), (1, 0))))[:, step]
    logits = decode.filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    next_B = jax.random.categorical(jax.random.fold_in(rng, step), logits, axis=-1)
    next_B = jnp.where(done_B, 0, next_B.astype(jnp.int32))
    out_BxL = out_BxL.at[:, step].set(next_B)
    done_B = done_B | (next_B == eos_id)
  return out_BxL


def full_forward_beam_search(forward, inputs_1xS, *, beams, alpha, length, eos, vocab):
  """Beam search over full forward passes, T5X's rule: of the best 2 * beams extensions,
  those ending at EOS (or at the length limit) join the finished set, and the best
  `beams` of the others stay live. Returns (tokens, score) of the best finished one."""
  live = [((), 0.0)]
  finished = []
  for step in range(length):
    candidates = []
    for number, (seq, logp) in enumerate(live):
      decoder_inputs = np.zeros((1, length), np.int32)
      decoder_inputs[0, 1: step + 1] = seq
      step_logp = np.asarray(forward(inputs_1xS, decoder_inputs))[0, step]
      candidates += [(logp + float(step_logp[t]), number * vocab + t, seq + (t,))
                     for t in range(vocab)]
    candidates.sort(key=lambda c: (-c[0], c[1]))
    live = []
    for logp, _, seq in candidates[: 2 * beams]:
      if seq[-1] == eos or step == length - 1:
        finished.append((logp / decode.length_penalty(len(seq), alpha), seq))
      elif len(live) < beams:
        live.append((seq, logp))
    finished = sorted(finished, key=lambda f: -f[0])[:beams]
  return finished[0][1], finished[0][0]
