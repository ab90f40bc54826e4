"""TFDS datasets. Import submodules directly (e.g. `datasets.builtin`) so that
importing this package does not pull in TFDS."""


def iterate_in_batches(source, size: int = 1024):
  """Every record of a random-access source, read `size` at a time through __getitems__
  (batched ArrayRecord reads are about twice as fast as one record at a time)."""
  n = len(source)
  for start in range(0, n, size):
    yield from source.__getitems__(list(range(start, min(start + size, n))))
