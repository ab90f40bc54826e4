"""Odd command lines: each is refused in one line naming what is wrong (exit 2), never a
traceback, and no out-of-range value is accepted."""

import pytest

from refinedweb_jax import cli

W = ["--workdir", "W"]
TRAIN = ["train"] + W


def _set(key, value):
  return TRAIN + [f"--config.{key}={value}"]


CONFIG_VALUES = [
    # (key, bad value, what the message names)
    ("data.input_length", 0, "config.data.input_length must be > 0"),
    ("data.target_length", -3, "config.data.target_length must be > 0"),
    ("data.batch_size", 0, "config.data.batch_size must be > 0"),
    ("data.num_train", 0, "config.data.num_train must be > 0"),
    ("data.num_validation", -1, "config.data.num_validation must be > 0"),
    ("data.num_test", 0, "config.data.num_test must be > 0"),
    ("data.vocab_size", 0, "config.data.vocab_size must be > 0"),
    ("data.long_fraction", 1.5, "config.data.long_fraction must be in [0, 1]"),
    ("data.long_fraction", -0.1, "config.data.long_fraction must be in [0, 1]"),
    ("optimizer.learning_rate", -1e-3, "config.optimizer.learning_rate must be > 0"),
    ("optimizer.learning_rate", 0, "config.optimizer.learning_rate must be > 0"),
    ("optimizer.warmup_steps", -5, "config.optimizer.warmup_steps must be >= 0"),
    ("optimizer.b1", 1.5, "config.optimizer.b1 must be in [0, 1)"),
    ("optimizer.b2", 1.0, "config.optimizer.b2 must be in [0, 1)"),
    ("optimizer.weight_decay", -0.1, "config.optimizer.weight_decay must be >= 0"),
    ("optimizer.grad_clip_norm", -1, "config.optimizer.grad_clip_norm must be >= 0"),
    ("loss.label_smoothing", 5, "config.loss.label_smoothing must be in [0, 1)"),
    ("loss.label_smoothing", 1.0, "config.loss.label_smoothing must be in [0, 1)"),
    ("loss.z_loss", -1, "config.loss.z_loss must be >= 0"),
    ("train.num_steps", 0, "config.train.num_steps must be > 0"),
    ("train.log_every", 0, "config.train.log_every must be > 0"),
    ("train.eval_every", -1, "config.train.eval_every must be > 0"),
    ("train.checkpoint_every", 0, "config.train.checkpoint_every must be > 0"),
    ("train.keep_checkpoints", 0, "config.train.keep_checkpoints must be >= 1"),
    ("train.eval_examples", 0, "config.train.eval_examples must be >= 1"),
    ("train.eval_batch_size", 0, "config.train.eval_batch_size must be > 0"),
    ("train.decode_examples_per_task", -5, "config.train.decode_examples_per_task must be >= 0"),
    ("train.max_decode_length", 0, "config.train.max_decode_length must be >= 1"),
    ("train.microbatches", 0, "config.train.microbatches must be > 0"),
    ("train.microbatches", 3, "must be divisible by config.train.microbatches=3"),
    ("train.max_nonfinite_skips", 0, "config.train.max_nonfinite_skips must be >= 1"),
    ("distill.alpha", 2, "config.distill.alpha must be in [0, 1]"),
    ("distill.temperature", 0, "config.distill.temperature must be > 0"),
    ("distill.top_k", 0, "config.distill.top_k must be > 0"),
    ("distill.shard_examples", 0, "config.distill.shard_examples must be > 0"),
    ("distill.dump_batch_size", -2, "config.distill.dump_batch_size must be > 0"),
    ("distill.sequence_kd_beam", 0, "config.distill.sequence_kd_beam must be > 0"),
    ("mixture.temperature", 0, "config.mixture.temperature must be > 0"),
    ("mixture.cap", -1, "config.mixture.cap must be >= 0"),
    ("mesh.tensor", 0, "config.mesh.tensor must be a positive size or -1"),
    ("mesh.data", -2, "config.mesh.data must be a positive size or -1"),
    ("model.d_model", 0, "model.d_model must be > 0"),
    ("model.num_heads", -1, "model.num_heads must be > 0"),
    ("model.dropout_rate", 1.0, "model.dropout_rate must be in [0, 1)"),
    ("model.encoder_dense_every", -1, "model.encoder_dense_every must be >= 0"),
    ("model.attention.window", 0, "model.attention.window must be >= 1"),
    ("model.attention.block_size", 0, "model.attention.block_size must be >= 1"),
    # choices
    ("optimizer.name", "sgd", "unknown config.optimizer.name 'sgd'"),
    ("optimizer.schedule", "linear", "unknown config.optimizer.schedule 'linear'"),
    ("data.tokenizer", "bpe", "unknown config.data.tokenizer 'bpe'"),
    ("train.on_nonfinite", "ignore", "unknown config.train.on_nonfinite 'ignore'"),
    ("distill.value_dtype", "float8", "unknown config.distill.value_dtype 'float8'"),
    ("mixture.rate", "uniform", "unknown mixture rate 'uniform'"),
    ("mixture.tasks", "translate_en_xx", "unknown task 'translate_en_xx'"),
    ("public_tasks", "imagenet", "unknown public task 'imagenet'"),
    ("model.preset", "huge", "unknown model preset 'huge'"),
    ("model.dtype", "int8", "unknown model.dtype 'int8'"),
    ("model.remat", "some", "unknown model.remat 'some'"),
    ("model.activation", "tanh", "unknown model.activation 'tanh'"),
    ("model.dense_implementation", "flash", "unknown model.dense_implementation 'flash'"),
    ("model.encoder_attention", "fancy", "unknown attention kind 'fancy'"),
    ("model.attention.variant", "odd", "unknown model.attention.variant 'odd'"),
    ("model.attention.global_positions", "a-b", "bad model.attention.global_positions"),
    ("data.data_dir", "", "config.data.data_dir is empty"),
    # types
    ("train.num_steps", "many", "config.train.num_steps"),
    ("train.progress_bar", "perhaps", "use true or false"),
    ("optimizer.learning_rate", "fast", "config.optimizer.learning_rate"),
]


