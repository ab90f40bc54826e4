"""Multi-task learning: 8 built-in tasks in 4 languages, temperature-scaled mixing.

  refinedweb train --workdir runs/multitask --config experiments/train_small_multitask.py
      the `small` model, 200 steps, about 11 minutes on 2 CPU cores; each eval prints a
      per-task table (loss, accuracy, perplexity, BLEU/chrF, ROUGE, SQuAD EM/F1, pass@1).
  ... --config experiments/train_small_multitask.py:smoke   the `tiny` model, 20 steps.

Tasks: en->de, en->fr, en->zh and zh->en translation, summarization, extractive QA,
code generation and chat. Rates r ∝ min(n, K)^(1/T) with K = 5,000 and T = 2 (T5's
temperature mixing), so the small translation directions are sampled more than their
share of the corpus.
"""

from refinedweb_jax import configs

TASKS = ("translate_en_de", "translate_en_fr", "translate_en_zh", "translate_zh_en",
         "summarize", "qa", "code", "chat")


def get_config(arg: str = ""):
  config = configs.default_config()
  config.model.preset = "small"
  config.mixture.update(dict(tasks=",".join(TASKS), rate="temperature", temperature=2.0,
                             cap=5000))
  config.train.update(dict(num_steps=200, eval_every=100, checkpoint_every=100,
                           eval_examples=32, decode_examples_per_task=16))
  if arg == "smoke":
    config.model.preset = "tiny"
    config.data.update(dict(num_train=2000, num_validation=200, num_test=200, vocab_size=1000,
                            input_length=64, target_length=32, batch_size=8))
    config.train.update(dict(num_steps=20, eval_every=10, checkpoint_every=10, eval_examples=8,
                             decode_examples_per_task=4, max_decode_length=16))
  elif arg:
    raise ValueError(f"unknown argument {arg!r} for {__file__}; allowed: '' or 'smoke'")
  return config
