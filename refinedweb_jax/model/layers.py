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


class RMSNorm(nn.Module):
  """T5-style root-mean-square layer norm (no mean subtraction, no bias)."""
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxTxD):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x_BxTxD.shape[-1],), jnp.float32)
    x = x_BxTxD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
    return (x * scale).astype(self.dtype)


class MLP(nn.Module):
  """Feed-forward block, gated (GeGLU/SwiGLU style) or plain."""
  cfg: Any  # model.ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, deterministic: bool):
    cfg = self.cfg
    act = ACTIVATIONS[cfg.activation]
    h_BxTxF = act(dense(cfg, cfg.d_ff, -1, ("embed", "mlp"), "wi_0")(x_BxTxD))
    if cfg.gated_mlp:
      h_BxTxF = h_BxTxF * dense(cfg, cfg.d_ff, -1, ("embed", "mlp"), "wi_1")(x_BxTxD)
    h_BxTxF = nn.with_logical_constraint(h_BxTxF, ("batch", "length", "mlp"))
    h_BxTxF = nn.Dropout(cfg.dropout_rate)(h_BxTxF, deterministic=deterministic)
    return dense(cfg, cfg.d_model, -1, ("mlp", "embed"), "wo")(h_BxTxF)
