"""Int8 weights for decoding: per-output-channel weight scales, activations quantized per row.

`quantize(params)` turns every projection kernel and the token embedding into int8 with a
float32 scale beside it (`kernel_scale`: one per output feature; `embedding_scale`: one
per vocabulary row, which serves the lookup and the tied output layer alike). The model
reads int8 weights wherever it finds them: each such matmul quantizes its input rows
symmetrically to int8 on the fly (one scale per row, from its largest magnitude) and runs
an int8 x int8 -> int32 dot, then rescales. Norm scales and T5's bias tables stay float32.
This is inference only: gradients do not flow through the rounding.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

SCALE = {"kernel": "kernel_scale", "embedding": "embedding_scale"}


def _symmetric(x, axes):
  """(int8 values, float32 scale with `axes` kept as size 1): x ~= values * scale."""
  scale = jnp.max(jnp.abs(x), axis=axes, keepdims=True) / 127.0
  scale = jnp.maximum(scale, jnp.finfo(jnp.float32).tiny)
  return jnp.clip(jnp.round(x / scale), -127, 127).astype(jnp.int8), scale


def quantize_kernel(kernel, num_contract: int):
  """(int8 kernel, scale of shape kernel.shape[num_contract:]) of an fp32 kernel."""
  values, scale = _symmetric(kernel.astype(jnp.float32), tuple(range(num_contract)))
  return values, scale.reshape(kernel.shape[num_contract:])


def quantize_embedding(table_VxD):
  """(int8 table, per-row scale_V)."""
  values, scale = _symmetric(table_VxD.astype(jnp.float32), (1,))
  return values, scale[:, 0]


def quantize(params):
  """The parameter tree with int8 projection kernels and embedding, plus their scales.

  A kernel contracts its first axis, except the attention output projection's ("out":
  heads x kv -> embed), which contracts two. In a scanned stack (model/scan.py) every
  kernel has a leading layers axis: each layer is quantized on its own.
  """
  def walk(tree, path):
    out = {}
    for name, value in tree.items():
      if isinstance(value, dict):
        out[name] = walk(value, path + (name,))
      elif name == "kernel" and value.ndim >= 2:
        contract = 2 if path[-1:] == ("out",) else 1
        if "_group_" in path[0]:
          out[name], out[SCALE[name]] = jax.vmap(lambda k: quantize_kernel(k, contract))(value)
        else:
          out[name], out[SCALE[name]] = quantize_kernel(value, contract)
      elif name == "embedding" and value.ndim == 2:
        out[name], out[SCALE[name]] = quantize_embedding(value)
      else:
        out[name] = value
    return out
  return walk(dict(nn.meta.unbox(params)), ())


def is_quantized(params) -> bool:
  return any(x.dtype == jnp.int8 for x in jax.tree.leaves(params))


def int8_dot(x, values, scale, contract: tuple, dtype, pad_one_row: bool | None = None):
  """x . values over contract=((x axes), (values axes)), x quantized per row on the fly.

  The rows of x are its non-contracted axes; `scale` broadcasts over the output's
  trailing (values') axes. pad_one_row: whether a single row goes with a zero row
  (default: on CPU only); the result is the same either way.
  """
  x_axes, _ = contract
  rows = math.prod(n for i, n in enumerate(x.shape) if i not in x_axes)
  if pad_one_row is None:
    pad_one_row = jax.default_backend() == "cpu"
  if pad_one_row and rows == 1 and 0 not in x_axes:
    # XLA:CPU's int8 dot of a single row took 20x as long as of two (a 512 x 32128 output
    # layer: 24.6 vs 1.2 ms), so one row (batch-1 greedy decoding) goes with a zero row.
    padded = jnp.concatenate([x, jnp.zeros_like(x)], axis=0)
    return int8_dot(padded, values, scale, contract, dtype, pad_one_row=False)[:1]
  xq, x_scale = _symmetric(x.astype(jnp.float32), x_axes)
  out = jax.lax.dot_general(xq, values, (contract, ((), ())),
                            preferred_element_type=jnp.int32).astype(jnp.float32)
  x_scale = jnp.squeeze(x_scale, axis=x_axes)
  x_scale = x_scale.reshape(x_scale.shape + (1,) * (out.ndim - x_scale.ndim))
  return (out * x_scale * scale).astype(dtype)
