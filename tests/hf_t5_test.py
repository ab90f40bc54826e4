"""Hugging Face T5 in and out: tiny random T5 v1.0, v1.1 and mT5 models built here with
transformers, imported, compared with transformers itself, exported and fine-tuned."""

import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

PEERS = "the reference T5 these tests compare with: pip install -r requirements-peers.txt"
torch = pytest.importorskip("torch", reason=f"no torch, {PEERS}")
transformers = pytest.importorskip("transformers", reason=f"no transformers, {PEERS}")

from refinedweb_jax import cli, configs  # noqa: E402
from refinedweb_jax.convert import commands, hf_t5  # noqa: E402
from refinedweb_jax.data import tokenizer as tok  # noqa: E402
from refinedweb_jax.model import decode  # noqa: E402
from refinedweb_jax.model.config import ModelConfig  # noqa: E402
from refinedweb_jax.model.transformer import EncoderDecoder, flat_params  # noqa: E402
from refinedweb_jax.train import setup, trainer  # noqa: E402
from conftest import tiny_config  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

PIECES = 300
VOCAB = 384  # T5's layout: the pieces, 100 extra ids, padding to a multiple of 128
SIZES = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
             num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
             dropout_rate=0.0, decoder_start_token_id=0)
VARIANTS = {  # name: (config class, model class, feed_forward_proj, tied)
    "t5_v1_0": ("T5Config", "T5ForConditionalGeneration", "relu", True),
    "t5_v1_1": ("T5Config", "T5ForConditionalGeneration", "gated-gelu", False),
    "mt5": ("MT5Config", "MT5ForConditionalGeneration", "gated-gelu", False),
}


@pytest.fixture(scope="module")
def spiece(tmp_path_factory):
  """A SentencePiece model with T5's special ids, trained on Multi30k-like captions."""
  words = "man woman dog child street bicycle red blue runs sits water ball park".split()
  rng = np.random.default_rng(0)
  texts = [" ".join(rng.choice(words, 8)) + f" {i}." for i in range(500)]
  path = tmp_path_factory.mktemp("spiece") / "spiece.model"
  return tok.train_tokenizer(texts, str(path), vocab_size=PIECES)


def _hf_model(name: str, seed: int = 0):
  config_cls, model_cls, ff, tied = VARIANTS[name]
  torch.manual_seed(seed)
  config = getattr(transformers, config_cls)(feed_forward_proj=ff, tie_word_embeddings=tied,
                                             **SIZES)
  model = getattr(transformers, model_cls)(config).eval()
  # A random model rarely picks EOS. Give EOS the output row of a token that greedy decoding
  # picks at step 4, a little larger: decoding then ends where that token would come.
  # (Tied, the EOS row is also the inputs' last embedding: retry until some sequence ends.)
  head = model.shared if tied else model.lm_head
  for _ in range(8):
    out = _hf_generate(model, _batch(seed=2), 10, do_sample=False)
    if (out == 1).any():
      return model
    with torch.no_grad():
      head.weight[1] = 1.05 * head.weight[int(out[0, 4])]
  raise AssertionError("no EOS in greedy outputs")


@pytest.fixture(scope="module")
def imported(spiece, tmp_path_factory):
  """Per variant: (HF model, its directory, our run directory)."""
  out = {}
  for name in VARIANTS:
    root = tmp_path_factory.mktemp(name)
    model = _hf_model(name)
    # v1.0 as PyTorch's pickle (older checkpoints), the others as safetensors.
    model.save_pretrained(root / "hf", safe_serialization=name != "t5_v1_0")
    shutil.copy(spiece, root / "hf" / "spiece.model")
    commands.import_hf(str(root / "hf"), str(root / "run"))
    out[name] = (model, str(root / "hf"), str(root / "run"))
  return out


def _batch(seed=0, batch=3, length=40):
  """Inputs with padding (rows of 40, 25 and 9 tokens) ending in EOS."""
  rng = np.random.default_rng(seed)
  x = rng.integers(3, PIECES, (batch, length))
  for row, n in enumerate((length, 25, 9)[:batch]):
    x[row, n - 1], x[row, n:] = 1, 0
  return x


