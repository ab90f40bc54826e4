"""Pictures of attention patterns: which (query, key) pairs may attend."""

import math
import os

import numpy as np

from refinedweb_jax.model.attention import kinds

MAX_LENGTH = 16384  # pattern() holds n x n bools (plus temporaries): ~16k is the sane limit
# Masks are max-pooled to at most this many rows and columns, a bit under the axes' size in
# pixels at _FIGSIZE and _DPI (~880): each pixel then shows whether any pair under it is
# allowed (resampling a larger image would drop or grey out one-token rows), and the image's
# memory stays bounded.
MAX_SIDE = 800
_FIGSIZE, _DPI = (7.0, 7.4), 150


def pattern_sizes() -> dict:
  """The size options that shape a pattern, by name (the attention-mask flags)."""
  return {name: size for name, size in kinds.SIZES.items() if size.pattern}


def build_mask(kind: str, length: int, causal: bool, sizes: dict) -> np.ndarray:
  """The bool [length, length] pattern of `kind` with `sizes` (AttentionConfig fields)."""
  kinds.check_kind(kind, "--kind")
  if not 1 <= length <= MAX_LENGTH:
    raise ValueError(f"length {length} out of range; allowed: 1..{MAX_LENGTH}")
  cfg = kinds.AttentionConfig(**sizes)
  if kind != "dense":
    kinds.check(kind, cfg, where="--")
    kinds.check_length(kind, cfg, length, where="--")
  return kinds.pattern(kind, cfg, length, causal)


def describe(kind: str, length: int, causal: bool, sizes: dict, density: float) -> str:
  """Plot title: kind, length, the sizes the kind reads, and the density."""
  parts = []
  for size in kinds.KINDS[kind].sizes if kind != "dense" else ():
    if not size.pattern or (size.name == "summary" and sizes["variant"] != "fixed"):
      continue  # only the fixed variant has summary columns
    value = sizes[size.name]
    parts.append(f"{size.name}={value}")
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