@pytest.mark.parametrize("key, value, message", CONFIG_VALUES,
                         ids=[f"{k}={v}" for k, v, _ in CONFIG_VALUES])
def test_bad_config_values_are_one_line_errors(key, value, message, tmp_path, monkeypatch,
                                               capsys):
  monkeypatch.chdir(tmp_path)  # a case that wrongly passes trains in tmp_path/W, not here
  _assert_one_line_error(_set(key, value), message, capsys)


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


CONFIG_FILES = [
    ("syntax.py", "def get_config(:\n  pass\n", "syntax.py:1: SyntaxError"),
    ("raises.py", "def get_config():\n  raise RuntimeError('boom')\n",
     "raises.py:2: RuntimeError: boom"),
    ("imports.py", "import no_such_module_here\n", "imports.py:1: ModuleNotFoundError"),
    ("noarg.py", "def get_config():\n  return None\n", "noarg.py"),
    ("returns_none.py", "def get_config(arg=''):\n  return None\n",
     "returned NoneType, not an ml_collections.ConfigDict"),
    ("nothing.py", "x = 1\n", "defines no get_config()"),
]


@pytest.mark.parametrize("name, text, message", CONFIG_FILES, ids=[c[0] for c in CONFIG_FILES])
def test_config_file_errors_name_the_file_and_line(name, text, message, tmp_path, monkeypatch,
                                                   capsys):
  monkeypatch.chdir(tmp_path)
  path = _write(tmp_path, name, text)
  spec = f"{path}:smoke" if name == "noarg.py" else path
  _assert_one_line_error(TRAIN + ["--config", spec], message, capsys)


