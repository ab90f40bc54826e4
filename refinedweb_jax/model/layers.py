"""Building blocks of the model: projections with logical axes, RMSNorm, the MLP."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from refinedweb_jax.model import quantize

# "gelu" is the tanh approximation (T5 v1.1's and Hugging Face's "gelu_new"); "gelu_exact"
# the erf form.
ACTIVATIONS = {"gelu": nn.gelu, "gelu_exact": functools.partial(nn.gelu, approximate=False),
               "relu": nn.relu, "silu": nn.silu}


class Projection(nn.Module):
  """x @ W contracting the last `num_contract` axes; fp32 W with logical axis names.

  (nn.DenseGeneral initialises a flattened kernel, which breaks logical-axis
  constraints on multi-axis kernels such as embed x heads x kv.)
  """
  features: tuple
  num_contract: int
  names: tuple
  dtype: jnp.dtype = jnp.float32
  out_dtype: jnp.dtype | None = None  # the product's dtype (default: dtype)

  @nn.compact
  def __call__(self, x):
    nc, nf = self.num_contract, len(self.features)
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                            in_axis=tuple(range(nc)),
                                            out_axis=tuple(range(nc, nc + nf)))
    kernel = self.param("kernel", nn.with_logical_partitioning(init, self.names),
                        x.shape[x.ndim - nc:] + tuple(self.features), jnp.float32)
    contract = (tuple(range(x.ndim - nc, x.ndim)), tuple(range(nc)))
    if kernel.dtype == jnp.int8:  # quantize.quantize's weights, for decoding
      scale = self.param("kernel_scale", nn.initializers.ones, tuple(self.features),
                         jnp.float32)
      return quantize.int8_dot(x, kernel, scale, contract, self.out_dtype or self.dtype)
    return jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                               (contract, ((), ())), preferred_element_type=self.out_dtype)


def dense(cfg, features, axes, names, name, out_dtype=None):
  """A Projection in the model's compute dtype; `axes` are the contracted input axes."""
  features = features if isinstance(features, tuple) else (features,)
  num_contract = len(axes) if isinstance(axes, tuple) else 1
  return Projection(features, num_contract, names, cfg.compute_dtype, out_dtype, name=name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def rms_norm(x_BxTxD, scale_D, epsilon: float, dtype):
  """x / rms(x) * scale in `dtype`, summed in float32; the backward keeps x and 1/rms only.

  Autodiff of the float32 form would save a float32 copy of x (twice the bytes of a
  bfloat16 activation) for the backward; this saves x as it came and one scalar per row.
  """
  return _rms_norm_fwd(x_BxTxD, scale_D, epsilon, dtype)[0]


def _rms_norm_fwd(x, scale, epsilon, dtype):
  x32 = x.astype(jnp.float32)
  rinv = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + epsilon)
  return (x32 * rinv * scale).astype(dtype), (x, rinv, scale)


def _rms_norm_bwd(epsilon, dtype, saved, g):
  del epsilon, dtype
  x, rinv, scale = saved
  xn = x.astype(jnp.float32) * rinv
  g32 = g.astype(jnp.float32)
  dscale = jnp.sum(g32 * xn, axis=tuple(range(x.ndim - 1)))
  dxn = g32 * scale
  dx = rinv * (dxn - xn * jnp.mean(dxn * xn, axis=-1, keepdims=True))
  return dx.astype(x.dtype), dscale


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


class RMSNorm(nn.Module):
  """T5-style root-mean-square layer norm (no mean subtraction, no bias), out in `dtype`."""
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxTxD):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x_BxTxD.shape[-1],), jnp.float32)
    return rms_norm(x_BxTxD, scale, self.epsilon, self.dtype)


class MLP(nn.Module):
  """Feed-forward block, gated (GeGLU/SwiGLU style) or plain.

  The gated block's two input projections are one matmul: kernel wi [D, 2, F], whose
  [:, 0] is the activated half (Hugging Face's wi_0) and [:, 1] the gate (wi_1).
  """
  cfg: Any  # model.ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, deterministic: bool):
    cfg = self.cfg
    act = ACTIVATIONS[cfg.activation]
    if cfg.gated_mlp:
      h_BxTx2xF = dense(cfg, (2, cfg.d_ff), -1, ("embed", None, "mlp"), "wi")(x_BxTxD)
      h_BxTxF = act(h_BxTx2xF[..., 0, :]) * h_BxTx2xF[..., 1, :]
    else:
      h_BxTxF = act(dense(cfg, cfg.d_ff, -1, ("embed", "mlp"), "wi_0")(x_BxTxD))
    h_BxTxF = nn.with_logical_constraint(h_BxTxF, ("batch", "length", "mlp"))
    h_BxTxF = nn.Dropout(cfg.dropout_rate)(h_BxTxF, deterministic=deterministic)
    return dense(cfg, cfg.d_model, -1, ("mlp", "embed"), "wo")(h_BxTxF)
