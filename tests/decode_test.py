"""Decoding: cached == uncached, beam 1 == greedy, beam == exhaustive search, seeded sampling,
the same tokens whatever the stop-check interval and the cutoff search, 16-bit parameters.

The models, parameters and jitted decoders are built once per module and shared, so that
the file compiles a few executables (it also runs on accelerators under a time budget).
"""

import functools
import itertools
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax.model import decode, quantize
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder
import reference

EOS = 1


@functools.lru_cache(maxsize=None)
def _base(vocab_size):
  """(model, unscaled params, inputs_3x12). One jitted init for all: a smaller vocabulary
  keeps the first rows of the 512-token embedding (the tied output layer's too)."""
  model = EncoderDecoder(ModelConfig.from_preset("tiny", vocab_size=vocab_size))
  inputs = jax.random.randint(jax.random.key(1), (3, 12), 2, vocab_size).at[1, 7:].set(0)
  if vocab_size == 512:
    params = jax.jit(model.init)(jax.random.key(0), inputs, inputs[:, :5])["params"]
  else:
    params = nn.meta.unbox(_base(512)[1])
    params = {**params, "token_embedding": {
        "embedding": params["token_embedding"]["embedding"][:vocab_size]}}
  return model, params, inputs


def _model(vocab_size=512, scale=3.0):
  model, params, inputs = _base(vocab_size)
  # Sharpen the random model so its outputs vary from step to step.
  return model, jax.tree.map(lambda x: x * scale, params), inputs


@pytest.fixture(scope="module")
def tiny():
  return _model()


_DECODERS = {}


def _run(model, params, inputs, seed=0, check_every=None, **settings):
  """Tokens of make_decode_fn for these settings, compiled once per module."""
  key = (id(model), decode.Decoding(**settings), check_every, inputs.shape)
  if key not in _DECODERS:
    _DECODERS[key] = decode.make_decode_fn(model, key[1], eos_id=EOS, check_every=check_every)
  return np.asarray(_DECODERS[key](params, inputs, jax.random.key(seed)))


def test_cached_greedy_equals_uncached_greedy(tiny):
  model, params, inputs = tiny
  cached = _run(model, params, inputs, max_new_tokens=10)
  full = reference.full_forward_greedy(model, params, inputs, max_length=10, eos_id=EOS)
  np.testing.assert_array_equal(cached, np.asarray(full))
  assert len(np.unique(cached)) > 3


def test_beam_one_equals_greedy(tiny):
  model, params, inputs = tiny
  greedy = _run(model, params, inputs, max_new_tokens=10)
  beam = jax.jit(lambda p, x, alpha: decode.beam_search(
      model, p, x, beam_size=1, alpha=alpha, max_length=10, eos_id=EOS)[0])
  for alpha in (0.0, 0.6, 2.0):
    np.testing.assert_array_equal(beam(params, inputs, alpha), greedy)


def _every_sequence(model, params, inputs_1xS, vocab, length):
  """{sequence: (log-probability, length)} of every one that ends at EOS or at the limit."""
  forward = jax.jit(lambda y: jax.nn.log_softmax(model.apply({"params": params},
                                                             inputs_1xS, y)))
  totals = {}
  for n in range(1, length + 1):
    for seq in itertools.product(range(vocab), repeat=n):
      if EOS in seq[:-1] or (n < length and seq[-1] != EOS):
        continue
      # Padded to the limit (one compilation): causal positions never see the padding.
      logp = forward(jnp.array([((0,) + seq[:-1] + (0,) * length)[:length]], jnp.int32))[0]
      totals[seq] = (float(sum(logp[i, t] for i, t in enumerate(seq))), n)
  return totals


@pytest.fixture(scope="module")
def six_tokens():
  """A 6-token model, one input row, every sequence's log-probability, and beam searches
  of width 36 (exact) and 4."""
  vocab, length = 6, 3
  model, params, inputs = _model(vocab_size=vocab, scale=2.0)
  search = lambda beams: jax.jit(lambda p, x, alpha: decode.beam_search(
      model, p, x, beam_size=beams, alpha=alpha, max_length=length, eos_id=EOS))
  totals = _every_sequence(model, params, inputs[:1], vocab, length)
  # vocab**(length-1) beams keep every prefix alive, so that search is exact.
  return params, inputs[:1], totals, search(vocab ** (length - 1)), search(4)


