"""The model: its config, layers, attention kinds, the encoder-decoder and decoding."""