MISC = [
    (["fly"], "unknown command 'fly'"),
    (["train"], "the following arguments are required: --workdir"),
    (TRAIN + ["--bogus"], "unknown flag '--bogus'"),
    (TRAIN + ["--config.train.num_steps"], "needs a value"),
    (TRAIN + ["--config.model.nope=1"], "unknown config key 'config.model.nope'"),
    (TRAIN + ["--config.nope.x=1"], "unknown config key 'config.nope.x'"),
    (TRAIN + ["--config", "no/such.py"], "config file 'no/such.py' not found"),
    (["eval"] + W + ["--examples", "-7"], "--examples must be -1"),
    (["eval"] + W + ["--split", "train"], "invalid choice: 'train'"),
    (["generate"] + W + ["--text", "  "], "empty input text"),
    (["generate"] + W + ["--max-new-tokens", "0", "--text", "x"], "--max-new-tokens must be >= 1"),
    (["generate"] + W + ["--max-new-tokens", "-4", "--text", "x"], "--max-new-tokens must be"),
    (["generate"] + W + ["--beam", "0", "--text", "x"], "--beam must be >= 1"),
    (["generate"] + W + ["--top-p", "2", "--text", "x"], "--top-p must be in (0, 1]"),
    (["generate"] + W + ["--top-k", "-1", "--text", "x"], "--top-k must be >= 0"),
    (["generate"] + W + ["--temperature", "-1", "--text", "x"], "--temperature must be >= 0"),
    (["generate"] + W + ["--length-penalty", "-1", "--text", "x"], "--length-penalty must be"),
    (["generate"] + W + ["--beam", "4", "--temperature", "1", "--text", "x"], "exclude each"),
    (["generate"] + W + ["--batch-size", "0", "--text", "x"], "--batch-size must be >= 1"),
    (["generate"] + W + ["--task", "poetry", "--text", "x"], "unknown task 'poetry'"),
    (["generate"] + W + ["--text", "x", "--input", "f"], "not both"),
    (["generate"] + W + ["--input", "no/such/file"], "cannot read --input"),
    (["generate"] + W + ["--text", "chat: hi"], "no checkpoint"),
    (["chat"] + W + ["--beam", "0"], "--beam must be >= 1"),
    (["prepare", "--task", ""], "--task needs --train"),
    (["prepare", "--task", "x", "--train", "no/such.tsv"], "train file not found"),
    (["prepare", "--task", "x", "--format", "csv", "--train", "a"], "invalid choice: 'csv'"),
    (["distill"], "the following arguments are required: SUBCOMMAND"),
    (["distill", "bake"], "unknown 'refinedweb distill' subcommand 'bake'; allowed: dump, train"),
    (["distill", "train"] + W, "needs --logits"),
    (["distill", "train"] + W + ["--logits", "no/such"], "does not exist"),
    (["distill", "dump", "--teacher", "no/such", "--out", "o"], "no checkpoint"),
    (["attention-mask", "--kind", "fancy", "--length", "64", "--out", "m.png"], "'fancy'"),
    (["attention-mask", "--kind", "local", "--length", "0", "--out", "m.png"], "length 0"),
    (["attention-mask", "--kind", "local", "--length", "64", "--out", "m.xyz"], "'xyz'"),
    # Once accepted and wrong (each refused since; the first five ran or trained before).
    (["train", "--workdir", ""], "--workdir is empty"),
    (["generate"] + W + ["--temperature", "nan", "--text", "x"], "--temperature must be a finite"),
    (["generate"] + W + ["--length-penalty", "nan", "--text", "x"], "--length-penalty must be a"),
    (["generate"] + W + ["--top-p", "inf", "--text", "x"], "--top-p must be a finite"),
    (TRAIN + ["--config.mixture.weights=nosuch=1", "--config.mixture.rate=explicit"],
     "config.mixture.weights names 'nosuch', not a task of config.mixture.tasks"),
    (["prepare", "--config.data.data_dir=/proc/self"], "config.data.data_dir '/proc/self' is not a"),
    (["eval"] + W + ["--input", "missing.tsv"], "--input 'missing.tsv': no such file"),
]


@pytest.mark.parametrize("argv, message", MISC, ids=[" ".join(a)[:60] for a, _ in MISC])
def test_odd_invocations_are_one_line_errors(argv, message, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  _assert_one_line_error(argv, message, capsys)


def test_workdir_problems_are_one_line_errors(tmp_path, capsys, tiny_data_dir):
  flags = [f"--config.data.data_dir={tiny_data_dir}", "--config.model.preset=tiny",
           "--config.data.vocab_size=600", "--config.data.num_train=400",
           "--config.data.num_validation=40", "--config.data.num_test=20"]
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  for workdir, message in ((str(a_file), "File exists"),
                           (str(a_file / "run"), "Not a directory"),
                           ("/proc/refinedweb-run", "No such file or directory")):
    assert cli.main(["train", "--workdir", workdir] + flags) in (1, 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
  """A bad value that passes validation would train for real: fail at once instead."""
  from refinedweb_jax.train import trainer

  def accepted(settled, workdir, command=None):
    raise AssertionError(f"accepted and started training in {workdir}")
  monkeypatch.setattr(trainer, "train", accepted)


def _assert_one_line_error(argv, message, capsys):
  code = cli.main(argv)
  err = capsys.readouterr().err
  assert code == 2, (argv, code, err)
  assert err.count("\n") == 1 and err.startswith("refinedweb: error: "), err
  assert message in err and "Traceback" not in err, err
