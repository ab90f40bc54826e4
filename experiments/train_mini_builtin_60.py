"""`mini` on the 12 built-in translation directions: >= 60% exact match on every number, date, time.

  refinedweb train --workdir runs/mini60 --config experiments/train_mini_builtin_60.py
      800 steps, 9.9 minutes on 2 CPU cores (docs/performance.md, Main job quality).
  refinedweb train --workdir runs/mini60_curve --config experiments/train_mini_builtin_60.py:curve
      1600 steps with every 200th checkpoint kept, for main_job_quality.py --checkpoints all.

The 12 translation directions at equal rates, from a 100,000-example corpus; inputs of 128
tokens (a packed row holds ~5 translations either way, so 256 was mostly padding).
"""

from refinedweb_jax import configs
from refinedweb_jax.data import tasks

STEPS = 800


def get_config(arg: str = ""):
  config = configs.default_config()
  config.data.update(dict(num_train=100_000, input_length=128, target_length=64))
  config.mixture.update(dict(tasks=",".join(tasks.TRANSLATION_TASKS), rate="explicit",
                             weights=",".join(f"{t}=1" for t in tasks.TRANSLATION_TASKS)))
  config.train.update(dict(num_steps=STEPS, eval_every=STEPS))
  if arg == "curve":
    config.train.update(dict(num_steps=1600, eval_every=1600, checkpoint_every=200,
                             keep_checkpoints=8))
  elif arg:
    raise ValueError(f"unknown argument {arg!r} for {__file__}; allowed: '' or 'curve'")
  return config
