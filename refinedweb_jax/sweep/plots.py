"""The report's PNGs: eval curves per arm, main metrics as bars, cost against quality.

Figures are drawn on their own Agg canvas (not pyplot): no global state, no GUI backend.
"""

import math
import os

import numpy as np

MAX_PANELS = 9


def _figure(panels: int, width: float = 4.2, height: float = 3.2):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  cols = min(panels, 3)
  rows = math.ceil(panels / cols)
  fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
  FigureCanvasAgg(fig)
  return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(panels)]


def _save(fig, workdir: str, name: str):
  from etils import epath
  target = epath.Path(os.path.join(workdir, name))
  with target.open("wb") as f:
    fig.savefig(f, format="png", dpi=90)


def curves(workdir: str, results: list, main: list, arms: list):
  """curves.png: each main metric over steps, per arm the mean over seeds and a min-max band."""
  fig, axes = _figure(min(len(main), MAX_PANELS))
  for ax, metric in zip(axes, main):
    for arm in arms:
      runs = [dict(r["curves"].get(metric, [])) for r in results
              if r["arm"] == arm and r["status"] == "done"]
      runs = [c for c in runs if c]
      if not runs:
        continue
      steps = sorted(set.intersection(*(set(c) for c in runs)))
      values = np.asarray([[c[s] for s in steps] for c in runs], float)
      (line,) = ax.plot(steps, values.mean(0), marker="o", markersize=3, label=arm)
      if len(runs) > 1:
        ax.fill_between(steps, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    ax.set_title(metric, fontsize=9)
    ax.set_xlabel("step")
  if axes and axes[0].get_legend_handles_labels()[0]:
    axes[0].legend(fontsize=7)
  _save(fig, workdir, "curves.png")


def bars(workdir: str, agg: dict, main: list, arms: list, baseline: str):
  """bars.png: each main metric's mean per arm with its 95% interval (none for n < 2)."""
  fig, axes = _figure(min(len(main), MAX_PANELS))
  x = np.arange(len(arms))
  for ax, metric in zip(axes, main):
    cells = [agg[a]["cells"].get(metric, (np.nan,) * 4) for a in arms]
    means = np.asarray([c[0] for c in cells], float)
    halves = np.nan_to_num(np.asarray([c[1] for c in cells], float))
    colors = ["tab:orange" if a == baseline else "tab:blue" for a in arms]
    ax.bar(x, np.nan_to_num(means), yerr=halves, color=colors, capsize=3)
    ax.set_xticks(x, arms, rotation=30, ha="right", fontsize=7)
    ax.set_title(metric, fontsize=9)
  _save(fig, workdir, "bars.png")


def cost_quality(workdir: str, agg: dict, main: list, arms: list):
  """cost_quality.png: step time against each main metric, one panel each."""
  fig, axes = _figure(min(len(main), MAX_PANELS))
  for ax, quality in zip(axes, main):
    for arm in arms:
      cells = agg[arm]["cells"]
      cost, quality_cell = cells.get("cost/seconds_per_step"), cells.get(quality)
      if not cost or not quality_cell or np.isnan(cost[0]) or np.isnan(quality_cell[0]):
        continue
      ax.errorbar(cost[0], quality_cell[0], xerr=np.nan_to_num(cost[1]),
                  yerr=np.nan_to_num(quality_cell[1]), fmt="o", capsize=3)
      ax.annotate(arm, (cost[0], quality_cell[0]), fontsize=7, xytext=(4, 4),
                  textcoords="offset points")
    ax.set_xlabel("seconds per train step")
    ax.set_title(quality, fontsize=9)
  _save(fig, workdir, "cost_quality.png")


def write_plots(workdir: str, results: list, agg: dict, main: list, baseline: str, arms: list):
  curves(workdir, results, main, arms)
  bars(workdir, agg, main, arms, baseline)
  cost_quality(workdir, agg, main, arms)
