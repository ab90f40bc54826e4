"""Scaling: mesh layouts == one device, real sharding, resharded restore, two processes,
remat, gradient accumulation, bf16 compute with fp32 state.

The 8-device checks run in subprocesses (XLA_FLAGS only there); the sharded one
runs once per session and also gives the reference losses of the two-process run.
"""

import functools
import json
import os
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax.train import checkpoint
from refinedweb_jax import configs
from refinedweb_jax.train import optim
from refinedweb_jax import sharding
from refinedweb_jax.train import losses as train_losses, step as step_lib
from refinedweb_jax.model.transformer import EncoderDecoder
from train_test import random_batch

LAYOUTS = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 4, 2)]
MULTIHOST_SEEDS = (10, 11, 12)
TIMEOUT_S = 300


def tiny(**model):
  """(config, model, tx) of a 1+1-layer tiny model (fast to compile)."""
  config = configs.default_config()
  config.model.preset = "tiny"
  config.model.num_encoder_layers = config.model.num_decoder_layers = 1
  config.model.update(model)
  config.optimizer.warmup_steps = 1
  config.train.num_steps = 10
  tx, _ = optim.make_optimizer(config.optimizer, config.train.num_steps)
  return config, EncoderDecoder(configs.model_config(config)), tx


def init(model, tx, mesh):
  return step_lib.create_train_state(model, tx, mesh, jax.random.key(0), input_length=16,
                                  target_length=8)


def numpy_tree(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def max_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(numpy_tree(a), numpy_tree(b)))


def bytes_per_device(tree) -> dict:
  """Bytes each device holds of a tree of jax.Arrays (its addressable shards)."""
  out = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      out[shard.device.id] = out.get(shard.device.id, 0) + shard.data.nbytes
  return out


def _sharded_report(workdir):
  """8 devices: every layout vs one device, bytes per device, restore onto another layout."""
  assert jax.device_count() == 8, jax.devices()
  config, model, tx = tiny()
  batches = [random_batch(i) for i in range(2)]
  rng = jax.random.key(3)
  mesh1 = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  state, shardings = init(model, tx, mesh1)
  host_state = jax.device_get(state)
  step = step_lib.jit_train_step(model, config, mesh1, shardings)
  ref_losses = []
  for b in batches:
    state, m = step(state, sharding.to_global(b, mesh1), rng)
    ref_losses.append(float(m["train/loss"]))
  ref_params = numpy_tree(state.params)
  total = sum(x.nbytes for x in jax.tree.leaves(host_state))
  report, runs = {"layouts": {}}, {}
  for layout in LAYOUTS:
    mesh = sharding.make_mesh(*layout)
    _, shardings = step_lib.abstract_train_state(model, tx, mesh, input_length=16, target_length=8)
    state = jax.device_put(host_state, shardings)
    step = step_lib.jit_train_step(model, config, mesh, shardings)
    losses = []
    for b in batches:
      state, m = step(state, sharding.to_global(b, mesh), rng)
      losses.append(float(m["train/loss"]))
    per_device = bytes_per_device(state)
    report["layouts"][str(layout)] = {
        "loss": max(abs(a - b) for a, b in zip(losses, ref_losses)),
        "params": max(float(np.max(np.abs(a - b)))
                      for a, b in zip(numpy_tree(state.params), ref_params)),
        "bytes_ratio": max(per_device.values()) / total, "devices": len(per_device)}
    runs[layout] = (mesh, shardings, step, state)

  # A checkpoint written under data=8 restores under fsdp=4 x tensor=2 and trains on.
  mesh_a, _, step_a, state_a = runs[(8, 1, 1)]
  mesh_b, shardings_b, step_b, _ = runs[(1, 4, 2)]
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "ckpt"), save_every=1)
  ckpt.save(2, state_a, force=True)
  ckpt.wait()
  abstract_b, _ = step_lib.abstract_train_state(model, tx, mesh_b, input_length=16, target_length=8)
  restored = ckpt.restore(2, abstract_b)
  ckpt.close()
  same_sharding = all(x.sharding == s for x, s in zip(jax.tree.leaves(restored),
                                                      jax.tree.leaves(shardings_b)))
  values = max_diff(state_a, restored)
  ratio = max(bytes_per_device(restored).values()) / total
  batch = random_batch(2)
  _, m_a = step_a(state_a, sharding.to_global(batch, mesh_a), rng)
  _, m_b = step_b(restored, sharding.to_global(batch, mesh_b), rng)
  report["restore"] = {"values": values, "same_sharding": same_sharding, "bytes_ratio": ratio,
                       "next_loss": abs(float(m_a["train/loss"]) - float(m_b["train/loss"]))}

  report["load"] = _load_for_decoding(workdir)
  report["mt5"] = _mt5_shardings()

  # Reference for the two-process run: one process, 8 devices, the same (2, 2, 2) mesh.
  mesh, shardings, step, _ = runs[(2, 2, 2)]
  state = jax.device_put(host_state, shardings)
  report["multihost_reference"] = []
  for seed in MULTIHOST_SEEDS:
    state, m = step(state, sharding.to_global(random_batch(seed), mesh), rng)
    report["multihost_reference"].append(float(m["train/loss"]))
  print(json.dumps(report))


