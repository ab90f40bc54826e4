"""Config validation: out-of-range values are errors that name the key and the allowed range."""

import pytest

from refinedweb_jax import configs


@pytest.mark.parametrize("key, value, message", [
    ("loss.label_smoothing", 1.0, "config.loss.label_smoothing must be in [0, 1), got 1.0"),
    ("loss.label_smoothing", -0.1, "config.loss.label_smoothing must be in [0, 1), got -0.1"),
    ("loss.label_smoothing", 5.0, "config.loss.label_smoothing must be in [0, 1), got 5.0"),
    ("loss.z_loss", -1e-4, "config.loss.z_loss must be >= 0"),
    ("optimizer.learning_rate", 0.0, "config.optimizer.learning_rate must be > 0"),
    ("optimizer.learning_rate", -1e-3, "config.optimizer.learning_rate must be > 0"),
    ("optimizer.warmup_steps", -1, "config.optimizer.warmup_steps must be >= 0"),
    ("optimizer.b1", 1.0, "config.optimizer.b1 must be in [0, 1)"),
    ("optimizer.b2", -0.5, "config.optimizer.b2 must be in [0, 1)"),
    ("optimizer.weight_decay", -0.01, "config.optimizer.weight_decay must be >= 0"),
    ("optimizer.grad_clip_norm", -1.0, "config.optimizer.grad_clip_norm must be >= 0"),
])
def test_out_of_range_values_are_config_errors(key, value, message):
  config = configs.default_config()
  configs.set_value(config, key, value)
  with pytest.raises(ValueError) as error:
    configs.validate(config)
  assert message in str(error.value)


def test_the_default_config_is_valid():
  configs.validate(configs.default_config())
