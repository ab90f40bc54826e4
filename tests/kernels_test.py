"""The attention dispatcher: its choice per backend, dtype and pattern, and each kernel path it
can take (Pallas flash, splash, the blocked kernel on Pallas) against the masked-dense
reference, outputs and gradients, on packed rows. Pallas runs in interpret mode here."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax.model import attention
from refinedweb_jax.model.attention import dense, dispatch, kinds, relative
from refinedweb_jax.model.attention.kinds import AttentionConfig
from sparse_attention_test import _reference_mask

jax.config.update("jax_default_matmul_precision", "highest")

HEAD_DIM = 16  # Pallas flash's smallest tile


@pytest.mark.parametrize("kind, platform, dtype, bias, implementation, causal, cross, kernel", [
    ("dense", "cpu", "float32", False, "auto", True, False, "xla"),
    ("dense", "gpu", "bfloat16", False, "auto", True, False, "pallas"),
    ("dense", "gpu", "float32", True, "auto", False, False, "pallas"),
    ("dense", "gpu", "bfloat16", False, "auto", False, True, "pallas"),
    ("dense", "gpu", "float32", False, "cudnn", True, False, "pallas"),  # packed: never cuDNN
    ("dense", "gpu", "bfloat16", False, "cudnn", True, False, "pallas"),  # packed: never cuDNN
    ("dense", "gpu", "float16", False, "auto", True, False, "pallas"),
    ("dense", "tpu", "bfloat16", False, "auto", False, True, "splash"),
    ("dense", "tpu", "bfloat16", False, "auto", True, False, "splash"),
    ("dense", "tpu", "bfloat16", True, "auto", False, False, "xla"),  # splash has no bias
    ("dense", "cpu", "float32", False, "pallas", True, False, "pallas"),
    ("dense", "cpu", "float32", False, "einsum", True, False, "einsum"),
    ("local", "tpu", "bfloat16", False, "auto", True, False, "splash"),
    ("bigbird", "tpu", "bfloat16", False, "auto", False, False, "blocked"),
    ("bigbird", "gpu", "bfloat16", True, "auto", False, False, "blocked+pallas"),
    ("strided", "cpu", "float32", False, "auto", False, False, "blocked"),
])
def test_the_dispatcher_picks_per_backend_dtype_and_pattern(kind, platform, dtype, bias,
                                                            implementation, causal, cross,
                                                            kernel):
  choice = dispatch.choose(kind, causal=causal, cross=cross, dtype=jnp.dtype(dtype),
                           head_dim=64, bias=bias, implementation=implementation,
                           block_size=64, platform=platform)
  assert choice.kernel == kernel, choice
  assert choice.reason
  assert choice.interpret == (platform == "cpu" and kernel in ("pallas", "splash"))


def test_the_dispatcher_refuses_cudnn_off_a_gpu_and_names_odd_head_dims():
  with pytest.raises(ValueError, match="model.dense_implementation='cudnn' needs a GPU"):
    dispatch.choose("dense", causal=False, cross=False, dtype=jnp.bfloat16, head_dim=64,
                    bias=False, implementation="cudnn", platform="cpu")
  choice = dispatch.choose("dense", causal=False, cross=False, dtype=jnp.bfloat16, head_dim=48,
                           bias=False, platform="gpu")
  assert (choice.kernel, "48") == ("xla", choice.reason.split()[3])


def _qkv(t, s, batch=2, heads=2, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(keys[0], (batch, t, heads, HEAD_DIM)),
          jax.random.normal(keys[1], (batch, s, heads, HEAD_DIM)),
          jax.random.normal(keys[2], (batch, s, heads, HEAD_DIM)))


def _packed(length, lengths):
  """Row 0: one example and padding; row 1: the examples of `lengths` back to back."""
  seg = np.zeros((2, length), np.int32)
  seg[0, : length - 5] = 1
  at = 0
  for number, n in enumerate(lengths, start=1):
    seg[1, at: at + n] = number
    at += n
  return seg


def _check(fn, reference, q, k, v, real):
  """Outputs on real queries and gradients of a cotangent on them, against the reference."""
  cot = jax.random.normal(jax.random.key(7), q.shape) * real[:, :, None, None]
  loss = lambda f: lambda q, k, v: jnp.sum(f(q, k, v) * cot)
  out, ref = jax.jit(fn)(q, k, v), jax.jit(reference)(q, k, v)
  np.testing.assert_allclose(np.where(real[:, :, None, None], out, 0),
                             np.where(real[:, :, None, None], ref, 0), atol=2e-5, rtol=2e-5)
  grads = jax.jit(jax.grad(loss(fn), argnums=(0, 1, 2)))(q, k, v)
  want = jax.jit(jax.grad(loss(reference), argnums=(0, 1, 2)))(q, k, v)
  for g, w in zip(grads, want):
    np.testing.assert_allclose(g, w, atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize("implementation", ["pallas", "splash"])
@pytest.mark.parametrize("causal, bias", [(True, False), (False, False), (False, True)])
def test_dense_self_attention_on_the_fused_kernels_equals_the_reference(implementation,
                                                                         causal, bias):
  if implementation == "splash" and bias:
    pytest.skip("splash cannot add T5's bias: the dispatcher takes XLA (tested above)")
  length = 40 if implementation == "pallas" else 136  # padded up to the kernels' blocks
  q, k, v = _qkv(length, length)
  seg = _packed(length, (length // 3, 7, length // 2))
  table = jax.random.normal(jax.random.key(3), (8, 2))
  rel = relative.RelativeBias(table, bidirectional=not causal, max_distance=16) if bias else None
  mask = dense.make_attention_mask(seg, seg, causal=causal)
  rows = jnp.arange(length)
  reference = lambda q, k, v: dense.einsum_attention(
      q, k, v, mask, None if rel is None else rel.between(rows, rows)[None])
  fn = lambda q, k, v: attention.self_attention(q, k, v, seg, kind="dense", causal=causal,
                                                implementation=implementation, bias=rel)
  _check(fn, reference, q, k, v, seg != 0)


@pytest.mark.parametrize("implementation", ["pallas", "splash"])
def test_cross_attention_on_the_fused_kernels_equals_the_reference(implementation):
  t, s = (24, 56) if implementation == "pallas" else (136, 256)
  q, k, v = _qkv(t, s)
  q_seg, kv_seg = _packed(t, (t // 2, t // 3)), _packed(s, (s // 2, s // 4))
  mask = dense.make_attention_mask(q_seg, kv_seg, causal=False)
  reference = lambda q, k, v: dense.einsum_attention(q, k, v, mask)
  fn = lambda q, k, v: attention.cross_attention(q, k, v, q_seg, kv_seg,
                                                 implementation=implementation)
  _check(fn, reference, q, k, v, q_seg != 0)


SPARSE = {
    "local": AttentionConfig(window=20, block_size=16),
    "strided_fixed": AttentionConfig(stride=32, summary=3, block_size=16),
    "strided_strided": AttentionConfig(stride=32, variant="strided", block_size=16),
    "bigbird": AttentionConfig(block_size=16, global_blocks=1, window_blocks=3, random_blocks=1,
                               seed=3),
    "global_local": AttentionConfig(window=12, block_size=16, global_positions="0,1,37"),
}


@pytest.mark.parametrize("name", sorted(SPARSE))
def test_blocked_parts_on_pallas_equal_the_reference_on_packed_rows(name):
  kind, cfg = name.split("_")[0] if name != "global_local" else name, SPARSE[name]
  length, causal = 96, name in ("local", "bigbird")
  q, k, v = _qkv(length, length)
  seg = np.zeros((2, length), np.int32)
  seg[0, :85] = 1
  seg[1, :30], seg[1, 32:80] = 1, 2  # examples start on block boundaries (aligned kinds)
  mask = jnp.asarray(_reference_mask(kind, cfg, seg, causal))
  reference = lambda q, k, v: dense.einsum_attention(q, k, v, mask)
  fn = lambda q, k, v: kinds.attend(kind, cfg, q, k, v, seg, causal=causal, pallas=True)
  _check(fn, reference, q, k, v, seg != 0)


def test_choices_are_recorded_once_per_layer_type_and_kernel():
  dispatch.CHOICES.clear()
  q, k, v = _qkv(32, 32)
  seg = np.ones((2, 32), np.int32)
  for _ in range(2):
    attention.self_attention(q, k, v, seg, kind="dense", causal=True)
    attention.cross_attention(q, k, v, seg, seg)
  assert list(dispatch.CHOICES) == [("decoder self-attention (dense)", "xla"),
                                    ("cross-attention", "xla")]
  assert "cross-attention -> xla" in dispatch.report()


@pytest.mark.parametrize("dtype, bias, implementation, kernel", [
    ("bfloat16", False, "auto", "cudnn"), ("float16", False, "auto", "cudnn"),
    ("float16", False, "cudnn", "cudnn"), ("float32", False, "auto", "pallas"),
    ("bfloat16", True, "auto", "pallas"), ("float32", False, "cudnn", "xla"),
])
def test_unpacked_bf16_fp16_rows_without_bias_get_cudnn_on_a_gpu(dtype, bias, implementation,
                                                                 kernel):
  choice = dispatch.choose("dense", causal=True, cross=False, dtype=jnp.dtype(dtype), head_dim=64,
                           bias=bias, implementation=implementation, platform="gpu",
                           packed=False)
  assert choice.kernel == kernel, choice


def _lowered_for_cuda(monkeypatch, fn, *args):
  """fn's gradient lowered for CUDA with the dispatcher seeing a GPU: the StableHLO text."""
  from refinedweb_jax import backend
  monkeypatch.setattr(backend, "platform", lambda: "gpu")
  loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32) ** 2)
  return jax.jit(jax.grad(loss, (0, 1, 2))).trace(*args).lower(
      lowering_platforms=("cuda",)).as_text()


