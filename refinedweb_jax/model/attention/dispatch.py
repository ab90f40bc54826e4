"""Which kernel computes a layer's attention, per backend, dtype and pattern: one decision.

model.dense_implementation="auto" (the default) picks, for dense layers:
  TPU  splash (self-attention causal or not, cross-attention; segment ids as structure),
       XLA when T5's relative bias is on (splash cannot add it)
  GPU  cuDNN (jax.nn.dot_product_attention) for bf16/fp16 layers without a bias on rows
       that hold one example each (packed=False: lengths say all); otherwise Pallas
       flash attention (flash.py; Triton) with segment ids, causal block skipping and
       T5's bias in the kernel, in float32, bfloat16 or float16; XLA when the head dim is
       not a power of two >= 16
  CPU  XLA (jax.nn.dot_product_attention's, fp32 scores)
and for the sparse kinds the blocked kernel (blocked.py), whose blocked parts run in the
Pallas kernel on GPU (block and head dims powers of two >= 16), plus splash on TPU for
the kinds whose pattern is the same at every offset (Kind.splash_packed: local), so that
packed rows are exact. A named implementation ("xla", "einsum", "cudnn", "pallas",
"splash") is taken for dense layers where it can run; "pallas" and "splash" run in
Pallas interpret mode on CPU (tests).
"cudnn" passes causality and sequence lengths (counted from segment ids) as structure,
so packed rows (packed=True, the default: the model cannot know) never reach it: named
by hand on them, the layer runs on Pallas flash (or XLA), and the log says so. Every choice is recorded once per (layer type, kernel, reason)
in CHOICES, which the training loop prints after the first step compiles.
"""

import dataclasses
import logging

import jax.numpy as jnp

from refinedweb_jax import backend
from refinedweb_jax.model.attention import kinds

log = logging.getLogger(__name__)
IMPLEMENTATIONS = ("auto", "xla", "einsum", "cudnn", "pallas", "splash")
CHOICES = {}  # (where, kernel) -> reason, in the order first chosen


@dataclasses.dataclass(frozen=True)
class Choice:
  kernel: str  # xla, einsum, cudnn, pallas, splash, blocked, blocked+pallas
  reason: str
  interpret: bool = False  # Pallas interpret mode (a Pallas kernel named on a CPU)


def _pow2(n: int) -> bool:
  return n >= 16 and n & (n - 1) == 0


def choose(kind: str, *, causal: bool, cross: bool, dtype, head_dim: int, bias: bool,
           implementation: str = "auto", block_size: int | None = None,
           platform: str | None = None, packed: bool = True) -> Choice:
  """The kernel of one attention layer (see the module docstring).

  packed: whether a row may hold several examples (segment ids 1, 2, ...).
  """
  platform = platform or backend.platform()
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown model.dense_implementation {implementation!r}; allowed: "
                     f"{', '.join(IMPLEMENTATIONS)}")
  if kind != "dense":
    if platform == "tpu" and kinds.KINDS[kind].splash_packed and not bias and not cross:
      return Choice("splash", f"TPU: splash's {kind} mask (exact on packed rows)")
    if platform == "gpu" and _pow2(head_dim) and block_size and _pow2(block_size):
      return Choice("blocked+pallas", "GPU: blocked parts in the Pallas flash kernel")
    why = {"tpu": "TPU: its pattern follows each packed example, which splash's one mask "
                  "cannot", "gpu": "GPU: block or head dim not a power of two >= 16"}
    return Choice("blocked", why.get(platform, f"{platform}: the XLA blocked kernel"))
  sixteen = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
  if implementation == "auto":
    return _auto_dense(platform, head_dim, bias, sixteen, packed)
  interpret = platform == "cpu" and implementation in ("pallas", "splash")
  if implementation == "splash" and bias:
    return Choice("xla", "splash cannot add T5's relative position bias")
  if implementation == "pallas" and not _pow2(head_dim):
    return Choice("xla", f"Pallas flash needs a head dim that is a power of two >= 16, got "
                         f"{head_dim}")
  if implementation == "cudnn":
    if platform != "gpu":
      raise ValueError(f"model.dense_implementation='cudnn' needs a GPU; this is {platform}: "
                       "use auto")
    if packed:  # lengths cannot say where packed examples end: a kernel that can
      kernel = "pallas" if _pow2(head_dim) else "xla"
      return Choice(kernel, f"model.dense_implementation='cudnn' cannot express packed rows "
                            f"(segment ids): {kernel} instead")
    if not sixteen or bias:
      return Choice("xla", "cuDNN attention takes bf16/fp16 without a bias tensor")
  return Choice(implementation, "model.dense_implementation", interpret)


def _auto_dense(platform: str, head_dim: int, bias: bool, sixteen: bool,
                packed: bool) -> Choice:
  if platform == "tpu":
    if bias:
      return Choice("xla", "TPU: splash cannot add T5's relative position bias")
    return Choice("splash", "TPU: splash with segment ids")
  if platform == "gpu":
    if sixteen and not bias and not packed:
      return Choice("cudnn", "GPU: cuDNN for bf16/fp16 without a bias on unpacked rows")
    if _pow2(head_dim):
      why = ("T5's bias" if bias else "packed rows (segment ids)" if packed
             else "float32 (cuDNN takes bf16/fp16)")
      return Choice("pallas", f"GPU: Pallas flash for {why}, causal block skipping")
    return Choice("xla", f"GPU: head dim {head_dim} is not a power of two >= 16")
  return Choice("xla", f"{platform}: XLA")


def record(where: str, choice: Choice):
  """Notes a layer's kernel (once per where, kernel and reason) for the training log."""
  key = (where, choice.kernel)
  if key not in CHOICES:
    CHOICES[key] = choice.reason
    log.info("attention: %s -> %s (%s)", where, choice.kernel, choice.reason)


def report() -> str:
  """One line per (layer type, kernel) chosen so far."""
  return "; ".join(f"{where} -> {kernel} ({reason})" for (where, kernel), reason in
                   CHOICES.items())