def _hf_logits(model, x, decoder_inputs):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(x), attention_mask=torch.tensor(x != 0),
                decoder_input_ids=torch.tensor(decoder_inputs))
  return out.logits.numpy(), out.encoder_last_hidden_state.numpy()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_encoder_and_teacher_forced_logits_equal_hugging_face(imported, name):
  model, _, run_dir = imported[name]
  trained = setup.restore(run_dir)
  assert trained.run.model_cfg.position == "t5_bias" and trained.step == 0
  x = _batch()
  targets = np.random.default_rng(1).integers(3, PIECES, (3, 12))
  decoder_inputs = np.pad(targets[:, :-1], ((0, 0), (1, 0)))  # decoder start = pad = 0
  want_logits, want_enc = _hf_logits(model, x, decoder_inputs)
  ours = trained.run.model
  enc = ours.apply({"params": trained.params}, jnp.asarray(x), method="encode")
  logits = ours.apply({"params": trained.params}, jnp.asarray(x), jnp.asarray(decoder_inputs))
  real = x != 0
  np.testing.assert_allclose(np.asarray(enc)[real], want_enc[real], atol=1e-4)
  np.testing.assert_allclose(np.asarray(logits), want_logits, atol=1e-4)


def _hf_generate(model, x, length, **kwargs):
  with torch.no_grad():
    out = model.generate(input_ids=torch.tensor(x), attention_mask=torch.tensor(x != 0),
                         max_new_tokens=length, use_cache=False,  # its cache assumes as many
                         **kwargs).numpy()[:, 1:]  # decoder layers as encoder layers; start id
  return np.pad(out, ((0, 0), (0, length - out.shape[1])))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_greedy_decoding_gives_hugging_face_generates_tokens(imported, name):
  model, _, run_dir = imported[name]
  trained = setup.restore(run_dir)
  x = _batch(seed=2)
  ours = jax.jit(lambda p, x: decode.greedy_decode(trained.run.model, p, x, max_length=10,
                                                   eos_id=1))(trained.params, jnp.asarray(x))
  want = _hf_generate(model, x, 10, do_sample=False, num_beams=1)
  np.testing.assert_array_equal(np.asarray(ours), want)
  assert (want == 1).any(), "no sequence ended: EOS is never chosen, the test checks less"


def test_beam_search_hf_style_gives_hugging_face_generates_best_sequence(imported):
  model, _, run_dir = imported["t5_v1_1"]
  trained = setup.restore(run_dir)
  x = _batch(seed=3)
  for alpha in (1.0, 0.0):
    ours = jax.jit(lambda p, x: decode.beam_search(
        trained.run.model, p, x, beam_size=4, alpha=alpha, max_length=10, eos_id=1,
        style="hf")[0])(trained.params, jnp.asarray(x))
    want = _hf_generate(model, x, 10, do_sample=False, num_beams=4, length_penalty=alpha,
                        early_stopping=False)
    ended = np.cumsum(want == 1, axis=1) - (want == 1) > 0  # HF fills after EOS with EOS
    np.testing.assert_array_equal(np.asarray(ours), np.where(ended, 0, want), err_msg=alpha)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_export_loads_in_transformers_and_reimport_is_exact(imported, tmp_path, name):
  model, _, run_dir = imported[name]
  out = commands.export_hf(run_dir, str(tmp_path / "exported"))
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "spiece.model"]
  again = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
  x = _batch()
  decoder_inputs = np.zeros((3, 4), np.int64)
  np.testing.assert_array_equal(_hf_logits(again, x, decoder_inputs)[0],
                                _hf_logits(model, x, decoder_inputs)[0])
  commands.import_hf(out, str(tmp_path / "reimported"))
  first, second = setup.restore(run_dir), setup.restore(str(tmp_path / "reimported"))
  assert first.run.model_cfg == second.run.model_cfg
  for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bfloat16_weights_import_as_their_float32_values(imported, tmp_path):
  """Many checkpoints ship bf16, which NumPy cannot hold: they read as ml_dtypes.bfloat16."""
  model, hf_dir, run_dir = imported["t5_v1_1"]
  model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
  model.to(torch.float32)
  shutil.copy(os.path.join(hf_dir, "spiece.model"), tmp_path / "bf16")
  commands.import_hf(str(tmp_path / "bf16"), str(tmp_path / "run"))
  full, half = setup.restore(run_dir), setup.restore(str(tmp_path / "run"))
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(half.params)):
    np.testing.assert_array_equal(np.asarray(a).astype(jnp.bfloat16).astype(np.float32),
                                  np.asarray(b))


