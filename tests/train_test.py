"""train_step on one device vs a sharded mesh, and checkpoint save -> restore."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from refinedweb_jax import checkpoint, configs, data, optim, sharding, train
from refinedweb_jax.model import EncoderDecoder


def tiny_setup(mesh_devices=None, data_axis=-1, fsdp=1, tensor=1, optimizer="adamw"):
  config = configs.default_config()
  config.model.preset = "tiny"
  config.optimizer.name = optimizer
  config.optimizer.warmup_steps = 1
  config.train.num_steps = 10
  model = EncoderDecoder(configs.model_config(config))
  tx, _ = optim.make_optimizer(config.optimizer, config.train.num_steps)
  mesh = sharding.make_mesh(data_axis, fsdp, tensor, devices=mesh_devices)
  state, shardings = train.create_train_state(model, tx, mesh, jax.random.key(0),
                                              input_length=16, target_length=8)
  step = train.jit_train_step(model, config, mesh, shardings)
  return config, model, tx, mesh, state, shardings, step


def random_batch(seed, batch=8, input_length=16, target_length=8, vocab=512):
  rng = np.random.default_rng(seed)
  pad = data.PadOne(input_length, target_length)
  rows = []
  for _ in range(batch):
    n, m = rng.integers(3, input_length + 1), rng.integers(2, target_length + 1)
    rows.append(pad.map({"inputs": rng.integers(3, vocab, n).astype(np.int32),
                         "targets": rng.integers(3, vocab, m).astype(np.int32)}))
  return data.to_model_features({k: np.stack([r[k] for r in rows]) for k in rows[0]})


def test_shift_right_restarts_every_packed_segment():
  batch = {"targets": np.array([[5, 6, 7, 8, 9, 0]]),
           "targets_segment_ids": np.array([[1, 1, 1, 2, 2, 0]]),
           "targets_positions": np.array([[0, 1, 2, 0, 1, 0]]),
           "inputs": np.zeros((1, 2)), "inputs_segment_ids": np.zeros((1, 2)),
           "inputs_positions": np.zeros((1, 2))}
  out = data.to_model_features(batch)
  np.testing.assert_array_equal(out["decoder_input_tokens"], [[0, 5, 6, 0, 8, 0]])
  np.testing.assert_array_equal(out["decoder_loss_weights"], [[1, 1, 1, 1, 1, 0]])


def test_save_restore_gives_identical_params_and_next_loss(tmp_path):
  _, model, tx, mesh, state, shardings, step = tiny_setup()
  rng = jax.random.key(1)
  state, _ = step(state, sharding.to_global(random_batch(0), mesh), rng)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), save_every=1)
  ckpt.save(1, state, config={"a": 1}, tokenizer_proto=b"\x00spm", force=True)
  ckpt.wait()
  abstract, _ = train.abstract_train_state(model, tx, mesh, input_length=16, target_length=8)
  restored = ckpt.restore(1, abstract)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert ckpt.restore_metadata(1) == ({"a": 1}, b"\x00spm")
  ckpt.close()
  batch = sharding.to_global(random_batch(1), mesh)
  # The step donates its input state, so each continuation gets its own copy.
  copy = lambda s: jax.tree.map(lambda x: x.copy(), s)
  _, m1 = step(copy(state), batch, rng)
  _, m2 = step(restored, batch, rng)
  assert float(m1["train/loss"]) == float(m2["train/loss"])


def _sharded_vs_single(layouts):
  """Runs in a subprocess with 8 host devices; prints max differences per layout as JSON."""
  devices = jax.devices()
  assert len(devices) == 8, devices
  batches = [random_batch(i) for i in range(2)]
  rng = jax.random.key(3)

  def run(mesh_devices, layout):
    _, _, _, mesh, state, _, step = tiny_setup(mesh_devices, *layout)
    losses = []
    for b in batches:
      state, m = step(state, sharding.to_global(b, mesh), rng)
      losses.append(float(m["train/loss"]))
    return losses, [np.asarray(x) for x in jax.tree.leaves(state.params)], state

  ref_losses, ref_params, _ = run(devices[:1], (1, 1, 1))
  report = {}
  for layout in layouts:
    losses, params, state = run(devices, layout)
    leaves = jax.tree.leaves(state.params)
    report[str(layout)] = {
        "loss": max(abs(a - b) for a, b in zip(losses, ref_losses)),
        "params": max(float(np.max(np.abs(a - b))) for a, b in zip(params, ref_params)),
        "sharded_leaves": sum(len(x.sharding.device_set) > 1 and
                              x.addressable_shards[0].data.size < x.size for x in leaves),
        "leaves": len(leaves)}
  print(json.dumps(report))


def test_sharded_train_step_matches_single_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, __file__, "sharded"], env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout.strip().splitlines()[-1])
  for layout, r in report.items():
    assert r["loss"] <= 1e-5 and r["params"] <= 1e-5, (layout, r)
  # With fsdp > 1 the parameters really are split across devices.
  assert report["(2, 4, 1)"]["sharded_leaves"] > report["(2, 4, 1)"]["leaves"] // 2


def test_adafactor_step_runs_with_factored_moments_replicated():
  _, _, _, mesh, state, _, step = tiny_setup(optimizer="adafactor")
  state, metrics = step(state, sharding.to_global(random_batch(0), mesh), jax.random.key(0))
  assert np.isfinite(float(metrics["train/loss"])) and int(state.step) == 1


def test_mesh_errors_name_the_sizes():
  with pytest.raises(ValueError, match="must equal the count"):
    sharding.make_mesh(2, 2, 1, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="mesh.tensor must be a positive size"):
    sharding.make_mesh(1, 1, 0)


if __name__ == "__main__" and sys.argv[-1] == "sharded":
  _sharded_vs_single([(8, 1, 1), (2, 4, 1)])
