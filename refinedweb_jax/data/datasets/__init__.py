"""TFDS datasets. Import submodules directly (e.g. `datasets.builtin`) so that
importing this package does not pull in TFDS."""