def test_a_model_of_ours_exports_with_its_attention_scale_folded_in(tmp_path, spiece):
  """scale_attention=True (our default) exports as T5 does: 1/sqrt(d) moves into the queries."""
  cfg = ModelConfig.from_preset("tiny", vocab_size=VOCAB, position="t5_bias",
                                relative_attention_num_buckets=8,
                                relative_attention_max_distance=20)
  model = EncoderDecoder(cfg)
  x = jnp.asarray(_batch())
  params = model.init(jax.random.key(0), x, x[:, :4])["params"]
  flat = flat_params(params)
  weights = hf_t5.from_params({k: np.asarray(v) for k, v in flat.items()}, cfg)
  hf_dir = tmp_path / "hf"
  hf_dir.mkdir()
  from safetensors.numpy import save_file
  save_file(weights, str(hf_dir / "model.safetensors"))
  (hf_dir / "config.json").write_text(json.dumps(hf_t5.hf_config(cfg)))
  hf = transformers.T5ForConditionalGeneration.from_pretrained(str(hf_dir)).eval()
  decoder_inputs = np.zeros((3, 4), np.int64)
  want = _hf_logits(hf, np.asarray(x), decoder_inputs)[0]
  got = model.apply({"params": params}, x, jnp.asarray(decoder_inputs))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


def test_local_encoder_with_a_window_over_the_whole_input_equals_dense(imported):
  """Fine-tuning with a sparse kind starts from the dense model's function exactly."""
  trained = setup.restore(imported["t5_v1_1"][2])
  x = jnp.asarray(_batch())
  decoder_inputs = jnp.zeros((3, 6), jnp.int32)
  dense_logits = trained.run.model.apply({"params": trained.params}, x, decoder_inputs)
  for kind, sizes in (("local", dict(window=48, block_size=16)),
                      ("bigbird", dict(block_size=8, window_blocks=11, global_blocks=1,
                                       random_blocks=0))):
    cfg = trained.run.model_cfg
    sparse = EncoderDecoder(ModelConfig(**{
        **{f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
        "encoder_attention": kind, "attention": type(cfg.attention)(**sizes)}))
    logits = sparse.apply({"params": trained.params}, x, decoder_inputs)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(dense_logits), atol=1e-5,
                               err_msg=kind)


@pytest.mark.public_data("multi30k")
def test_sparse_fine_tune_then_distill_from_the_imported_teacher(imported, tiny_data_dir,
                                                                 tmp_path):
  """experiments/finetune_t5_multi30k.py:smoke from the import (local encoder, t5_bias),
  then `distill dump --teacher` of the import and a student trained on its logits."""
  from refinedweb_jax.distill import dump
  run_dir = imported["t5_v1_1"][2]
  root = os.path.join(os.path.dirname(__file__), "..")
  config = configs.load_config(os.path.join(root, "experiments", "finetune_t5_multi30k.py:smoke"))
  config.data.data_dir = tiny_data_dir
  config.train.init_from = run_dir
  config.train.async_checkpointing = False
  state = trainer.train_and_evaluate(config, str(tmp_path / "finetuned"))
  assert int(state.step) == 4
  rows = [json.loads(line) for line in open(tmp_path / "finetuned" / "metrics.jsonl")]
  evals = [r["eval/loss"] for r in rows if "eval/loss" in r]  # the same examples each time
  assert len(evals) == 2 and all(np.isfinite(evals)) and evals[1] < evals[0]
  finetuned = setup.restore(str(tmp_path / "finetuned"))
  assert finetuned.run.model_cfg.encoder_attention == "local"
  assert finetuned.run.model_cfg.position == "t5_bias"
  # Continuing the run needs only its own checkpoint, not the run it started from.
  config.train.update(dict(num_steps=6, init_from=str(tmp_path / "moved_away")))
  assert int(trainer.train_and_evaluate(config, str(tmp_path / "finetuned")).step) == 6

  kd = tiny_config(tiny_data_dir)  # the built-in corpus in the imported model's tokenizer
  kd.data.tokenizer = os.path.join(run_dir, "spiece.model")
  kd.model.vocab_size = VOCAB  # the teacher's logits cover its extra ids too
  kd.distill.update(dict(top_k=8, shard_examples=4096))
  logits_dir = str(tmp_path / "logits")
  dump.dump(kd, run_dir, logits_dir, log=lambda *a: None)
  trainer.train_and_evaluate(_with(kd, logits=logits_dir), str(tmp_path / "student"))
  rows = [json.loads(line) for line in open(tmp_path / "student" / "metrics.jsonl")]
  kl = [r["train/kd_kl"] for r in rows if "train/kd_kl" in r]
  assert kl and all(np.isfinite(kl)) and kl[0] > 0


