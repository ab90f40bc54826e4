"""Data: the built-in corpus, TFDS datasets, tasks and mixtures, tokenizer, Grain pipeline."""