def _load_for_decoding(workdir):
  """A run trained on fsdp=2 x tensor=2 loads onto that mesh for decoding, parameters only."""
  import shutil
  from refinedweb_jax import api
  from refinedweb_jax.data import corpus
  from refinedweb_jax.data import tokenizer as tok
  examples = corpus.generate_split("train", 300, tasks=("translate_en_de", "translate_en_fr"))
  texts = [t for ex in examples for t in (ex["inputs"], ex["targets"])]
  tokenizer = tok.Tokenizer(tok.train_tokenizer(texts, os.path.join(workdir, "spm.model"),
                                                vocab_size=400))
  config, _, tx = tiny()
  config.mesh.update(data=2, fsdp=2, tensor=2)
  config.data.update(input_length=16, target_length=8)
  model = EncoderDecoder(configs.model_config(config, vocab_size=tokenizer.vocab_size))
  mesh = sharding.make_mesh(2, 2, 2)
  state, _ = init(model, tx, mesh)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "run", "checkpoints"), save_every=1)
  ckpt.save(1, state, config=checkpoint.config_to_json(config),
            tokenizer_proto=tokenizer.serialized_model_proto(), force=True)
  ckpt.close()
  # Without the optimizer state on disk the model still loads: only parameters are read.
  shutil.rmtree(os.path.join(workdir, "run", "checkpoints", "1", "optimizer"))
  loaded = api.RefinedWeb.load(os.path.join(workdir, "run"))
  params = loaded.params  # layers scanned or unrolled, as the platform's default has them
  layer = params["encoder_group_0"]["layer_0"] if "encoder_group_0" in params else params[
      "encoder_0"]
  kernel = layer["mlp"]["wi"]["kernel"]  # the gated MLP's fused input projections
  return {"mesh": dict(loaded.mesh.shape), "spec": str(nn.meta.unbox(kernel).sharding.spec),
          "values": max_diff(state.params, loaded.params),
          "output": loaded.generate("chat: hello", max_new_tokens=4)}


def _mt5_shardings():
  """mT5-base's sizes (a 250,112 vocabulary, T5's bias, untied head) on fsdp=4 x tensor=2,
  abstractly: how its largest parameters and the bias tables are split."""
  from refinedweb_jax.model.config import ModelConfig
  cfg = ModelConfig.from_preset("base", vocab_size=250_112, d_ff=2048, position="t5_bias",
                                tie_embeddings=False, scale_attention=False)
  _, _, tx = tiny()
  abstract, _ = step_lib.abstract_train_state(EncoderDecoder(cfg), tx, sharding.make_mesh(1, 4, 2),
                                              input_length=16, target_length=8)
  params = nn.meta.unbox(abstract.params)
  spec = lambda x: [str(a) for a in x.sharding.spec]
  return {name: spec(params[name]["embedding" if name == "token_embedding" else "kernel"])
          for name in ("token_embedding", "logits_dense")} | {
              name: spec(params[name]) for name in ("encoder_relative_bias",
                                                    "decoder_relative_bias")}


