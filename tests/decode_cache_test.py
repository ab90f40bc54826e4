"""The decoding cache: written at the new position only, attended by blocks up to the
positions decoded so far, one cross-attention row per example, beams reordered by index
only when one changes parent; the tokens those of full-forward decoding."""

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax.model import decode
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder
import reference

EOS, VOCAB, LENGTH = 1, 64, 10


@pytest.fixture(scope="module", params=["rope", "t5_bias"])
def tiny(request):
  """A tiny scanned model (RoPE or T5's bias), sharpened so tokens vary, and 3 input rows."""
  cfg = ModelConfig.from_preset("tiny", vocab_size=VOCAB, position=request.param)
  assert cfg.scan_layers  # decoding slices the scanned stack's layers
  model = EncoderDecoder(cfg)
  inputs = jax.random.randint(jax.random.key(1), (3, 12), 2, VOCAB).at[1, 7:].set(0)
  params = jax.jit(model.init)(jax.random.key(0), inputs, inputs[:, :5])["params"]
  return model, jax.tree.map(lambda x: x * 3.0, params), inputs


def _blocks_of_four():
  """Caches grown 4 positions at a time: 10 tokens decode in phases of 4, 8 and 10."""
  return mock.patch.multiple(decode, CACHE_BLOCK=4, MAX_CACHE_PHASES=16)


def test_cache_spans_are_blocks_on_check_boundaries_then_the_length():
  cfg = ModelConfig.from_preset("tiny")
  assert decode.cache_spans(cfg, 64, 8) == (64,)
  assert decode.cache_spans(cfg, 200, 8) == (64, 128, 192, 200)
  assert decode.cache_spans(cfg, 2048, 8) == tuple(range(256, 2049, 256))  # 8 phases at most
  assert decode.cache_spans(cfg, 130, 3) == (66, 130)  # a multiple of check_every
  bigbird = ModelConfig.from_preset("tiny", decoder_attention="bigbird")
  assert decode.cache_spans(bigbird, 200, 8) == (200,)  # its pattern depends on the length


def test_greedy_sampling_and_beam_by_cache_blocks_equal_full_forward_decoding(tiny):
  model, params, inputs = tiny
  rng = jax.random.key(3)
  with _blocks_of_four():
    greedy = jax.jit(lambda p, x: decode.greedy_decode(model, p, x, max_length=LENGTH,
                                                       eos_id=EOS))(params, inputs)
    sample = jax.jit(lambda p, x, r: decode.sample_decode(
        model, p, x, r, max_length=LENGTH, eos_id=EOS, temperature=1.0, top_k=20,
        top_p=0.9))(params, inputs, rng)
    beams, scores = jax.jit(lambda p, x, alpha: decode.beam_search(
        model, p, x, beam_size=3, alpha=alpha, max_length=LENGTH, eos_id=EOS))(
            params, inputs, 0.6)
  np.testing.assert_array_equal(greedy, reference.full_forward_greedy(
      model, params, inputs, max_length=LENGTH, eos_id=EOS))
  np.testing.assert_array_equal(sample, reference.full_forward_sample(
      model, params, inputs, rng, max_length=LENGTH, eos_id=EOS, temperature=1.0, top_k=20,
      top_p=0.9))
  assert (np.asarray(sample) != np.asarray(greedy)).any()  # sampling did sample
  forward = jax.jit(lambda x, y: jax.nn.log_softmax(model.apply({"params": params}, x, y)))
  for row in range(inputs.shape[0]):
    want, want_score = reference.full_forward_beam_search(
        forward, inputs[row: row + 1], beams=3, alpha=0.6, length=LENGTH, eos=EOS,
        vocab=VOCAB)
    got = [int(t) for t in np.asarray(beams[row])]
    assert got[: len(want)] == list(want) and not any(got[len(want):]), row
    assert float(scores[row]) == pytest.approx(want_score, abs=1e-4)


def _inner(eqn):
  """The jaxprs in an equation's parameters (loop bodies, cond branches, pjit calls)."""
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(item, "eqns"):
        yield item
      elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
        yield item.jaxpr


def _primitives(jaxpr):
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for sub in _inner(eqn):
      names |= _primitives(sub)
  return names


def test_beam_search_carries_one_cache_per_layer_by_blocks_and_one_cross_row_per_example(tiny):
  model, params, inputs = tiny
  cfg, batch, beams = model.cfg, inputs.shape[0], 3
  with _blocks_of_four():
    traced = jax.make_jaxpr(lambda p, x: decode.beam_search(
        model, p, x, beam_size=beams, alpha=0.6, max_length=LENGTH, eos_id=EOS))(params, inputs)
  loops = [eqn.params["body_jaxpr"].jaxpr for eqn in traced.jaxpr.eqns
           if eqn.primitive.name == "while"]
  assert len(loops) == 3, len(loops)  # one per cache span: 4, 8, 10
  for body, span in zip(loops, (4, 8, 10)):
    shapes = [tuple(v.aval.shape) for v in body.invars]
    self_cache = (batch * beams, cfg.num_heads, span, cfg.head_dim)
    cross_cache = (batch, cfg.num_heads, inputs.shape[1], cfg.head_dim)
    # Every decoder layer has its own self-attention key and value buffer of this span,
    # and the cross-attention cache holds one row per example, not one per beam.
    assert shapes.count(self_cache) == 2 * cfg.num_decoder_layers, (span, shapes)
    assert shapes.count(cross_cache) == 2 * cfg.num_decoder_layers, (span, shapes)
    names = _primitives(body)
    assert "scan" not in names  # no scan over layers rewrites the caches each step
    # The beams' reorder: a loop that runs once when a parent changes, else not at all.
    assert "while" in names


def test_beams_reorder_the_cache_only_when_a_parent_changes():
  cache = {"decoder_0": {"self_attention": {"cached_key": jnp.arange(24.).reshape(6, 1, 4, 1)},
                         "cross_attention": {"cross_key": jnp.arange(2.)}}}
  same = decode._reorder_beams(cache, jnp.array([[0, 1, 2], [0, 1, 2]]), 2, 3)
  jax.tree.map(np.testing.assert_array_equal, same, cache)
  moved = decode._reorder_beams(cache, jnp.array([[2, 2, 0], [1, 0, 0]]), 2, 3)
  keys = np.asarray(moved["decoder_0"]["self_attention"]["cached_key"])
  np.testing.assert_array_equal(keys[:, 0, 0, 0], [8, 8, 0, 16, 12, 12])
  np.testing.assert_array_equal(moved["decoder_0"]["cross_attention"]["cross_key"], [0., 1.])
