"""Every config key, declared once (config_keys/): override -> validate -> help -> resume rule."""

import importlib.util
import re

import pytest

from refinedweb_jax import cli, config_keys, configs
from refinedweb_jax.config_keys.key import Key, Section, check_range
from refinedweb_jax.model.config import ModelConfig
from refinedweb_jax.train import resume


def _help_text(capsys) -> str:
  assert cli.main(["config", "--help"]) == 0
  return capsys.readouterr().out


def _candidates(key: Key) -> list:
  """Values of the key's type near its default (or its range's low end), in order."""
  default = key.value()
  if key.type is bool:
    return [not default]
  if key.choices:
    return list(key.choices)
  if key.example is not None:
    return [key.example]
  low = 0
  if key.interval:
    low = float(key.interval[1:-1].split(",")[0])
  base = low if default is None else default
  if key.type is int:
    return [int(base) * 2, int(base) + 1, int(base) - 1, int(low) + 1, 1, 2]
  return [base * 0.5, base + 0.5, low + 0.5]


def _valid_other(key: Key):
  """A value the key allows that differs from its default."""
  for value in _candidates(key):
    if value == key.value():
      continue
    try:
      key.check(value)
    except ValueError:
      continue
    return value
  raise AssertionError(f"no valid value other than the default found for {key.name}")


def _text(value) -> str:
  """How a value is spelled on the command line."""
  return str(value).lower() if isinstance(value, bool) else str(value)


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _check_resume_rule(dotted: str, config, resumable: bool):
  """Changing the key on resume is accepted (one change found) or refused naming the key."""
  saved = configs.to_dict(configs.default_config())
  old = resume.flat(saved)[dotted]
  if resumable:
    assert resume.changes(saved, config, "W") == [(dotted, old, _get(config, dotted))]
  else:
    with pytest.raises(ValueError, match=re.escape(f"{dotted}: run {old!r}, given ")):
      resume.changes(saved, config, "W")


@pytest.mark.parametrize("dotted", sorted(config_keys.KEYS))
def test_every_declared_key_walks_override_validate_help_and_resume(dotted, capsys):
  key = config_keys.KEYS[dotted]
  value = _valid_other(key)
  config = configs.default_config()
  if key.type is list:  # not spelled on the command line: an experiment file sets it
    configs.set_value(config, dotted, value)
  else:
    configs.apply_override(config, dotted, _text(value))
  assert _get(config, dotted) == value
  configs.validate(config)
  assert f"\n  {dotted}{'*' if key.resume else ''} = " in _help_text(capsys)
  _check_resume_rule(dotted, config, key.resume)


def _resolved(dotted: str):
  """A mirrored model field's value in the default preset."""
  value = ModelConfig.from_preset("mini")
  for part in dotted.split(".")[1:]:
    value = getattr(value, part)
  return value


def _other(value):
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value + 1
  return f"{value}x"


@pytest.mark.parametrize("dotted", sorted(config_keys.MIRRORED))
def test_every_mirrored_model_field_walks_override_validate_help_and_resume(dotted, capsys):
  field = config_keys.MIRRORED[dotted]
  may_change = bool(field.metadata.get("resumable"))
  config = configs.default_config()
  configs.apply_override(config, dotted, _text(_resolved(dotted)))
  configs.validate(config)
  assert re.search(rf"\b{re.escape(dotted)}{re.escape('*') if may_change else ''}(,|\n|$)",
                   _help_text(capsys))
  configs.set_value(config, dotted, _other(_resolved(dotted)))
  _check_resume_rule(dotted, config, may_change)


def test_the_declarations_cover_the_default_config_and_the_old_resume_rule():
  flat = resume.flat(configs.default_config())
  assert sorted(flat) == sorted({**config_keys.KEYS, **config_keys.MIRRORED})
  may_change = {k for k in flat if resume.resumable(k)}
  assert {"optimizer.name", "train.init_from", "model.preset", "model.scan_layers", "seed",
          "data.tokenizer", "model.attention.window"}.isdisjoint(may_change)
  assert {"optimizer.learning_rate", "train.num_steps", "model.dtype", "model.remat",
          "data.data_dir", "mixture.eval_tasks", "distill.alpha", "mesh.data"} <= may_change
  # Undeclared keys (another version's) follow their section's rule.
  assert resume.resumable("train.a_future_key") and not resume.resumable("data.a_future_key")
  assert resume.resumable("distill.top_k", also=("distill.",))


