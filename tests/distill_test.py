"""Distillation: the top-k KL loss, the logit dump (exact, resumable) and student training."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from refinedweb_jax import cli
from refinedweb_jax.data import pipeline
from refinedweb_jax.distill import dump
from refinedweb_jax.data import logit_store
from refinedweb_jax.model import losses
from refinedweb_jax.model.transformer import forward
from refinedweb_jax.train import checkpoint, setup, trainer
from conftest import tiny_config


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """Runs here repeat the same programs (teacher, student, resume): compile each once."""
  from jax.experimental.compilation_cache import compilation_cache as cc
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  saved = {name: getattr(jax.config, name) for name in names}
  new = (str(tmp_path_factory.mktemp("xla_cache")), 0)
  for name, value in zip(names, new):
    jax.config.update(name, value)
  cc.reset_cache()
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  cc.reset_cache()


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _reference_kl(teacher_NxV, student_NxV, k, temperature):
  """float64 KL of the (top-k + tail) groupings of full softmaxes, tempered as p^(1/T)."""
  total = 0.0
  for zt, zs in zip(teacher_NxV, student_NxV):
    p, q = _softmax(zt), _softmax(zs)
    ids = np.argsort(-zt)[:k]
    pb = np.append(p[ids], max(1.0 - p[ids].sum(), 0.0))
    qb = np.append(q[ids], 1.0 - q[ids].sum())
    pb, qb = pb ** (1 / temperature), qb ** (1 / temperature)
    pb, qb = pb / pb.sum(), qb / qb.sum()
    keep = pb > 0
    total += np.sum(pb[keep] * (np.log(pb[keep]) - np.log(qb[keep])))
  return total


def _topk_logprobs(teacher_BxTxV, k):
  logprobs = teacher_BxTxV - jax.nn.logsumexp(teacher_BxTxV, -1, keepdims=True)
  return jax.lax.top_k(jnp.asarray(logprobs, jnp.float32), k)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_loss_matches_float64_reference_and_full_kl_at_k_equal_v(temperature):
  rng = np.random.default_rng(0)
  vocab = 40
  teacher = rng.normal(size=(2, 5, vocab)) * 3
  student = rng.normal(size=(2, 5, vocab)) * 3
  weights = np.ones((2, 5))
  kd = jax.jit(lambda *a, temperature: jnp.sum(losses.topk_distillation(
      *a, temperature=temperature) * weights), static_argnames="temperature")
  for k in (1, 6):
    values, ids = _topk_logprobs(teacher, k)
    kl = kd(jnp.asarray(student, jnp.float32), values, ids, temperature=temperature)
    ref = _reference_kl(teacher.reshape(-1, vocab), student.reshape(-1, vocab), k, temperature)
    assert ref > 0.1  # the tail carries real mass here
    np.testing.assert_allclose(float(kl), ref, rtol=2e-5)
  values, ids = _topk_logprobs(teacher, vocab)
  kl = kd(jnp.asarray(student, jnp.float32), values, ids, temperature=temperature)
  p, q = _softmax(teacher / temperature), _softmax(student / temperature)
  np.testing.assert_allclose(float(kl), np.sum(p * (np.log(p) - np.log(q))), rtol=1e-5)


def test_kd_gradients_reach_only_the_student():
  rng = np.random.default_rng(1)
  teacher, student = rng.normal(size=(2, 3, 30)), rng.normal(size=(2, 3, 30))
  values, ids = _topk_logprobs(teacher, 5)
  fn = lambda s, t: jnp.sum(losses.topk_distillation(s, t, ids, temperature=2.0))
  g_student, g_teacher = jax.jit(jax.grad(fn, argnums=(0, 1)))(jnp.asarray(student, jnp.float32), values)
  assert float(jnp.max(jnp.abs(g_teacher))) == 0.0
  assert float(jnp.max(jnp.abs(g_student))) > 0 and bool(jnp.all(jnp.isfinite(g_student)))
  # Padding rows (all-zero teacher arrays, weight 0) stay finite and inert.
  kl_BxT = losses.topk_distillation(jnp.asarray(student, jnp.float32), jnp.zeros_like(values),
                                    jnp.zeros_like(ids))
  assert bool(jnp.all(jnp.isfinite(kl_BxT))) and float(jnp.sum(kl_BxT * 0.0)) == 0.0


def _teacher_config(data_dir):
  config = tiny_config(data_dir)
  config.train.update(dict(num_steps=4, eval_every=100, checkpoint_every=100,
                           decode_examples_per_task=0))
  config.distill.update(dict(top_k=16, shard_examples=128, dump_batch_size=8))
  return config


@pytest.fixture(scope="module")
def teacher_run(tiny_data_dir, tmp_path_factory):
  """(workdir, logits dir): a tiny trained teacher and its complete dump (with outputs)."""
  workdir = str(tmp_path_factory.mktemp("teacher"))
  config = _teacher_config(tiny_data_dir)
  trainer.train_and_evaluate(config, workdir)
  out = str(tmp_path_factory.mktemp("logits"))
  stats = dump.dump(config, workdir, out, sequence_kd=True)
  assert stats["examples"] == 400
  return workdir, out


def test_stored_logits_equal_the_teachers_recomputed(teacher_run, tiny_data_dir):
  workdir, out = teacher_run
  teacher = setup.restore(workdir)
  store = logit_store.LogitStore(out)
  run_tasks = setup.run_tasks(_teacher_config(tiny_data_dir))
  teacher_forward = jax.jit(lambda params, batch: forward(teacher.run.model, params, batch))
  for task_index, record in ((0, 0), (3, 5), (len(run_tasks) - 1, 1)):
    task = run_tasks[task_index]
    example = task.source("train")[record]
    features, _ = next(pipeline.eval_batches([example], teacher.run.tokenizer, batch_size=1,
                                             input_length=64, target_length=32))
    logits = np.asarray(teacher_forward(teacher.params, features))[0]
    stored = store[store.example_id(task.name, record)]
    n = int(features["decoder_loss_weights"].sum())
    assert stored["ids"].shape == (n, 16)
    lse = jax.nn.logsumexp(logits[:n], -1)
    np.testing.assert_allclose(stored["lse"], lse, rtol=1e-5, atol=1e-5)
    recovered = stored["logprobs"] + stored["lse"][:, None]
    np.testing.assert_allclose(recovered, np.take_along_axis(logits[:n], stored["ids"], -1),
                               rtol=2 ** -8, atol=2 ** -8 * 4)
    np.testing.assert_array_equal(np.sort(stored["ids"], -1),
                                  np.sort(np.argsort(-logits[:n], -1)[:, :16], -1))
    seq = stored["sequence"]
    assert len(seq) >= 1 and seq[-1] == teacher.run.tokenizer.eos_id


def test_killed_dump_resumes_with_every_example_exactly_once(teacher_run, tiny_data_dir,
                                                             tmp_path, monkeypatch):
  workdir, complete = teacher_run
  config = _teacher_config(tiny_data_dir)
  out = str(tmp_path / "logits")
  original, written = logit_store.write_shard, []

  def killed_after_two(directory, shard, num_shards, records):
    if len(written) == 2:
      raise KeyboardInterrupt("killed")
    written.append(shard)
    return original(directory, shard, num_shards, records)

  monkeypatch.setattr(logit_store, "write_shard", killed_after_two)
  with pytest.raises(KeyboardInterrupt):
    dump.dump(config, workdir, out)
  monkeypatch.setattr(logit_store, "write_shard", original)
  with pytest.raises(FileNotFoundError, match=r"2 of 4 shards missing: logits-00002-of-00004"):
    logit_store.LogitStore(out)
  with pytest.raises(FileNotFoundError, match="incomplete"):
    trainer.train_and_evaluate(_with(config, logits=out), str(tmp_path / "student"))
  finished = {s: os.path.getmtime(os.path.join(out, logit_store.shard_name(s, 4))) for s in (0, 1)}
  dump.dump(config, workdir, out)
  for s, mtime in finished.items():  # finished shards were skipped, not rewritten
    assert os.path.getmtime(os.path.join(out, logit_store.shard_name(s, 4))) == mtime
  store, reference = logit_store.LogitStore(out), logit_store.LogitStore(complete)
  seen = [store[g]["example"] for g in range(len(store))]
  assert seen == list(range(400))
  for g in (0, 130, 399):
    np.testing.assert_array_equal(store[g]["ids"], reference[g]["ids"])


def test_errors_name_the_problem(teacher_run, tiny_data_dir, tmp_path, capsys):
  workdir, out = teacher_run
  config = _teacher_config(tiny_data_dir)
  config.data.vocab_size = 500
  with pytest.raises(ValueError, match="tokenizer mismatch.*vocab_size=500.*600 pieces"):
    dump.dump(config, workdir, str(tmp_path / "a"))
  config = _teacher_config(tiny_data_dir)
  config.distill.top_k = 601
  with pytest.raises(ValueError, match=r"top_k=601 must be in \[1, 600\]"):
    dump.dump(config, workdir, str(tmp_path / "b"))
  # The command line: one line, exit status 2, no traceback.
  for argv, message in (
      (["distill", "train", "--logits", str(tmp_path / "none"), "--workdir", str(tmp_path / "w")],
       "does not exist"),
      (["distill", "dump", "--teacher", workdir, "--out", str(tmp_path / "c"),
        "--config.data.vocab_size=8000"], "data.vocab_size: run 600, given 8000"),
      (["distill", "dump", "--teacher", workdir, "--out", str(tmp_path / "c"),
        "--config.distill.top_k=601", "--config.data.vocab_size=600"], "top_k=601"),
      (["distill", "bake"], "unknown 'refinedweb distill' subcommand 'bake'"),
      (["distill", "train", "--workdir", "w", "--config.distill.alpha=2"], "alpha must be in")):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("refinedweb: error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1


def _student_config(data_dir, **distill_settings):
  config = _teacher_config(data_dir)
  config.model.update(dict(d_model=16, num_heads=2, head_dim=8, d_ff=32))
  config.train.update(dict(num_steps=4, checkpoint_every=2, log_every=1))
  config.distill.update(dict(alpha=0.5, temperature=2.0))
  config.distill.update(distill_settings)
  return config



def _with(config, **distill):
  """A student config: its teacher (distill.logits or distill.teacher) set."""
  config = config.copy_and_resolve_references() if hasattr(config, "copy_and_resolve_references") else config
  for key, value in distill.items():
    config.distill[key] = str(value)
  if "teacher" in distill:
    config.distill.online = True
  return config

def _train_metrics(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r for r in rows if r["split"] == "train"}


@pytest.fixture(scope="module")
def student_run(teacher_run, tiny_data_dir, tmp_path_factory):
  """(final state, workdir) of an uninterrupted 4-step student trained from the dump."""
  workdir = str(tmp_path_factory.mktemp("student"))
  state = trainer.train_and_evaluate(_with(_student_config(tiny_data_dir), logits=teacher_run[1]),
                                 workdir)
  return state, workdir


def test_distill_train_runs_and_resume_joins_the_same_logits(teacher_run, student_run,
                                                             tiny_data_dir, tmp_path,
                                                             monkeypatch):
  full, full_dir = student_run
  metrics = _train_metrics(full_dir)
  assert all(np.isfinite(m["train/loss"]) and m["train/kd_kl"] > 0 for m in metrics.values())
  original = checkpoint.Checkpointer.due  # asked after every step

  def crash_at_3(self, step):
    if step == 3:
      raise RuntimeError("simulated crash")
    return original(self, step)

  config, workdir = _student_config(tiny_data_dir), str(tmp_path / "resumed")
  monkeypatch.setattr(checkpoint.Checkpointer, "due", crash_at_3)
  with pytest.raises(RuntimeError, match="simulated crash"):
    trainer.train_and_evaluate(_with(config, logits=teacher_run[1]), workdir)
  monkeypatch.setattr(checkpoint.Checkpointer, "due", original)
  # Steps 3 and 4 are replayed from the step-2 checkpoint, data iterator included.
  resumed = trainer.train_and_evaluate(_with(config, logits=teacher_run[1]), workdir)
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  again = _train_metrics(workdir)
  for step in (3, 4):
    assert again[step]["train/kd_kl"] == pytest.approx(metrics[step]["train/kd_kl"], rel=1e-5)


def test_online_teacher_gives_the_offline_loss_and_sequence_kd_trains(teacher_run, student_run,
                                                                      tiny_data_dir, tmp_path):
  workdir, out = teacher_run
  config = _student_config(tiny_data_dir, online=True)
  config.train.update(dict(num_steps=1, eval_every=100))
  trainer.train_and_evaluate(_with(config, teacher=workdir), str(tmp_path / "online"))
  offline, online = _train_metrics(student_run[1])[1], _train_metrics(str(tmp_path / "online"))[1]
  # Same batch, same student init: only the bfloat16 rounding of stored values differs.
  assert online["train/kd_kl"] == pytest.approx(offline["train/kd_kl"], rel=2e-2)
  assert online["train/ce"] == pytest.approx(offline["train/ce"], rel=1e-6)
  # The teacher's own model and step: sequence-level KD is plain training on other targets.
  config = _teacher_config(tiny_data_dir)
  config.distill.sequence_kd = True
  trainer.train_and_evaluate(_with(config, logits=out), str(tmp_path / "seqkd"))
  assert np.isfinite(_train_metrics(str(tmp_path / "seqkd"))[4]["train/loss"])
