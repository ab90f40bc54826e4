"""train_step and checkpoint save -> restore on one device (sharded meshes: scale_test.py)."""

import json
import types

import jax
import numpy as np
import pytest

from refinedweb_jax import configs, sharding
from refinedweb_jax.data import pipeline
from refinedweb_jax.model.transformer import EncoderDecoder, flat_params
from refinedweb_jax.train import checkpoint, optim
from refinedweb_jax.train import step as step_lib


def tiny_setup(mesh_devices=None, data_axis=-1, fsdp=1, tensor=1, optimizer="adamw"):
  config = configs.default_config()
  config.model.preset = "tiny"
  config.optimizer.name = optimizer
  config.optimizer.warmup_steps = 1
  config.train.num_steps = 10
  model = EncoderDecoder(configs.model_config(config))
  tx, _ = optim.make_optimizer(config.optimizer, config.train.num_steps)
  mesh = sharding.make_mesh(data_axis, fsdp, tensor, devices=mesh_devices)
  state, shardings = step_lib.create_train_state(model, tx, mesh, jax.random.key(0),
                                              input_length=16, target_length=8)
  step = step_lib.jit_train_step(model, config, mesh, shardings)
  return config, model, tx, mesh, state, shardings, step


def random_batch(seed, batch=8, input_length=16, target_length=8, vocab=512):
  rng = np.random.default_rng(seed)
  pad = pipeline.PadOne(input_length, target_length)
  rows = []
  for _ in range(batch):
    n, m = rng.integers(3, input_length + 1), rng.integers(2, target_length + 1)
    rows.append(pad.map({"inputs": rng.integers(3, vocab, n).astype(np.int32),
                         "targets": rng.integers(3, vocab, m).astype(np.int32)}))
  return pipeline.to_model_features({k: np.stack([r[k] for r in rows]) for k in rows[0]})


def test_shift_right_restarts_every_packed_segment():
  batch = {"targets": np.array([[5, 6, 7, 8, 9, 0]]),
           "targets_segment_ids": np.array([[1, 1, 1, 2, 2, 0]]),
           "targets_positions": np.array([[0, 1, 2, 0, 1, 0]]),
           "inputs": np.zeros((1, 2)), "inputs_segment_ids": np.zeros((1, 2)),
           "inputs_positions": np.zeros((1, 2))}
  out = pipeline.to_model_features(batch)
  np.testing.assert_array_equal(out["decoder_input_tokens"], [[0, 5, 6, 0, 8, 0]])
  np.testing.assert_array_equal(out["decoder_loss_weights"], [[1, 1, 1, 1, 1, 0]])


def test_save_restore_gives_identical_params_and_next_loss(tmp_path):
  _, model, tx, mesh, state, shardings, step = tiny_setup()
  rng = jax.random.key(1)
  state, _ = step(state, sharding.to_global(random_batch(0), mesh), rng)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), save_every=1)
  ckpt.save(1, state, config={"a": 1}, tokenizer_proto=b"\x00spm", force=True)
  ckpt.wait()
  abstract, _ = step_lib.abstract_train_state(model, tx, mesh, input_length=16, target_length=8)
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


def test_adafactor_step_runs_with_factored_moments_replicated():
  _, _, _, mesh, state, _, step = tiny_setup(optimizer="adafactor")
  state, metrics = step(state, sharding.to_global(random_batch(0), mesh), jax.random.key(0))
  assert np.isfinite(float(metrics["train/loss"])) and int(state.step) == 1


def test_mesh_errors_name_the_sizes():
  with pytest.raises(ValueError, match="must equal the count"):
    sharding.make_mesh(2, 2, 1, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="mesh.tensor must be a positive size"):
    sharding.make_mesh(1, 1, 0)


def test_checkpoint_directory_keeps_urls():
  assert checkpoint.absolute("gs://bucket/run/checkpoints") == "gs://bucket/run/checkpoints"
  assert checkpoint.absolute("run/checkpoints").startswith("/")