def test_packed_rows_named_cudnn_run_on_a_kernel_that_sees_segments(monkeypatch):
  """cuDNN takes lengths: on packed rows (the default) a hand-chosen cudnn becomes Pallas."""
  q = jax.ShapeDtypeStruct((2, 128, 2, 64), jnp.bfloat16)
  seg = jnp.asarray(_packed(128, (40, 50)))
  dispatch.CHOICES.clear()
  text = _lowered_for_cuda(monkeypatch, lambda q, k, v: attention.self_attention(
      q, k, v, seg, kind="dense", causal=True, implementation="cudnn"), q, q, q)
  assert "__cudnn" not in text and "__gpu$xla.gpu.triton" in text
  assert "cannot express packed rows" in dispatch.report()


def test_float16_runs_where_bfloat16_does():
  """Pallas flash (the GPU's kernel for packed rows) in float16 equals the reference."""
  q, k, v = (x.astype(jnp.float16) for x in _qkv(40, 40))
  seg = _packed(40, (13, 7, 20))
  mask = dense.make_attention_mask(seg, seg, causal=True)
  f32 = lambda x: x.astype(jnp.float32)
  out = attention.self_attention(q, k, v, seg, kind="dense", causal=True, implementation="pallas")
  want = dense.einsum_attention(f32(q), f32(k), f32(v), mask)
  assert out.dtype == jnp.float16
  real = (seg != 0)[:, :, None, None]
  np.testing.assert_allclose(np.where(real, f32(out), 0), np.where(real, want, 0), atol=5e-3)
  grads = jax.grad(lambda q: jnp.sum(f32(attention.self_attention(
      q, k, v, seg, kind="dense", causal=True, implementation="pallas")) ** 2))(q)
  assert grads.dtype == jnp.float16 and np.isfinite(np.asarray(f32(grads))).all()