def _worker(process_id: int, port: int, workdir: str):
  """One of two processes (4 CPU devices each) training on a (2, 2, 2) mesh across both."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  assert sharding.initialize_distributed(f"localhost:{port}", 2, process_id, timeout_s=60)
  assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4)
  config, model, tx = tiny()
  mesh = sharding.make_mesh(2, 2, 2)
  sharding.check_batch(mesh, 8)
  state, shardings = init(model, tx, mesh)
  step = step_lib.jit_train_step(model, config, mesh, shardings)
  losses = []
  for seed in MULTIHOST_SEEDS:
    # Each process feeds only its half of the global batch.
    local = {k: v[process_id * 4: process_id * 4 + 4] for k, v in random_batch(seed).items()}
    state, m = step(state, sharding.to_global(local, mesh), jax.random.key(3))
    losses.append(float(m["train/loss"]))
  # Both processes write one checkpoint; it restores onto a replicated data=8 mesh.
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "ckpt"), save_every=1)
  ckpt.save(3, state, force=True)
  ckpt.wait()
  mesh8 = sharding.make_mesh(8, 1, 1)
  abstract, _ = step_lib.abstract_train_state(model, tx, mesh8, input_length=16, target_length=8)
  restored = ckpt.restore(3, abstract)
  ckpt.close()
  from jax.experimental import multihost_utils
  full = multihost_utils.process_allgather(state.params, tiled=True)
  diff = max(float(np.max(np.abs(np.asarray(r.addressable_data(0)) - f)))
             for r, f in zip(jax.tree.leaves(restored.params), jax.tree.leaves(full)))
  # Evaluation: every process holds the whole batch and gets whole results back.
  batch = random_batch(20)
  round_trip = sharding.to_host(sharding.from_full_batch(batch, mesh))
  whole = all(np.array_equal(round_trip[k], v) for k, v in batch.items())
  print(json.dumps({"process": jax.process_index(), "losses": losses, "restore": diff,
                    "whole_batch": whole}))


@pytest.fixture(scope="module")
def sharded_report(tmp_path_factory):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  workdir = str(tmp_path_factory.mktemp("sharded"))
  out = subprocess.run([sys.executable, __file__, "sharded", workdir], env=env,
                       capture_output=True, text=True, timeout=TIMEOUT_S)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_mesh_layout_matches_one_device_and_shards_the_state(sharded_report):
  for layout, r in sharded_report["layouts"].items():
    assert r["loss"] <= 1e-5 and r["params"] <= 1e-5, (layout, r)
    data, fsdp, tensor = eval(layout)
    # Parameters and optimizer state: ~1/(fsdp*tensor) per device (norm scales and
    # the step counter are not split over tensor / at all).
    expected = 1 / (fsdp * tensor)
    assert expected <= r["bytes_ratio"] <= expected * 1.1 + 1e-3, (layout, r)


def test_checkpoint_from_data_parallel_restores_onto_fsdp_x_tensor(sharded_report):
  r = sharded_report["restore"]
  assert r["values"] == 0.0 and r["same_sharding"], r
  assert r["bytes_ratio"] <= 1.1 / 8, r
  assert r["next_loss"] <= 1e-5, r


def test_a_tensor_parallel_run_loads_onto_its_mesh_with_parameters_only(sharded_report):
  r = sharded_report["load"]
  assert r["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}, r
  assert "tensor" in r["spec"] and "fsdp" in r["spec"], r  # embed x mlp: fsdp x tensor
  assert r["values"] == 0.0 and isinstance(r["output"], str), r


def test_an_mt5_vocabulary_splits_over_tensor_and_the_t5_bias_over_heads(sharded_report):
  mt5 = sharded_report["mt5"]
  assert mt5["token_embedding"] == ["tensor", "fsdp"]  # vocab x embed
  assert mt5["logits_dense"] == ["fsdp", "tensor"]  # embed x vocab
  assert mt5["encoder_relative_bias"] == mt5["decoder_relative_bias"] == ["None", "tensor"]


def test_two_processes_match_one_process_with_eight_devices(sharded_report, tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(key, None)
  procs = [subprocess.Popen([sys.executable, __file__, "worker", str(i), str(port),
                             str(tmp_path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=TIMEOUT_S))
  finally:
    for p in procs:  # a hung collective fails the test instead of hanging it
      if p.poll() is None:
        p.kill()
  for p, (stdout, stderr) in zip(procs, outs):
    assert p.returncode == 0, stderr[-3000:]
    r = json.loads(stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(r["losses"], sharded_report["multihost_reference"], atol=1e-5)
    assert r["restore"] == 0.0 and r["whole_batch"], r


def test_remat_microbatches_and_bf16_give_the_same_step():
  config, model, tx = tiny()
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  state, _ = init(model, tx, mesh)
  variants = {"none": (model, 1), "mb4": (model, 4)}
  for name, overrides in (("full", dict(remat="full")), ("dots", dict(remat="dots")),
                          ("bf16", dict(dtype="bfloat16"))):
    variants[name] = (tiny(**overrides)[1], 1)

  # All variants in one jitted function: one compilation.
  steps = jax.jit(lambda states, batch: {
      k: step_lib.train_step(states[k], batch, jax.random.key(3), microbatches=n,
                             sum_fn=functools.partial(train_losses.cross_entropy_sums, model=m))
      for k, (m, n) in variants.items()})
  states = {k: state for k in variants}
  losses = {k: [] for k in variants}
  for seed in range(2):  # the first step has learning rate 0: compare after the second
    with sharding.use_mesh(mesh):
      out = steps(states, random_batch(seed))
    states = {k: s for k, (s, _) in out.items()}
    for k, (_, m) in out.items():
      losses[k].append(float(m["train/loss"]))
  for k in ("full", "dots", "mb4"):
    np.testing.assert_allclose(losses[k], losses["none"], atol=1e-5, err_msg=k)
    assert max_diff(states[k].params, states["none"].params) <= 1e-5, k
  # bf16 compute: parameters and optimizer state stay float32; the loss is close.
  assert {x.dtype for x in jax.tree.leaves(states["bf16"])} <= {jnp.dtype("float32"),
                                                               jnp.dtype("int32")}
  np.testing.assert_allclose(losses["bf16"], losses["none"], atol=0.05)


def test_remat_wraps_every_layer_with_its_policy():
  batch = random_batch(0)
  params = None
  for remat, count, policy in (("none", 0, None), ("full", 2, "policy=None"),
                               ("dots", 2, "policy=DotsSaveable(only_if_no_batch_dims=True)")):
    _, model, tx = tiny(remat=remat)
    if params is None:
      abstract, _ = step_lib.abstract_train_state(
          model, tx, sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]), input_length=16,
          target_length=8)
      params = abstract.params
    grads = jax.value_and_grad(functools.partial(train_losses.cross_entropy_sums, model=model),
                               has_aux=True)
    text = str(jax.make_jaxpr(grads)(params, batch, jax.random.key(0)))
    assert text.count("remat2[") == count, remat  # one per encoder / decoder layer
    assert policy is None or policy in text, remat
  # Cached decoding (no backward pass) runs the decoder layers without remat.
  enc, inputs = jnp.zeros((8, 16, 32)), jnp.ones((8, 16), jnp.int32)
  decode = lambda p: model.apply({"params": p}, enc, inputs, jnp.zeros((8, 8), jnp.int32),
                                 decode=True, method="decode", mutable=["cache"])
  assert "remat2[" not in str(jax.make_jaxpr(decode)(params))


def test_scale_config_errors_name_the_values():
  config = configs.default_config()
  config.model.preset = "tiny"
  config.mesh.tensor = 3
  with pytest.raises(ValueError, match=r"model.num_heads=4 is not divisible by config.mesh."
                                       r"tensor=3"):
    configs.validate(config)
  config.mesh.tensor, config.mesh.fsdp = 1, -1
  config.mesh.data = -1
  with pytest.raises(ValueError, match="at most one of config.mesh.data/fsdp/tensor may be -1"):
    configs.validate(config)
  config.mesh.fsdp, config.train.microbatches = 1, 3
  with pytest.raises(ValueError, match="batch_size=16 must be divisible by config.train."
                                       "microbatches=3"):
    configs.validate(config)
  config.model.remat = "some"
  with pytest.raises(ValueError, match="unknown model.remat 'some'; allowed: none, full, dots"):
    configs.model_config(config)
  with pytest.raises(ValueError, match=r"data\*fsdp\*tensor = 2\*1\*1 = 2 but there are 1 "
                                       "devices"):
    sharding.make_mesh(2, 1, 1, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="needs config.distributed.num_processes, process_id"):
    sharding.initialize_distributed("localhost:1234")
  one = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  sharding.check_batch(one, 8)  # one process owns every row


def test_initialize_distributed_does_nothing_for_one_cpu_process(monkeypatch):
  for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(key, raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert sharding.initialize_distributed() is False


if __name__ == "__main__" and sys.argv[1] == "sharded":
  _sharded_report(sys.argv[2])
elif __name__ == "__main__" and sys.argv[1] == "worker":
  _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