@pytest.mark.parametrize("dotted, value, message", [
    ("data.tokenizer", "sentencepiece", "unknown config.data.tokenizer 'sentencepiece'; "
     "allowed: builtin, mixture, auto or a SentencePiece model file (*.model)"),
    ("data.data_dir", " ", "config.data.data_dir is empty; give a folder (or gs:// path) for "
     "the prepared data, e.g. --config.data.data_dir=~/.cache/refinedweb_jax"),
    ("mesh.data", 0, "config.mesh.data must be a positive size or -1 (the remaining devices), "
     "got 0"),
    ("train.on_nonfinite", "ignore", "unknown config.train.on_nonfinite 'ignore'; allowed: "
     "halt, skip"),
    ("optimizer.name", "sgd", "unknown config.optimizer.name 'sgd'; allowed: adamw, adafactor"),
    ("train.num_steps", None, "config.train.num_steps must be an int, got None"),
    ("seed", -1, "config.seed must be in [0, 2147483647], got -1"),
])
def test_a_bad_value_is_one_line_naming_the_key_and_what_is_allowed(dotted, value, message):
  config = configs.default_config()
  configs.set_value(config, dotted, value)
  with pytest.raises(ValueError) as error:
    configs.validate(config)
  assert str(error.value) == message


@pytest.mark.parametrize("key, message", [
    (Key("steps", help="steps to run", allowed="(0, inf)"),
     "config key 'demo.steps' declares no default"),
    (Key("rate", 0.5, "a rate"), "config key 'demo.rate' is a number (float) declared without "
     "a range"),
    (Key("size", 3, "a size"), "config key 'demo.size' is a number (int) declared without "
     "a range"),
    (Key("size", None, "a size", "(0, inf)"), "config key 'demo.size' has the default None "
     "and no type="),
    (Key("size", 3, "a size", "[0, many)"), "config key 'demo.size' has the range '[0, many)'"),
    (Key("path", "", "a path"), "config key 'demo.path' is text without choices"),
    (Key("flag", True), "config key 'demo.flag' declares no help text"),
])
def test_a_key_declared_without_default_or_range_fails_naming_it(key, message):
  with pytest.raises(TypeError) as error:
    Section("demo", (key,))
  assert message in str(error.value)
  assert "\n" not in str(error.value)


def test_a_module_declaring_a_key_without_a_range_fails_at_import(tmp_path):
  path = tmp_path / "demo_keys.py"
  path.write_text("from refinedweb_jax.config_keys.key import Key, Section\n"
                  "DEMO = Section('demo', (Key('ok', True, 'a flag'),\n"
                  "                        Key('steps', 10, 'steps to run')))\n")
  spec = importlib.util.spec_from_file_location("demo_keys", path)
  with pytest.raises(TypeError, match=r"^config key 'demo\.steps' is a number \(int\) declared "
                     r"without a range; give allowed='\[0, inf\)' or the like$"):
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_a_key_declared_twice_fails_naming_it():
  with pytest.raises(TypeError, match="config keys demo.steps are declared twice"):
    Section("demo", (Key("steps", 1, "steps", "[0, inf)"), Key("steps", 2, "steps", "[0, inf)")))


def test_a_declared_key_becomes_a_config_key_with_its_default_range_and_rule(monkeypatch):
  """Adding a key is one Key in one table: default, validation, help and resume follow."""
  extra = Section("train", (Key("warmup_fraction", 0.1, "a new knob", "[0, 1]"),), resume=True)
  monkeypatch.setattr(config_keys, "SECTIONS", config_keys.SECTIONS + (extra,))
  monkeypatch.setattr(config_keys, "KEYS", {**config_keys.KEYS,
                                            "train.warmup_fraction": extra.keys[0]})
  config = configs.default_config()
  assert config.train.warmup_fraction == 0.1 and config.train.num_steps == 800
  configs.apply_override(config, "train.warmup_fraction", "1.5")
  with pytest.raises(ValueError, match=re.escape("config.train.warmup_fraction must be in "
                                                 "[0, 1], got 1.5")):
    configs.validate(config)
  assert "  train.warmup_fraction* = 0.1  (float in [0, 1])" in config_keys.help_lines()
  assert resume.resumable("train.warmup_fraction")


def test_check_range_names_the_key_and_the_interval():
  with pytest.raises(ValueError, match=re.escape("config.loss.z_loss must be >= 0, got -1")):
    check_range("loss.z_loss", -1, "[0, inf)")