def _cli_error(capsys, argv) -> str:
  assert cli.main(argv) != 0
  err = capsys.readouterr().err.strip()
  assert err.startswith("refinedweb: error: ") and "\n" not in err, err
  return err


def test_bad_model_directories_are_one_line_errors_and_write_nothing(imported, tmp_path, capsys):
  _, hf_dir, run_dir = imported["t5_v1_1"]  # saved as safetensors
  target = tmp_path / "w"

  def broken(name, edit):
    d = tmp_path / name
    shutil.copytree(hf_dir, d)
    edit(d)
    return str(d)

  def other_architecture(d):
    (d / "config.json").write_text(json.dumps({"architectures": ["BartForConditionalGeneration"],
                                               "model_type": "bart"}))

  def wrong_shape(d):
    from safetensors.numpy import load_file, save_file
    weights = load_file(str(d / "model.safetensors"))
    weights["encoder.block.0.layer.0.SelfAttention.q.weight"] = np.zeros((16, 32), np.float32)
    save_file(weights, str(d / "model.safetensors"))

  def no_head(d):
    from safetensors.numpy import load_file, save_file
    weights = load_file(str(d / "model.safetensors"))
    del weights["lm_head.weight"]  # untied (tie_word_embeddings=false): no fallback
    save_file(weights, str(d / "model.safetensors"))

  def large_vocabulary(d):
    config = json.loads((d / "config.json").read_text())
    config["vocab_size"] = 1024  # 300 pieces + 100 extra ids round up to 512, not 1024
    (d / "config.json").write_text(json.dumps(config))

  cases = [
      (broken("bart", other_architecture), "BartForConditionalGeneration.*supported: "
                                           "T5ForConditionalGeneration"),
      (broken("no_weights", lambda d: os.remove(d / "model.safetensors")),
       "no weights in .*model.safetensors"),
      (broken("shape", wrong_shape), r"weight encoder.block.0.layer.0.SelfAttention.q.weight has "
                                     r"shape \(16, 32\) but the model needs \(32, 32\)"),
      (broken("tokenizer", large_vocabulary), "300 pieces but the model's vocab_size is 1024.*"
                                             "extra ids"),
      (broken("no_spiece", lambda d: os.remove(d / "spiece.model")), "no spiece.model"),
      (broken("no_head", no_head), "weight 'lm_head.weight' is missing"),
  ]
  for model_dir, message in cases:
    err = _cli_error(capsys, ["import-hf", model_dir, "--workdir", str(target)])
    assert re.search(message, err), err
    assert not target.exists() and not [p for p in os.listdir(tmp_path) if "partial" in p]
  err = _cli_error(capsys, ["import-hf", hf_dir, "--workdir", run_dir])
  assert "already exists and is not empty" in err
  err = _cli_error(capsys, ["train", "--workdir", run_dir])
  assert "holds an imported model" in err and "--config.train.init_from=" in err


def test_export_of_a_rope_model_names_the_position_kind(tiny_data_dir, tmp_path, capsys):
  config = tiny_config(tiny_data_dir)
  config.train.update(dict(num_steps=1, eval_every=1, checkpoint_every=1))
  trainer.train_and_evaluate(config, str(tmp_path / "rope"))
  err = _cli_error(capsys, ["export-hf", "--workdir", str(tmp_path / "rope"),
                            "--out", str(tmp_path / "out")])
  assert "model.position='rope'" in err and "t5_bias" in err
  assert not (tmp_path / "out").exists()


def _with(config, **distill):
  """A student config: its teacher (distill.logits or distill.teacher) set."""
  config = config.copy_and_resolve_references()
  for key, value in distill.items():
    config.distill[key] = str(value)
  return config


def test_an_imported_run_describes_its_own_model(imported, capsys):
  """config.json at the top of an imported run and `refinedweb config --workdir` give the T5's
  real sizes, position kind and vocabulary, not a preset's."""
  _, _, workdir = imported["t5_v1_1"]
  saved = json.loads(open(os.path.join(workdir, "config.json")).read())["model"]
  assert cli.main(["config", "--workdir", workdir]) == 0
  shown = json.loads(capsys.readouterr().out)["model"]
  for model in (saved, shown):
    assert model["preset"] == "custom" and model["position"] == "t5_bias"
    assert (model["d_model"], model["d_ff"], model["vocab_size"]) == (32, 48, VOCAB)
    assert (model["num_encoder_layers"], model["num_decoder_layers"]) == (2, 3)
    assert isinstance(model["scan_layers"], bool)  # the layout it was written in, on any machine
