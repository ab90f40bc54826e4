"""The `small` model (19.6M) on the built-in corpus: the default job before the `mini` preset.

  refinedweb train --workdir runs/small --config experiments/train_small_builtin.py
      200 steps, about 10 minutes on 2 CPU cores; validation loss falls from ~10 to below 2
      (the default `mini` job learns the built-in translations far better in that time:
      docs/performance.md, Main job quality).
  refinedweb train --workdir runs/smoke --config experiments/train_small_builtin.py:smoke
      the `tiny` model on a small corpus, under a minute: checks the whole pipeline.
"""

from refinedweb_jax import configs


def get_config(arg: str = ""):
  config = configs.default_config()
  config.model.preset = "small"
  config.train.update(dict(num_steps=200, log_every=10, eval_every=100, checkpoint_every=100))
  if arg == "smoke":
    config.model.preset = "tiny"
    config.data.update(dict(num_train=1000, num_validation=100, num_test=100, vocab_size=1000,
                            input_length=64, target_length=32, batch_size=8))
    config.train.update(dict(num_steps=20, eval_every=10, checkpoint_every=10, eval_examples=32,
                             max_decode_length=16))
  elif arg:
    raise ValueError(f"unknown argument {arg!r} for {__file__}; allowed: '' or 'smoke'")
  return config