def _until_eos(tokens):
  found = tuple(int(t) for t in np.asarray(tokens))
  return found[: found.index(EOS) + 1] if EOS in found else found


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
def test_beam_search_finds_the_best_sequence_of_exhaustive_search(six_tokens, alpha):
  params, inputs, totals, exact, narrow = six_tokens
  scores = {seq: logp / decode.length_penalty(n, alpha) for seq, (logp, n) in totals.items()}
  best = max(scores.values())
  tokens, score = exact(params, inputs, alpha)
  assert float(score[0]) == pytest.approx(best, abs=1e-4)
  assert scores[_until_eos(tokens[0])] == pytest.approx(best, abs=1e-4)
  # A narrower beam can only do as well or worse, and still returns a real sequence.
  tokens4, score4 = narrow(params, inputs, alpha)
  assert scores[_until_eos(tokens4[0])] == pytest.approx(float(score4[0]), abs=1e-4)
  assert float(score4[0]) <= best + 1e-4


def test_beam_rows_are_independent_and_padded_after_eos(tiny):
  model, params, inputs = tiny
  both = _run(model, params, inputs, max_new_tokens=10, beam_size=3)
  alone = _run(model, params, inputs[jnp.array([1, 1, 1])], max_new_tokens=10, beam_size=3)
  np.testing.assert_array_equal(both[1:2], alone[:1])  # among other rows or copies of itself
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


def _every_method(model, eos_length):
  """A jitted f(params, inputs, rng, eos) -> {(method, check_every): output} of greedy,
  sampling (both cutoff searches at check_every 1 and 8), and beam search in both
  styles, for check_every 1, 3 and 8 (one executable)."""
  def run(params, inputs, rng, eos):
    out, length = {}, eos_length
    for k in (1, 3, 8):
      out["greedy", k] = decode.greedy_decode(model, params, inputs, max_length=length,
                                              eos_id=eos, check_every=k)
      for search in decode.CUTOFF_SEARCHES[: 1 if k == 3 else 2]:
        with mock.patch.dict(decode.CUTOFF_SEARCH, {jax.default_backend(): search}):
          out[search, k] = decode.sample_decode(
              model, params, inputs, rng, max_length=length, eos_id=eos, temperature=1.0,
              top_k=20, top_p=0.9, check_every=k)
      for style in decode.LENGTH_PENALTY_STYLES:
        out[style, k] = decode.beam_search(model, params, inputs, beam_size=3, alpha=0.6,
                                           max_length=length, eos_id=eos, style=style,
                                           check_every=k)
    return out
  return jax.jit(run)


def test_same_tokens_whatever_the_stop_check_interval_and_the_cutoff_search(tiny):
  model, params, inputs = tiny
  length = 20  # a multiple of neither 3 nor 8
  run = _every_method(model, length)
  rng = jax.random.key(7)
  endless = run(params, inputs, rng, -1)  # no EOS: every loop runs to the length limit
  # An EOS that two rows reach at different steps; with the first of them twice, every
  # row ends and the loops stop early (mid-chunk for some check_every).
  greedy = np.asarray(endless["greedy", 1])
  firsts = {t: [list(row).index(t) if t in row else length for row in greedy]
            for t in np.unique(greedy)}
  shared = [t for t, at in firsts.items() if sorted(at)[1] < length - 2 and
            len(set(at) - {length}) >= 2]
  assert shared, "no token that two rows emit; pick other inputs"
  eos = min(shared, key=lambda t: sorted(firsts[t])[1])
  a, b = [r for r in range(3) if firsts[eos][r] < length][:2]
  ending = run(params, inputs[jnp.array([a, b, a])], rng, int(eos))
  tokens = np.asarray(ending["greedy", 1])
  assert (tokens == eos).any(axis=1).all() and not tokens[:, -2:].any()
  for out in (endless, ending):
    for (method, k), value in out.items():
      reference_value = out[method, 1] if method not in decode.CUTOFF_SEARCHES else (
          out["bisection", 1])
      for got, want in zip(jax.tree.leaves(value), jax.tree.leaves(reference_value)):
        np.testing.assert_array_equal(got, want, err_msg=f"{method}, check_every={k}")
  assert (np.asarray(endless["bisection", 1]) != greedy).any()  # sampling did sample