def test_throughput_leaves_out_evaluations_between_log_steps(tiny_data_dir, tmp_path,
                                                            monkeypatch):
  """A fake clock: every step takes 1 s, every evaluation 100 s; logs come every 4 steps."""
  from conftest import tiny_config
  from refinedweb_jax.evaluate import evaluator
  from refinedweb_jax.train import loop, trainer
  clock = {"now": 0.0}
  # The loop's clock only: other threads (TensorBoard's writer) keep the real one.
  monkeypatch.setattr(loop, "time", types.SimpleNamespace(time=lambda: clock["now"],
                                                          perf_counter=lambda: clock["now"]))
  tokens = []
  real_jit = step_lib.jit_train_step

  def timed_jit(*args, **kwargs):
    step = real_jit(*args, **kwargs)

    def timed(state, batch, rng):  # a fake 1 s per step
      clock["now"] += 1.0
      tokens.append(int(np.sum(np.asarray(batch["encoder_segment_ids"]) > 0)
                        + np.sum(np.asarray(batch["decoder_loss_weights"]))))
      return step(state, batch, rng)
    return timed

  real_eval = evaluator.Evaluator.run

  def slow_eval(self, *args, **kwargs):
    clock["now"] += 100.0
    return real_eval(self, *args, **kwargs)

  monkeypatch.setattr(step_lib, "jit_train_step", timed_jit)
  monkeypatch.setattr(evaluator.Evaluator, "run", slow_eval)
  config = tiny_config(tiny_data_dir)
  config.train.update(num_steps=8, log_every=4, eval_every=2, decode_examples_per_task=0)
  trainer.train_and_evaluate(config, str(tmp_path / "run"))
  logged = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  train = [row for row in logged if row["split"] == "train"]
  assert [row["step"] for row in train] == [4, 8]
  for row, window in zip(train, (tokens[:4], tokens[4:8])):
    assert row["train/steps_per_second"] == pytest.approx(1.0)
    assert row["train/tokens_per_second"] == pytest.approx(sum(window) / 4.0)


def test_eval_tasks_can_hold_a_direction_no_arm_trains_on(tiny_data_dir):
  from conftest import tiny_config
  from refinedweb_jax.train import setup
  config = tiny_config(tiny_data_dir)
  config.mixture.tasks = "translate_en_de,translate_de_fr"
  config.mixture.eval_tasks = "translate_en_de,translate_en_fr"
  run = setup.build(config)
  assert [t.name for t in run.tasks] == ["translate_en_de", "translate_de_fr"]
  evaluator = run.evaluator(log=None, decode_examples=0)
  assert [t.name for t in evaluator.tasks] == ["translate_en_de", "translate_en_fr"]
  config.mixture.eval_tasks = "translate_en_xx"
  with pytest.raises(ValueError, match="unknown task 'translate_en_xx' in config.mixture"
                                       ".eval_tasks"):
    configs.validate(config)


@pytest.mark.parametrize("platform, dtype", [("cpu", "float32"), ("gpu", "bfloat16"),
                                             ("tpu", "bfloat16")])
def test_model_dtype_and_scan_layers_resolve_per_backend(platform, dtype, monkeypatch):
  """bfloat16 compute and scanned layers on GPU and TPU, float32 and unrolled layers on CPU;
  an explicit dtype or scan_layers is kept."""
  from refinedweb_jax import backend
  monkeypatch.setattr(backend, "platform", lambda: platform)
  config = configs.default_config()
  assert config.model.dtype == "auto" and config.model.scan_layers is None
  resolved = configs.resolve(config)
  assert resolved.model.dtype == dtype and resolved.model.scan_layers == (platform != "cpu")
  assert configs.model_config(configs.default_config()).scan_layers == (platform != "cpu")
  config = configs.default_config()
  config.model.dtype, config.model.scan_layers = "float32", platform == "cpu"
  resolved = configs.resolve(config)
  assert resolved.model.dtype == "float32" and resolved.model.scan_layers == (platform == "cpu")


def test_the_non_finite_guard_is_a_select_not_a_conditional():
  """The update is kept or dropped inside the fused step: no conditional in the HLO."""
  _, _, _, mesh, state, _, step = tiny_setup()
  batch = sharding.to_global(random_batch(0), mesh)
  hlo = step.lower(state, batch, jax.random.key(0)).compile().as_text()
  assert " conditional(" not in hlo and "conditional" not in hlo.split("ENTRY")[-1], (
      [line for line in hlo.splitlines() if "conditional" in line][:3])
  assert "select" in hlo


def test_a_config_saved_before_layers_were_scanned_describes_unrolled_layers():
  """A run saved without model.scan_layers has unrolled parameters (encoder_0/...): its
  config reads back as unrolled, and its parameters convert to the scanned layout and back."""
  from refinedweb_jax.model import scan
  saved = configs.default_config().to_dict()
  saved["model"]["preset"] = "tiny"
  del saved["model"]["scan_layers"]
  config = configs.from_saved(saved)
  assert config.model.scan_layers is False
  model_cfg = configs.model_config(config)
  x = np.ones((1, 8), np.int32)
  params = EncoderDecoder(model_cfg).init(jax.random.key(0), x, x)["params"]
  assert "encoder_0" in params and "decoder_1" in params
  flat = flat_params(params)
  scanned_cfg = configs.model_config(configs.from_saved({**saved, "model": {
      **saved["model"], "scan_layers": True}}))
  scanned = scan.to_scanned(flat, scanned_cfg)
  assert scan.is_scanned(scanned) and not scan.is_scanned(flat)
  back = scan.to_unrolled(scanned, scanned_cfg)
  assert set(back) == set(flat)
  for key, value in flat.items():
    np.testing.assert_array_equal(np.asarray(back[key]), np.asarray(value))
