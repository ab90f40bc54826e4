"""Pictures of attention patterns: which (query, key) pairs may attend."""

import dataclasses
import math
import os
import re

import numpy as np

from refinedweb_jax.model.attention.sparse import SPARSE_KINDS, SparseSpec, pattern

KINDS = ("dense",) + SPARSE_KINDS
MAX_LENGTH = 16384  # pattern() holds n x n bools (plus temporaries): ~16k is the sane limit
# Masks are max-pooled to at most this many rows and columns, a bit under the axes' size in
# pixels at _FIGSIZE and _DPI (~880): each pixel then shows whether any pair under it is
# allowed (resampling a larger image would drop or grey out one-token rows), and the image's
# memory stays bounded.
MAX_SIDE = 800
_FIGSIZE, _DPI = (7.0, 7.4), 150
# The SparseSpec sizes each kind reads; the others are left out of the title.
_SIZES_BY_KIND = {
    "dense": (),
    "local": ("window",),
    "strided": ("variant", "stride", "summary", "block_size"),
    "bigbird": ("block_size", "num_global_blocks", "num_window_blocks", "num_random_blocks",
                "seed"),
    "global_local": ("window", "global_positions"),
}
_SHORT = {"block_size": "block", "num_global_blocks": "global", "num_window_blocks": "window",
          "num_random_blocks": "random", "global_positions": "global"}


def spec_defaults() -> dict:
  """SparseSpec's default sizes by field name (the command line's defaults)."""
  return {f.name: f.default for f in dataclasses.fields(SparseSpec)
          if f.name not in ("kind", "query_chunk")}


def build_mask(kind: str, length: int, causal: bool, sizes: dict) -> np.ndarray:
  """The bool [length, length] pattern of `kind` ("dense" or a sparse kind) with `sizes`."""
  if kind not in KINDS:
    raise ValueError(f"unknown attention kind {kind!r}; allowed: {', '.join(KINDS)}")
  if not 1 <= length <= MAX_LENGTH:
    raise ValueError(f"length {length} out of range; allowed: 1..{MAX_LENGTH}")
  if kind == "dense":
    mask = np.ones((length, length), bool)
    return np.tril(mask) if causal else mask
  if kind == "strided" and sizes["block_size"] > 0 and sizes["stride"] % sizes["block_size"]:
    b = sizes["block_size"]
    raise ValueError(f"stride {sizes['stride']} must be a multiple of the block size {b} "
                     f"for strided attention; allowed: {b}, {2 * b}, {3 * b}, ...")
  spec = SparseSpec(kind, **sizes)
  bad = [p for p in spec.global_positions if p >= length] if kind == "global_local" else []
  if bad:
    # Named here as ranges: a long list of out-of-range positions would not fit one line.
    raise ValueError(f"global positions {format_positions(bad)} out of range for length "
                     f"{length}; allowed: 0..{length - 1}")
  return pattern(spec, length, causal)


def parse_positions(text: str) -> tuple:
  """"0-3,9" -> (0, 1, 2, 3, 9): comma-separated positions or inclusive ranges."""
  positions = []
  for item in text.split(","):
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item, re.ASCII)
    first, last = (int(match[1]), int(match[2] or match[1])) if match else (0, -1)
    # The bound keeps a typo like 0-99999999 from building a huge tuple.
    if not match or last < first or last >= MAX_LENGTH:
      raise ValueError(f"bad global positions {text!r}; allowed: comma-separated ints or "
                       f"ranges like 0-15, within 0..{MAX_LENGTH - 1}")
    positions.extend(range(first, last + 1))
  return tuple(positions)


def format_positions(positions) -> str:
  """(0, 1, 2, 3, 9) -> "0-3,9": the inverse of the command line's --global-positions."""
  runs, ps = [], sorted(set(positions))
  for p in ps:
    if runs and p == runs[-1][1] + 1:
      runs[-1][1] = p
    else:
      runs.append([p, p])
  return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def describe(kind: str, length: int, causal: bool, sizes: dict, density: float) -> str:
  """Plot title: kind, length, the sizes the kind reads, and the density."""
  parts = []
  for name in _SIZES_BY_KIND[kind]:
    if name == "summary" and sizes["variant"] != "fixed":
      continue  # only the fixed variant has summary columns
    value = sizes[name]
    shown = format_positions(value) if name == "global_positions" else value
    parts.append(f"{_SHORT.get(name, name)}={shown}")
  head = f"{kind} attention, length {length}" + (", causal" if causal else "")
  tail = " ".join(parts) + (", " if parts else "") + f"density {density:.4f}"
  return f"{head}\n{tail}"


def downsample(mask: np.ndarray, max_side: int = MAX_SIDE):
  """Block max-pools `mask` to at most max_side per side: (pooled, factor)."""
  n, m = mask.shape
  factor = max(1, math.ceil(max(n, m) / max_side))
  if factor == 1:
    return mask, 1
  rows, cols = -(-n // factor), -(-m // factor)
  if (n, m) != (rows * factor, cols * factor):
    mask = np.pad(mask, ((0, rows * factor - n), (0, cols * factor - m)))
  # A pooled pixel is dark if any pair it covers is allowed, so thin structure stays visible.
  return mask.reshape(rows, factor, cols, factor).any(axis=(1, 3)), factor


def check_output(path: str):
  """Raises unless `path` can be written: its directory exists and its format is known."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  if os.path.isdir(path):
    raise ValueError(f"--out {path!r} is a directory; give a file path like {path}/mask.png")
  directory = os.path.dirname(path) or "."
  if not os.path.isdir(directory):
    raise ValueError(f"output directory {directory!r} of --out {path!r} does not exist; "
                     "allowed: a path in an existing directory")
  if not os.access(directory, os.W_OK):
    raise ValueError(f"output directory {directory!r} of --out {path!r} is not writable; "
                     "allowed: a path in a writable directory")
  formats = sorted(FigureCanvasAgg.get_supported_filetypes())
  suffix = os.path.splitext(path)[1].lstrip(".").lower()
  if suffix not in formats:
    raise ValueError(f"unsupported --out format {suffix or '(none)'!r} of {path!r}; allowed: "
                     f"{', '.join('.' + f for f in formats)}")


def draw_pattern(mask: np.ndarray, path: str, title: str):
  """Draws bool `mask` [queries, keys] to `path` (allowed pairs dark), max-pooled if large."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  n, m = mask.shape
  pooled, factor = downsample(mask)
  if factor > 1:
    title += f"\nshown max-pooled {factor}x{factor}: a pixel is dark if any pair in it is allowed"
  # A Figure on its own Agg canvas, not pyplot: no global figure state, no GUI backend.
  fig = Figure(figsize=_FIGSIZE, dpi=_DPI)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  # Extent keeps the axes in token positions when pooled; the image has no more rows than
  # the axes have pixels, so nearest only enlarges it and drops nothing.
  ax.imshow(pooled.astype(np.uint8), cmap="Greys", vmin=0, vmax=1, extent=(0, m, n, 0),
            interpolation="nearest")
  ax.set_xlabel("key position")
  ax.set_ylabel("query position")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path)


def plot_pattern(path: str, kind: str, length: int, causal: bool, sizes: dict) -> float:
  """Draws the pattern of `kind` to `path`; returns its density (fraction of allowed pairs)."""
  check_output(path)
  mask = build_mask(kind, length, causal, sizes)
  density = float(mask.mean())
  draw_pattern(mask, path, describe(kind, length, causal, sizes, density))
  return density
