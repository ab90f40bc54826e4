"""Fine-tune an imported T5 (T5, T5 v1.1, Flan-T5, mT5) on Multi30k en->de, sparse encoder.

  huggingface-cli download google/flan-t5-small --local-dir ~/models/flan-t5-small  # network
  refinedweb import-hf ~/models/flan-t5-small --workdir runs/flan_t5_small
  refinedweb train --workdir runs/ft_multi30k --config experiments/finetune_t5_multi30k.py \\
      --config.train.init_from=runs/flan_t5_small
  refinedweb eval --workdir runs/ft_multi30k --split test --examples -1

The model section, the parameters and the tokenizer come from train.init_from (the
imported run); this file sets only what fine-tuning changes: the encoder's attention
is `local` (a 64-token window either side, LongT5's local attention; T5's relative
bias is added on the blocked kernel), dropout 0.1, AdamW at a constant
1e-4 after a short warm-up, T5's "translate English to German: " prefix. Multi30k is
read from the public data folder (`refinedweb fetch multi30k`; docs/multitask.md, Public
datasets). Captions are short, so the window covers most inputs; for long inputs raise
data.input_length and keep the window. `:smoke` runs 4 steps on a few examples (tests use
it on a tiny random import).
"""

import importlib.util
import os

_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_small_multi30k.py")
_spec = importlib.util.spec_from_file_location("train_small_multi30k", _path)
multi30k = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(multi30k)


def get_config(arg: str = ""):
  if arg not in ("", "smoke"):
    raise ValueError(f"unknown argument {arg!r} for {__file__}; allowed: '' or 'smoke'")
  from refinedweb_jax import configs
  config = configs.default_config()
  config.own_tasks = [multi30k.multi30k_task("de", "German")]
  config.mixture.tasks = "multi30k_en_de"
  config.model.update(dict(encoder_attention="local", dropout_rate=0.1))
  config.model.attention.update(dict(window=64, block_size=64))
  config.data.update(dict(input_length=128, target_length=64, batch_size=32))
  config.optimizer.update(dict(learning_rate=1e-4, schedule="constant", warmup_steps=100,
                               weight_decay=0.0))
  config.train.update(dict(num_steps=3000, log_every=50, eval_every=1000, checkpoint_every=500,
                           eval_examples=64, decode_examples_per_task=64,
                           max_decode_length=64))
  if arg == "smoke":
    config.model.attention.update(dict(window=16, block_size=16))
    config.data.update(dict(input_length=64, target_length=32, batch_size=4))
    config.optimizer.update(dict(learning_rate=3e-3, warmup_steps=1))
    config.train.update(dict(num_steps=4, log_every=2, eval_every=4, checkpoint_every=4,
                             eval_examples=8, decode_examples_per_task=2, max_decode_length=8,
                             progress_bar=False))
  return config
