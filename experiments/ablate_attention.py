"""Ablation: dense vs sparse encoder attention on long-input QA and summarization.

  refinedweb sweep --config experiments/ablate_attention.py --workdir runs/ablate_attention
      5 arms x 3 seeds of a 2.3M-parameter model (128 wide, 3 + 3 layers), 100 steps of 4
      rows on qa + summarize with 1,024-token inputs (half the examples long: contexts
      of 1k-8k words, cut at 1,024 tokens). Full run: measured 26 minutes on 2 CPU cores
      (2026-12-01); the table is in docs/ablations.md.
  refinedweb sweep --config experiments/ablate_attention.py:smoke --workdir runs/ablate_smoke
      the `tiny` model, 256-token inputs, 6 steps, 1 seed: the pipeline end to end
      (about 1 minute on 2 CPU cores).
  refinedweb sweep report runs/ablate_attention     # results.md, results.csv, plots

Arms (model.encoder_attention; everything else is the same: model, steps, data, seeds):
dense (the baseline), local (window 128), strided (period 128), bigbird (3 window + 1
global + 1 random block of 64) and global_local (window 128 + the first 64 positions
global). Each sparse kind lets a query see a few hundred keys, not 1,024.
Quality: eval loss, QA F1 / exact match, ROUGE-L; cost: step time, tokens/s, memory.
The decoder stays dense: its 64-token targets fit inside every kind's window, where a
sparse kind computes exactly dense attention. Scale up by overrides on the sweep's
command line, e.g. --config.data.input_length=8192 --config.train.num_steps=2000
--config.model.d_model=768 --config.model.num_heads=12 --config.model.head_dim=64.
"""

from refinedweb_jax import configs, sweep

KINDS = ("dense", "local", "strided", "bigbird", "global_local")


def get_config(arg: str = ""):
  config = configs.default_config()
  config.model.preset = "small"
  config.mixture.tasks = "qa,summarize"
  config.model.attention.update(dict(block_size=64, window=128, stride=128, summary=8,
                                     window_blocks=3, global_blocks=1, random_blocks=1,
                                     global_positions="0-63"))
  config.data.update(dict(num_train=2000, num_validation=100, num_test=100, long_fraction=0.5,
                          input_length=1024, target_length=64, batch_size=4, vocab_size=4000))
  config.train.update(dict(num_steps=100, log_every=10, eval_every=50, checkpoint_every=50,
                           eval_examples=32, eval_batch_size=8, decode_examples_per_task=16,
                           max_decode_length=48, progress_bar=False))
  if arg == "smoke":
    config.model.preset = "tiny"
    config.model.attention.update(dict(block_size=16, window=32, stride=32, summary=4,
                                       global_positions="0-15"))
    config.data.update(dict(num_train=200, num_validation=20, num_test=20, long_fraction=0.2,
                            input_length=256, target_length=32, batch_size=4, vocab_size=600))
    config.train.update(dict(num_steps=6, log_every=2, eval_every=6, checkpoint_every=6,
                             eval_examples=8, decode_examples_per_task=2, max_decode_length=8,
                             progress_bar=False))
  elif not arg:
    # A narrow model (128 wide, 3 + 3 layers) so that 1,024-token inputs train for 100
    # steps per run on 2 CPU cores; attention is then a large share of the cost.
    config.model.update(dict(d_model=128, num_heads=4, head_dim=32, d_ff=512,
                             num_encoder_layers=3, num_decoder_layers=3))
  else:
    raise ValueError(f"unknown argument {arg!r} for {__file__}; allowed: '' or 'smoke'")
  return config


def get_sweep(arg: str = ""):
  arms = sweep.axis("model.encoder_attention", KINDS, name="")
  return sweep.Sweep(arms=arms, baseline="dense", seeds=1 if arg == "smoke" else 3,
                     metrics=("eval/loss", "eval/qa/f1", "eval/qa/exact_match",
                              "eval/summarize/rougeL"))
