"""Ablation: each task trained alone vs in mixtures (proportional, temperature T=2, equal).

  refinedweb sweep --config experiments/ablate_multitask.py --workdir runs/ablate_multitask
      a 2.8M-parameter model (128 wide, 3 + 3 layers), batch 8; 4 single-task arms of 50
      steps and 3 mixture arms of 200 steps, 3 seeds each. Full run: measured 22.6
      minutes on 2 CPU cores (2026-12-01); the table is in docs/ablations.md.
  refinedweb sweep --config experiments/ablate_multitask.py:smoke --workdir runs/mt_smoke
      the `tiny` model, 2 tasks, a few steps, 1 seed: the pipeline end to end (about 1
      minute on 2 CPU cores).

Tasks: translate_en_de, translate_de_fr, summarize and qa. Arms: only_<task> trains on
that task alone for S steps; the mixtures train on all K tasks for K * S steps, so the
same number of examples is seen in all: `equal` (explicit weights 1, the baseline) sees
every task exactly as often as its single-task arm, `proportional` (r ∝ n) and
`temperature` (r ∝ n^(1/2)) spend the same total on the tasks in other shares. Packing
is off so that a batch row is one example and "examples seen" means what it says. The
report's Δ column for a single-task arm on its own task is "alone vs equal mixture".

Every arm is evaluated on all the tasks plus translate_en_fr, a direction no arm trains
on (config.mixture.eval_tasks): English inputs and French targets are each seen, in
en->de and de->fr, but never together. Its chrF shows whether mixing transfers.
"""

from refinedweb_jax import configs, sweep
from refinedweb_jax.data.tasks import main_metric

TASKS = ("translate_en_de", "translate_de_fr", "summarize", "qa")
SMOKE_TASKS = ("translate_en_de", "qa")
HELD_OUT = "translate_en_fr"  # evaluated, never trained


def _setup(arg: str):
  """(tasks, steps per single-task arm) of the full or smoke version."""
  if arg == "smoke":
    return SMOKE_TASKS, 4
  if arg:
    raise ValueError(f"unknown argument {arg!r} for {__file__}; allowed: '' or 'smoke'")
  return TASKS, 50


def get_config(arg: str = ""):
  tasks, steps = _setup(arg)
  config = configs.default_config()
  config.model.preset = "small"
  config.mixture.update(dict(tasks=",".join(tasks), rate="explicit",
                             weights=",".join(f"{t}=1" for t in tasks),
                             eval_tasks=",".join(tasks + (HELD_OUT,))))
  config.data.update(dict(pack=False, input_length=256, target_length=64, batch_size=8))
  config.train.update(dict(num_steps=len(tasks) * steps, log_every=10,
                           eval_every=len(tasks) * steps, checkpoint_every=100,
                           eval_examples=64, decode_examples_per_task=16,
                           max_decode_length=48, progress_bar=False))
  # A narrow model (128 wide, 3 + 3 layers): 21 runs fit in well under an hour on 2 cores.
  config.model.update(dict(d_model=128, num_heads=4, head_dim=32, d_ff=512,
                           num_encoder_layers=3, num_decoder_layers=3))
  if arg == "smoke":
    config.model.preset = "tiny"
    config.model.update({k: None for k in ("d_model", "num_heads", "head_dim", "d_ff",
                                           "num_encoder_layers", "num_decoder_layers")})
    config.data.update(dict(num_train=400, num_validation=40, num_test=20, vocab_size=600,
                            input_length=64, target_length=32, batch_size=8))
    config.train.update(dict(log_every=2, checkpoint_every=8, eval_examples=16,
                             eval_batch_size=8, decode_examples_per_task=2,
                             max_decode_length=8, progress_bar=False))
  return config


def get_sweep(arg: str = ""):
  tasks, steps = _setup(arg)
  single = [sweep.Arm(f"only_{t}", {"mixture.tasks": t, "mixture.weights": f"{t}=1",
                                    "train.num_steps": steps, "train.eval_every": steps})
            for t in tasks]
  mixtures = [sweep.Arm("equal"),
              sweep.Arm("proportional", {"mixture.rate": "proportional"}),
              sweep.Arm("temperature", {"mixture.rate": "temperature",
                                        "mixture.temperature": 2.0})]
  metrics = tuple(f"eval/{t}/{main_metric(t)}" for t in tasks + (HELD_OUT,))
  return sweep.Sweep(arms=mixtures + single, baseline="equal",
                     seeds=1 if arg == "smoke" else 3, seed_keys=("seed", "data.shuffle_seed"),
                     metrics=metrics)
