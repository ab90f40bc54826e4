"""Conversions between this model and other formats (Hugging Face T5)."""
