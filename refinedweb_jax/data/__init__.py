"""Data: the built-in corpus, TFDS datasets, tasks and mixtures, the tokenizer, the Grain pipeline."""