def test_the_stop_check_interval_keeps_the_state_of_a_plain_while_loop():
  cond = lambda state: (state[0] < 10) & (state[1] < 17)
  body = lambda state, cache: ((state[0] + 1, state[1] + state[0] % 4), cache + 1)
  want = jax.lax.while_loop(cond, lambda s: body(s, 0)[0], (jnp.int32(0), jnp.int32(0)))
  for k in (1, 2, 3, 4, 8):
    got = decode._while(cond, body, (jnp.int32(0), jnp.int32(0)), jnp.int32(0), k)[0]
    assert [int(x) for x in got] == [int(x) for x in want], k
  with pytest.raises(ValueError, match="check_every must be an int >= 1, got 0"):
    decode.resolve_check_every(0)
  assert decode.resolve_check_every() == decode.CHECK_EVERY[jax.default_backend()]


@pytest.mark.parametrize("search", decode.CUTOFF_SEARCHES)
def test_filter_logits_keeps_top_k_and_the_top_p_nucleus(search):
  logits = jnp.log(jnp.array([[0.5, 0.05, 0.3, 0.15]]))
  kept = lambda **kw: np.isfinite(np.asarray(
      decode.filter_logits(logits, search=search, **kw)))[0].tolist()
  assert kept(top_k=2) == [True, False, True, False]
  assert kept(top_p=0.5) == [True, False, False, False]
  assert kept(top_p=0.8) == [True, False, True, False]
  assert kept(top_p=0.81) == [True, False, True, True]
  assert kept(top_k=3, top_p=1.0) == [True, False, True, True]
  assert kept(top_k=4) == kept(top_k=9) == [True] * 4
  with pytest.raises(ValueError, match="unknown cutoff search 'sort'"):
    decode.filter_logits(logits, top_k=2, search="sort")


@pytest.mark.parametrize("search", decode.CUTOFF_SEARCHES)
def test_filter_logits_matches_a_sorting_reference_with_ties(search):
  rng = np.random.default_rng(0)
  for trial in range(6):
    x = np.asarray(rng.normal(size=(3, 300)) * rng.uniform(0.1, 5), np.float32)
    x[:, :20] = x[:, :1]  # ties
    k, p = int(rng.integers(1, 40)), float(rng.uniform(0.05, 0.95))
    kept_k = np.isfinite(np.asarray(decode.filter_logits(jnp.asarray(x), top_k=k,
                                                         search=search)))
    np.testing.assert_array_equal(kept_k, x >= np.sort(x, -1)[:, -k][:, None])
    probs = np.asarray(jax.nn.softmax(jnp.asarray(x), -1), np.float64)
    mass_above = np.array([[probs[r][x[r] > v].sum() for v in x[r]] for r in range(3)])
    kept_p = np.isfinite(np.asarray(decode.filter_logits(jnp.asarray(x), top_p=p,
                                                         search=search)))
    np.testing.assert_array_equal(kept_p, mass_above < p)


def test_both_cutoff_searches_keep_the_same_tokens_at_the_boundaries():
  rng = np.random.default_rng(1)
  cases = []  # (logits, top_k, top_p)
  for trial in range(3):
    x = np.asarray(rng.normal(size=(4, 300)) * rng.uniform(0.1, 5), np.float32)
    x[:, :20] = x[:, :1]  # ties
    x[0, 40:50], x[0, 50:60] = -0.0, 0.0  # keys tell -0.0 from 0.0
    x[1, 100:] = -np.inf
    # top_p exactly at a nucleus boundary (the sum both searches compute), and between.
    keys, probs = decode._ordered_keys(jnp.asarray(x)), jax.nn.softmax(jnp.asarray(x), -1)
    at = float(decode._mass(keys, probs, keys[:, int(rng.integers(0, 100))][:, None])[0, 0])
    cases += [(x, top_k, top_p) for top_k in (0, int(rng.integers(1, 60)), 300)
              for top_p in (min(at, 0.999), float(rng.uniform(0.05, 0.99)))]
  both = jax.jit(lambda xs: [[decode.filter_logits(x, top_k=k, top_p=p, search=search)
                              for search in decode.CUTOFF_SEARCHES]
                             for x, (_, k, p) in zip(xs, cases)])  # one executable
  for (_, top_k, top_p), (a, b) in zip(cases, both([jnp.asarray(c[0]) for c in cases])):
    np.testing.assert_array_equal(a, b, err_msg=f"top_k={top_k}, top_p={top_p}")


