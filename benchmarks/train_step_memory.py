"""Compiled memory and step time of one train step for an experiment config, dense vs sparse.

  python benchmarks/train_step_memory.py --config experiments/train_small_bigbird_16k.py \\
      --kinds bigbird,dense --steps 3

For each encoder attention kind it compiles the real jitted train_step on random batches of
the config's shapes, prints the compiled memory (XLA's memory_analysis: arguments + outputs +
temporaries), and times --steps steps when that memory fits --memory-budget-gib.
"""

import argparse
import datetime
import os
import platform
import sys
import time

import jax
import numpy as np

from refinedweb_jax import configs
from refinedweb_jax.train import optim
from refinedweb_jax import sharding
from refinedweb_jax.train import step as step_lib
from refinedweb_jax.model.transformer import EncoderDecoder, count_params


def random_batch(rng, batch, input_length, target_length, vocab):
  """A full (unpacked, unpadded) batch of random tokens in the model's feature layout."""
  tokens = lambda n: rng.integers(3, vocab, (batch, n)).astype(np.int32)
  positions = lambda n: np.broadcast_to(np.arange(n, dtype=np.int32), (batch, n)).copy()
  targets = tokens(target_length)
  return {"encoder_input_tokens": tokens(input_length),
          "encoder_segment_ids": np.ones((batch, input_length), np.int32),
          "encoder_positions": positions(input_length),
          "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
          "decoder_target_tokens": targets,
          "decoder_loss_weights": np.ones((batch, target_length), np.int32),
          "decoder_segment_ids": np.ones((batch, target_length), np.int32),
          "decoder_positions": positions(target_length)}


def measure(config, kind, steps, budget_gib):
  """(params, compiled GiB, seconds per step or None) for one encoder attention kind."""
  config.model.encoder_attention = kind
  d = config.data
  model = EncoderDecoder(configs.model_config(config, vocab_size=d.vocab_size))
  tx, _ = optim.make_optimizer(config.optimizer, config.train.num_steps)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  abstract, shardings = step_lib.abstract_train_state(model, tx, mesh, input_length=d.input_length,
                                                   target_length=d.target_length)
  batch = random_batch(np.random.default_rng(0), d.batch_size, d.input_length, d.target_length,
                       d.vocab_size)
  step = step_lib.jit_train_step(model, config, mesh, shardings)
  compiled = step.lower(abstract, sharding.to_global(batch, mesh), jax.random.key(0)).compile()
  mem = compiled.memory_analysis()
  gib = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) / 2**30
  n_params = count_params(abstract.params)
  if gib > budget_gib:
    return n_params, gib, None
  state, _ = step_lib.create_train_state(model, tx, mesh, jax.random.key(0),
                                      input_length=d.input_length, target_length=d.target_length)
  state, m = step(state, sharding.to_global(batch, mesh), jax.random.key(0))  # warm-up
  jax.block_until_ready(m)
  start = time.time()
  for _ in range(steps):
    state, m = step(state, sharding.to_global(batch, mesh), jax.random.key(0))
  jax.block_until_ready(m)
  return n_params, gib, (time.time() - start) / steps


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", required=True, help="path/to/config.py[:arg]")
  p.add_argument("--kinds", default="bigbird,dense")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--memory-budget-gib", type=float, default=16.0)
  args = p.parse_args(argv)
  print(f"{datetime.date.today()}  {platform.platform()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
  base = configs.load_config(args.config)
  d = base.data
  print(f"batch {d.batch_size} x input {d.input_length} / target {d.target_length} tokens, "
        f"preset {base.model.preset}\n")
  print(f"{'encoder':<14}{'params':>12}{'compiled memory':>18}{'s/step':>10}{'tokens/s':>10}")
  for kind in args.kinds.split(","):
    n_params, gib, seconds = measure(base, kind, args.steps, args.memory_budget_gib)
    tokens = d.batch_size * (d.input_length + d.target_length)
    timing = (f"{seconds:>10.2f}{tokens / seconds:>10.0f}" if seconds is not None else
              f"  not run: needs {gib:.1f} GiB > budget {args.memory_budget_gib:g} GiB")
    print(f"{kind:<14}{n_params:>12,}{gib:>14.2f} GiB{timing}", flush=True)


if __name__ == "__main__":
  sys.exit(main())
