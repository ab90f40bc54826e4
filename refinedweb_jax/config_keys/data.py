"""The data stage's keys: the built-in corpus, the tokenizer, the input pipeline and the mixture."""

import os

from refinedweb_jax.config_keys.key import INT_MAX, Key, Section
from refinedweb_jax.data import tasks, tokenizer


def _tokenizer(value: str, key: str):
  """builtin, mixture, auto or a SentencePiece model file (*.model)."""
  trained = tokenizer.TRAINED + ("auto",)
  if value not in trained and not str(value).endswith(".model"):
    raise ValueError(f"unknown {key} {value!r}; allowed: {', '.join(trained)} or a "
                     "SentencePiece model file (*.model)")


def _folder(value: str, key: str):
  """A folder, not empty."""
  if not str(value).strip():
    raise ValueError(f"{key} is empty; give a folder (or gs:// path) for the prepared data, "
                     f"e.g. --{key}=~/.cache/refinedweb_jax")


DATA = Section("data", (
    Key("data_dir", lambda: os.environ.get("REFINEDWEB_DATA",
                                           os.path.expanduser("~/.cache/refinedweb_jax")),
        "the prepared data and tokenizers (a folder or gs:// path; default $REFINEDWEB_DATA)",
        _folder, resume=True, example="/mnt/data/refinedweb"),
    Key("num_train", 20_000, "examples in the built-in corpus's train split", "(0, inf)"),
    Key("num_validation", 1_000, "examples in its validation split", "(0, inf)"),
    Key("num_test", 1_000, "examples in its test split", "(0, inf)"),
    Key("corpus_seed", 0, "the seed the built-in corpus is generated from", f"[0, {INT_MAX}]"),
    Key("long_fraction", 0.02, "the built-in corpus's share of long documents", "[0, 1]"),
    Key("vocab_size", None, "pieces of a trained tokenizer (unset: the model preset's, or as "
        "many as the training text holds when that is fewer)", "(0, inf)", type=int),
    Key("input_length", 256, "encoder tokens per example (longer inputs are cut)", "(0, inf)"),
    Key("target_length", 64, "decoder tokens per example (longer targets are cut)", "(0, inf)"),
    Key("pack", True, "pack several examples into each row of the batch"),
    Key("batch_size", 16, "rows per step, over all processes", "(0, inf)"),
    Key("shuffle_seed", 0, "the seed of the order the examples are read in", f"[0, {INT_MAX}]"),
    Key("workers", 0, "threads that read, tokenize and pack this process's rows (0: by "
        "platform, a few on CPU, more on accelerators)", "[0, 256]", resume=True),
    Key("prefetch", 0, "batches built ahead (0: by platform)", "[0, 1024]", resume=True),
    Key("tokenizer", "auto", "the tokenizer: trained on the built-in corpus (builtin) or on the "
        "mixture's train texts (mixture), or a SentencePiece file (path/spiece.model); auto: "
        "builtin when the mixture has a built-in task, else mixture", _tokenizer,
        example="mixture"),
    Key("public_data_dir", lambda: os.path.expanduser("~/tensorflow_datasets"),
        "where public TFDS datasets are prepared as array_record (a folder or gs:// bucket)",
        resume=True, example="/mnt/data/tensorflow_datasets"),
))

# Which tasks to train on and how often each is sampled (tasks.mixture_rates).
MIXTURE = Section("mixture", (
    Key("tasks", "", "comma-separated task names to train on ('' = every built-in task)",
        example="translate_en_de,summarize"),
    Key("rate", "proportional", f"how often each task is sampled: {', '.join(tasks.RATES)} "
        "(tasks.mixture_rates checks it)", example="temperature"),
    Key("cap", 0, "T5's K: a task counts at most this many examples (0 = no cap)", "[0, inf)"),
    Key("temperature", 1.0, "with rate=temperature: rates ~ size ** (1 / temperature)",
        "(0, inf)"),
    Key("weights", "", "with rate=explicit: 'task=weight,...' for the tasks of mixture.tasks",
        example="translate_en_de=2"),
    Key("eval_tasks", "", "comma-separated tasks evaluated ('' = the trained ones), e.g. a "
        "translation direction never trained", resume=True, example="translate_de_en"),
))

# Tasks beyond the built-in ones: your own files and public TFDS datasets.
TASKS = Section("", (
    Key("own_tasks", [], "tasks from your own files: dicts of datasets.own_data.build "
        "arguments plus optional metrics (tasks.METRICS) and language (of the targets), set in "
        "an experiment file", example=[dict(task="my_task", format="text")]),
    Key("public_tasks", "", "public TFDS datasets by name (datasets.public.PUBLIC), prepared "
        "in data.public_data_dir", example="wmt14_en_de"),
))
