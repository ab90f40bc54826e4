"""The TPU splash-attention path, run in Pallas interpret mode on CPU."""

import jax
import numpy as np
import pytest

from refinedweb_jax.model.attention import dense, kinds, local, splash
from refinedweb_jax.model.attention.kinds import AttentionConfig

jax.config.update("jax_default_matmul_precision", "highest")


def _inputs(length=256, batch=2, heads=2, dim=64):
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(key, (batch, length, heads, dim)) for key in keys)
  seg = np.ones((batch, length), np.int32)
  seg[1, 100:] = 2  # two packed segments in the second row
  return q, k, v, jax.numpy.asarray(seg)


@pytest.mark.parametrize("causal", [False, True])
def test_splash_local_equals_blocked_local(causal):
  q, k, v, seg = _inputs()
  cfg = AttentionConfig(window=40, block_size=64)
  got = splash.attention(q, k, v, seg, local.splash_mask(cfg, 256, causal), interpret=True)
  want = kinds.attend("local", cfg, q, k, v, seg, causal=causal)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_splash_causal_equals_dense_causal():
  q, k, v, seg = _inputs()
  got = splash.attention(q, k, v, seg, splash.causal_mask(256), interpret=True)
  want = dense.dense_attention(q, k, v, dense.make_attention_mask(seg, seg, causal=True))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_splash_is_used_only_where_it_can_run():
  assert not splash.usable(256)  # this CPU backend: the blocked/XLA kernels run instead
  assert not splash.usable(200, interpret=True)  # not a multiple of the 128-token block
  assert splash.usable(256, interpret=True)
