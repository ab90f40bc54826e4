"""Decoding: cached == uncached, beam 1 == greedy, beam == exhaustive search, seeded sampling."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax.model import decode
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder
import reference

EOS = 1


def _model(vocab_size=512, scale=3.0):
  cfg = ModelConfig.from_preset("tiny", vocab_size=vocab_size)
  model = EncoderDecoder(cfg)
  inputs = jax.random.randint(jax.random.key(1), (3, 12), 2, vocab_size).at[1, 7:].set(0)
  params = model.init(jax.random.key(0), inputs, inputs[:, :5])["params"]
  # Sharpen the random model so its outputs vary from step to step.
  return model, jax.tree.map(lambda x: x * scale, params), inputs


@pytest.fixture(scope="module")
def tiny():
  return _model()


def _run(model, params, inputs, seed=0, **settings):
  fn = decode.make_decode_fn(model, decode.Decoding(**settings), eos_id=EOS)
  return np.asarray(fn(params, inputs, jax.random.key(seed)))


def test_cached_greedy_equals_uncached_greedy(tiny):
  model, params, inputs = tiny
  cached = _run(model, params, inputs, max_new_tokens=10)
  full = reference.full_forward_greedy(model, params, inputs, max_length=10, eos_id=EOS)
  np.testing.assert_array_equal(cached, np.asarray(full))
  assert len(np.unique(cached)) > 3


def test_beam_one_equals_greedy(tiny):
  model, params, inputs = tiny
  greedy = _run(model, params, inputs, max_new_tokens=10)
  for alpha in (0.0, 0.6, 2.0):
    beam = _run(model, params, inputs, max_new_tokens=10, beam_size=1, length_penalty=alpha)
    np.testing.assert_array_equal(beam, greedy)


def _exhaustive_best(model, params, inputs_1xS, vocab, length, alpha):
  """Scores every sequence that ends at EOS or at the length limit; returns the best."""
  forward = jax.jit(lambda y: jax.nn.log_softmax(model.apply({"params": params},
                                                             inputs_1xS, y)))
  scores = {}
  for n in range(1, length + 1):
    for seq in itertools.product(range(vocab), repeat=n):
      if EOS in seq[:-1] or (n < length and seq[-1] != EOS):
        continue
      logp = forward(jnp.array([(0,) + seq[:-1]], jnp.int32))[0]
      total = float(sum(logp[i, t] for i, t in enumerate(seq)))
      scores[seq] = total / decode.length_penalty(n, alpha)
  return scores


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
def test_beam_search_finds_the_best_sequence_of_exhaustive_search(alpha):
  vocab, length = 6, 3
  model, params, inputs = _model(vocab_size=vocab, scale=2.0)
  inputs = inputs[:1]
  scores = _exhaustive_best(model, params, inputs, vocab, length, alpha)
  best = max(scores.values())
  # vocab**(length-1) beams keep every prefix alive, so the search is exact.
  tokens, score = jax.jit(lambda p, x: decode.beam_search(
      model, p, x, beam_size=vocab ** (length - 1), alpha=alpha, max_length=length,
      eos_id=EOS))(params, inputs)
  found = tuple(int(t) for t in np.asarray(tokens[0]))
  found = found[: found.index(EOS) + 1] if EOS in found else found
  assert float(score[0]) == pytest.approx(best, abs=1e-4)
  assert scores[found] == pytest.approx(best, abs=1e-4)
  # A narrower beam can only do as well or worse, and still returns a real sequence.
  tokens4, score4 = decode.beam_search(model, params, inputs, beam_size=4, alpha=alpha,
                                       max_length=length, eos_id=EOS)
  found4 = tuple(int(t) for t in np.asarray(tokens4[0]))
  found4 = found4[: found4.index(EOS) + 1] if EOS in found4 else found4
  assert scores[found4] == pytest.approx(float(score4[0]), abs=1e-4)
  assert float(score4[0]) <= best + 1e-4


def test_beam_rows_are_independent_and_padded_after_eos(tiny):
  model, params, inputs = tiny
  both = _run(model, params, inputs, max_new_tokens=10, beam_size=3)
  alone = _run(model, params, inputs[1:2], max_new_tokens=10, beam_size=3)
  np.testing.assert_array_equal(both[1:2], alone)
  for row in both:
    if EOS in row:
      assert not row[list(row).index(EOS) + 1:].any()


def test_sampling_is_seeded_and_top_k_one_is_greedy(tiny):
  model, params, inputs = tiny
  settings = dict(max_new_tokens=10, temperature=1.5)
  a = _run(model, params, inputs, seed=3, **settings)
  b = _run(model, params, inputs, seed=3, **settings)
  c = _run(model, params, inputs, seed=4, **settings)
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
  greedy = _run(model, params, inputs, max_new_tokens=10)
  np.testing.assert_array_equal(
      _run(model, params, inputs, seed=5, max_new_tokens=10, temperature=2.0, top_k=1), greedy)
  np.testing.assert_array_equal(
      _run(model, params, inputs, seed=5, max_new_tokens=10, temperature=1.0, top_p=1e-6),
      greedy)


def test_filter_logits_keeps_top_k_and_the_top_p_nucleus():
  logits = jnp.log(jnp.array([[0.5, 0.05, 0.3, 0.15]]))
  kept = lambda **kw: np.isfinite(np.asarray(decode.filter_logits(logits, **kw)))[0].tolist()
  assert kept(top_k=2) == [True, False, True, False]
  assert kept(top_p=0.5) == [True, False, False, False]
  assert kept(top_p=0.8) == [True, False, True, False]
  assert kept(top_p=0.81) == [True, False, True, True]
  assert kept(top_k=3, top_p=1.0) == [True, False, True, True]


def test_filter_logits_matches_a_sorting_reference_with_ties():
  rng = np.random.default_rng(0)
  for trial in range(6):
    x = np.asarray(rng.normal(size=(3, 300)) * rng.uniform(0.1, 5), np.float32)
    x[:, :20] = x[:, :1]  # ties
    k, p = int(rng.integers(1, 40)), float(rng.uniform(0.05, 0.95))
    kept_k = np.isfinite(np.asarray(decode.filter_logits(jnp.asarray(x), top_k=k)))
    np.testing.assert_array_equal(kept_k, x >= np.sort(x, -1)[:, -k][:, None])
    probs = np.asarray(jax.nn.softmax(jnp.asarray(x), -1), np.float64)
    mass_above = np.array([[probs[r][x[r] > v].sum() for v in x[r]] for r in range(3)])
    kept_p = np.isfinite(np.asarray(decode.filter_logits(jnp.asarray(x), top_p=p)))
    np.testing.assert_array_equal(kept_p, mass_above < p)


@pytest.mark.parametrize("settings, flag", [
    (dict(temperature=-1.0), "--temperature"), (dict(top_p=0.0), "--top-p"),
    (dict(top_p=1.5), "--top-p"), (dict(beam_size=0), "--beam"),
    (dict(max_new_tokens=0), "--max-new-tokens"), (dict(top_k=-2), "--top-k"),
    (dict(length_penalty=-0.1), "--length-penalty"),
    (dict(beam_size=4, temperature=0.7), "--beam")])
def test_bad_decoding_settings_name_the_flag(settings, flag):
  with pytest.raises(ValueError, match=flag):
    decode.Decoding(**settings)


def _reference_beam_search(forward, inputs_1xS, *, beams, alpha, length, eos, vocab):
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


def test_beam_search_keeps_its_beams_like_a_full_forward_reference():
  vocab, beams, length = 512, 4, 8
  model, params, inputs = _model(vocab_size=vocab, scale=2.0)
  forward = jax.jit(lambda x, y: jax.nn.log_softmax(model.apply({"params": params}, x, y)))
  # EOS ids the random model predicts often, so that beams end at many steps.
  never = vocab  # an id that no step produces
  greedy = np.asarray(reference.greedy(model, params, inputs, max_length=length, eos_id=never))
  frequent = [int(t) for t in np.argsort(-np.bincount(greedy.ravel(), minlength=vocab))[:3]]
  for eos in frequent:
    for alpha in (0.0, 0.6):
      tokens, scores = jax.jit(lambda p, x: decode.beam_search(
          model, p, x, beam_size=beams, alpha=alpha, max_length=length, eos_id=eos))(
              params, inputs)
      for row in range(inputs.shape[0]):
        want, want_score = _reference_beam_search(
            forward, inputs[row: row + 1], beams=beams, alpha=alpha, length=length, eos=eos,
            vocab=vocab)
        got = [int(t) for t in np.asarray(tokens[row])]
        assert got[: len(want)] == list(want) and not any(got[len(want):]), (eos, alpha, row)
        assert float(scores[row]) == pytest.approx(want_score, abs=1e-4)
