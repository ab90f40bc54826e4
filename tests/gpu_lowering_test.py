"""The GPU program, proven on this CPU: the `base` train step lowered for CUDA (no GPU needed).

bf16, layers scanned, RoPE and T5's bias, with the dispatcher seeing a GPU: the lowered
StableHLO must keep its scans as while loops, hold no conditional (a `case` runs a
host-side branch per step), no host callback, and no float32 x float32 matmul with the
vocabulary dimension (the LM head and its gradient belong on bf16 tensor cores). The
Triton kernels it holds are what benchmarks/gpu_kernels.py compiles for sm_90a.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax import backend, configs
from refinedweb_jax.data import pipeline
from refinedweb_jax.model.attention import dispatch
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.model.transformer import EncoderDecoder
from refinedweb_jax.train import losses, optim, setup, step as step_lib

BASE = dict(vocab_size=32128, d_model=768, num_heads=12, head_dim=64, d_ff=2048,
            num_encoder_layers=12, num_decoder_layers=12, dtype="bfloat16", scan_layers=True)
SOURCE, TARGET, BATCH = 512, 64, 2


@functools.lru_cache(maxsize=None)
def _lowered_text(position: str) -> str:
  """The train step of `base` with `position`, lowered for CUDA: StableHLO text."""
  cfg = ModelConfig(**BASE, position=position)
  config = configs.default_config()
  model = EncoderDecoder(cfg)
  mesh = setup.make_mesh(config)
  tx, _ = optim.make_optimizer(config.optimizer, 1000)
  state, _ = step_lib.abstract_train_state(model, tx, mesh, input_length=SOURCE,
                                           target_length=TARGET)
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  lengths = {"encoder": SOURCE, "decoder": TARGET}
  batch = {k: jax.ShapeDtypeStruct((BATCH, lengths[k.split("_")[0]]), jnp.int32)
           for k in pipeline.FEATURES}
  sum_fn = functools.partial(losses.cross_entropy_sums, model=model,
                             label_smoothing=config.loss.label_smoothing,
                             z_loss=config.loss.z_loss)
  step = jax.jit(functools.partial(step_lib.train_step, sum_fn=sum_fn))
  platform = backend.platform
  backend.platform = lambda: "gpu"  # the dispatcher picks the GPU's kernels
  try:
    lowered = step.trace(state, batch, jax.random.key(0)).lower(lowering_platforms=("cuda",))
  finally:
    backend.platform = platform
  return lowered.as_text()


POSITIONS = ["rope", "t5_bias"]


@pytest.mark.parametrize("position", POSITIONS)
def test_the_base_train_step_lowers_for_cuda_with_scans_and_triton_kernels(position):
  text = _lowered_text(position)
  assert text.count("stablehlo.while") >= 2  # encoder and decoder layer scans
  assert "__gpu$xla.gpu.triton" in text  # packed rows: Pallas flash
  assert "__cudnn" not in text  # cuDNN cannot express packed rows


@pytest.mark.parametrize("position", POSITIONS)
def test_the_base_train_step_has_no_conditional_and_no_host_callback(position):
  text = _lowered_text(position)
  assert "stablehlo.case" not in text and "stablehlo.if" not in text
  assert "callback" not in text.lower() and "xla_python" not in text


def _vocab_matmuls(text: str, vocab: int):
  """Each dot_general with a `vocab`-sized dimension as (lhs type, rhs type, result type)."""
  found = []
  for line in text.splitlines():
    if "stablehlo.dot_general" not in line:
      continue
    types = re.findall(r"tensor<([0-9x]*)x?(f32|bf16|f16)>", line.split(" : ")[-1])
    if any(str(vocab) in shape.split("x") for shape, _ in types):
      found.append(tuple(dtype for _, dtype in types))
  return found


@pytest.mark.parametrize("position", POSITIONS)
def test_no_float32_matmul_over_the_vocabulary(position):
  """The LM head, its gradient and the loss run their vocab-sized matmuls in bf16."""
  found = _vocab_matmuls(_lowered_text(position), BASE["vocab_size"])
  assert found  # the head is there
  assert not [types for types in found if types[:2] == ("f32", "f32")], found
