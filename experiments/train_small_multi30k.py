"""The `small` model on Multi30k en->de and en->fr, through the own-data path.

  refinedweb train --workdir runs/multi30k --config experiments/train_small_multi30k.py
  refinedweb eval --workdir runs/multi30k --split test --examples -1
      sacreBLEU / chrF on test_2016_flickr (1,000 sentences per direction).

Reads multi30k/ (aligned, gzipped caption files) from the public data folder by path
(docs/multitask.md, Public datasets: `refinedweb fetch multi30k` downloads it;
REFINEDWEB_SHARED_DATA names the folder). The tokenizer is trained on the two tasks' training
texts. `:smoke` runs 20 steps of the tiny model.
"""

from refinedweb_jax import configs
from refinedweb_jax.data import fetch


def multi30k_task(target: str, language_name: str) -> dict:
  """An own-data task: aligned English -> `target` caption files, train/val/test_2016_flickr."""
  root = fetch.require("multi30k")
  pair = lambda split: [(f"{root}/{split}.en.gz", f"{root}/{split}.{target}.gz")]
  return dict(task=f"multi30k_en_{target}", format="text", train=pair("train"),
              validation=pair("val"), test=pair("test_2016_flickr"),
              prefix=f"translate English to {language_name}: ", metrics=["bleu", "chrf"],
              language=target)


def get_config(arg: str = ""):
  config = configs.default_config()
  config.model.preset = "small"
  config.own_tasks = [multi30k_task("de", "German"), multi30k_task("fr", "French")]
  config.mixture.tasks = "multi30k_en_de,multi30k_en_fr"
  config.data.update(dict(tokenizer="mixture", vocab_size=8000, input_length=64,
                          target_length=64, batch_size=48))
  config.optimizer.update(dict(learning_rate=2e-3, warmup_steps=100))
  config.train.update(dict(num_steps=600, log_every=20, eval_every=600, checkpoint_every=100,
                           eval_examples=64, decode_examples_per_task=64))
  if arg == "smoke":
    config.model.preset = "tiny"
    config.data.update(dict(vocab_size=1000, batch_size=8))
    config.train.update(dict(num_steps=20, eval_every=10, checkpoint_every=10, eval_examples=8,
                             decode_examples_per_task=4, max_decode_length=16))
  elif arg:
    raise ValueError(f"unknown argument {arg!r} for {__file__}; allowed: '' or 'smoke'")
  return config
