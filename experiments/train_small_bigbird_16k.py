"""The `small` model with a BigBird encoder on 16,384-token built-in-corpus inputs.

  refinedweb train --workdir runs/bigbird16k --config experiments/train_small_bigbird_16k.py
      30 steps on 2 CPU cores in about 10 minutes; metrics.jsonl reports train/tokens_per_second
      and train/host_peak_rss_gib.
  ... --config experiments/train_small_bigbird_16k.py:dense
      the same with a dense encoder: its N x N scores (6 heads x 16k x 16k floats per layer,
      kept for the backward pass) need far more memory than the machine has.
  ... :smoke   a 10-step, 4,096-token version for a quick check.

Inputs are long QA and summarization examples (long_fraction=1), packed into rows of
16,384 tokens, so every step really attends over 16k positions.
"""

from refinedweb_jax import configs


def get_config(arg: str = ""):
  config = configs.default_config()
  config.model.preset = "small"
  config.model.encoder_attention = "bigbird"
  config.model.attention.update(dict(block_size=64, window_blocks=3, global_blocks=1,
                                     random_blocks=3))
  config.data.update(dict(num_train=400, num_validation=20, num_test=20, long_fraction=1.0,
                          input_length=16384, target_length=64,
                          batch_size=1, vocab_size=2000))
  config.mixture.tasks = "qa,summarize"
  config.train.update(dict(num_steps=30, log_every=5, eval_every=30, checkpoint_every=30,
                           eval_examples=4, eval_batch_size=1, decode_examples_per_task=2,
                           max_decode_length=32))
  if arg == "dense":
    config.model.encoder_attention = "dense"
  elif arg == "smoke":
    config.data.input_length = 4096
    config.train.update(dict(num_steps=10, eval_every=10, checkpoint_every=10))
  elif arg:
    raise ValueError(f"unknown argument {arg!r} for {__file__}; allowed: '', 'dense', 'smoke'")
  return config