def test_inference_params_cast_only_what_the_model_casts_on_accelerators():
  cfg = ModelConfig.from_preset("tiny", position="t5_bias", dtype="bfloat16")
  model = EncoderDecoder(cfg)
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.integers(2, 512, (2, 8)), jnp.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), inputs, inputs[:, :4])["params"]
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)
  cast = decode.inference_params(params, cfg, "gpu")
  for path, leaf in jax.tree_util.tree_leaves_with_path(cast):
    name = jax.tree_util.keystr(path)
    moved = "['kernel']" in name or "['embedding']" in name
    assert leaf.dtype == (jnp.bfloat16 if moved else jnp.float32), name
  assert any("relative_bias" in jax.tree_util.keystr(p) for p, _ in
             jax.tree_util.tree_leaves_with_path(cast))
  forward = jax.jit(lambda p: model.apply({"params": p}, inputs, inputs[:, :4]))
  np.testing.assert_array_equal(forward(cast), forward(params))  # the same logits
  # Unchanged: on CPU, for a float32 model, for int8 weights.
  assert decode.inference_params(params, cfg, "cpu") is params
  f32 = ModelConfig.from_preset("tiny", position="t5_bias")
  assert decode.inference_params(params, f32, "tpu") is params
  q = quantize.quantize(params)
  assert decode.inference_params(q, cfg, "gpu") is q
  # The decoding cache follows the compute dtype.
  cache = jax.eval_shape(lambda p: decode.init_cache(
      model, p, jnp.zeros((2, 8, cfg.d_model), jnp.bfloat16), inputs, 6), cast)
  dtypes = {leaf.dtype for leaf in jax.tree.leaves(cache)}
  assert dtypes == {jnp.dtype(jnp.bfloat16)}, dtypes


@pytest.mark.parametrize("settings, flag", [
    (dict(temperature=-1.0), "--temperature"), (dict(top_p=0.0), "--top-p"),
    (dict(top_p=1.5), "--top-p"), (dict(beam_size=0), "--beam"),
    (dict(max_new_tokens=0), "--max-new-tokens"), (dict(top_k=-2), "--top-k"),
    (dict(length_penalty=-0.1), "--length-penalty"),
    (dict(beam_size=4, temperature=0.7), "--beam")])
def test_bad_decoding_settings_name_the_flag(settings, flag):
  with pytest.raises(ValueError, match=flag):
    decode.Decoding(**settings)


def test_beam_search_keeps_its_beams_like_a_full_forward_reference():
  vocab, beams, length = 512, 4, 8
  model, params, inputs = _model(vocab_size=vocab, scale=2.0)
  forward = jax.jit(lambda x, y: jax.nn.log_softmax(model.apply({"params": params}, x, y)))
  # EOS ids the random model predicts often, so that beams end at many steps.
  greedy = _run(model, params, inputs, max_new_tokens=10)[:, :length]
  counts = np.bincount(greedy.ravel(), minlength=vocab)
  counts[[0, EOS]] = 0  # padding, and the shared decoder's own EOS
  frequent = [int(t) for t in np.argsort(-counts)[:3]]
  search = jax.jit(lambda p, x, eos, alpha: decode.beam_search(
      model, p, x, beam_size=beams, alpha=alpha, max_length=length, eos_id=eos))
  for eos in frequent:
    for alpha in (0.0, 0.6):
      tokens, scores = search(params, inputs, eos, alpha)
      for row in range(inputs.shape[0]):
        want, want_score = reference.full_forward_beam_search(
            forward, inputs[row: row + 1], beams=beams, alpha=alpha, length=length, eos=eos,
            vocab=vocab)
        got = [int(t) for t in np.asarray(tokens[row])]
        assert got[: len(want)] == list(want) and not any(got[len(want):]), (eos, alpha, row)
        assert float(scores[row]) == pytest.approx(want_score, abs=1e-4)
