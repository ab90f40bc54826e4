"""The sweep's report: results.csv, results.md and plots, from sweep.json and each run's logs.

Per run: the final evaluation row of metrics.jsonl (every eval/... metric, plus
eval/score, the mean over tasks of each one's main metric: translation chrF, summarize
ROUGE-L, qa F1, code pass@1, chat chrF) and the costs (step time and tokens/s: medians
over the train rows after the first, which holds the compilation; compiled peak memory:
train/compiled_peak_gib where the loop logs it; host peak RSS; parameters: from the
trainer's printed description). Per arm: the mean over its finished seeds with a 95%
Student-t interval, and the difference to the baseline arm with Welch's unpaired 95%
interval, "n.s." where that interval holds 0. Failed, unfinished and missing runs are
listed, never dropped in silence.
"""

import csv
import io
import math
import os
import statistics

from refinedweb_jax.data.tasks import main_metric
from refinedweb_jax.sweep import stats, workdirs

COSTS = ("cost/seconds_per_step", "cost/tokens_per_second", "cost/compiled_peak_gib",
         "cost/host_peak_rss_gib", "cost/params")
COST_NAMES = {"cost/seconds_per_step": "s/step", "cost/tokens_per_second": "tokens/s",
              "cost/compiled_peak_gib": "compiled peak GiB",
              "cost/host_peak_rss_gib": "host peak RSS GiB", "cost/params": "params"}
NAN = float("nan")


def run_result(workdir: str, entry: dict) -> dict:
  """One run's status, final metrics, eval curves and costs."""
  run_dir = os.path.join(workdir, entry["arm"], f"seed_{entry['seed']}")
  result = dict(name=entry["name"], arm=entry["arm"], seed=entry["seed"], metrics={},
                curves={}, error=None)
  steps = workdirs.checkpoint_steps(run_dir)
  error = workdirs.path(run_dir, workdirs.ERROR)
  if workdirs.finished(run_dir, entry["num_steps"]):
    result["status"] = "done"
  elif error.exists():
    result["status"], result["error"] = "failed", error_line(error.read_text(encoding="utf-8"))
  elif workdirs.path(run_dir).exists():
    result["status"] = (f"incomplete (step {steps[-1] if steps else 0} of "
                        f"{entry['num_steps']})")
  else:
    result["status"] = "missing (not run)"
  rows = workdirs.read_rows(run_dir)
  evals = [r for r in rows if r.get("split") == "eval"]
  for row in evals:
    score = task_score(row)
    if score is not None:
      row["eval/score"] = score
  if evals:
    result["metrics"] = {k: v for k, v in evals[-1].items() if k not in ("step", "split")}
  for row in evals:
    for key, value in row.items():
      if key not in ("step", "split"):
        result["curves"].setdefault(key, []).append((row["step"], value))
  result["metrics"].update(_costs(run_dir, rows))
  return result


def task_score(row: dict) -> float | None:
  """eval/score: the mean over the row's tasks of each one's main metric (None: no task has one)."""
  values = []
  for key, value in row.items():
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "eval" and main_metric(parts[1]) == parts[2]:
      values.append(value)
  return sum(values) / len(values) if values else None


def error_line(text: str) -> str:
  """'exit status N: <the error>' from sweep_error.txt (status, command, then stderr lines)."""
  lines = text.splitlines()
  body = [ln.strip() for ln in lines[2:] if ln.strip()]
  said = [ln for ln in body if ln.startswith("refinedweb: error")]
  return f"{lines[0] if lines else 'failed'}: {(said or body or ['(no output)'])[-1]}"


def _costs(run_dir: str, rows: list) -> dict:
  train = [r for r in rows if r.get("split") == "train"]
  timed = train[1:] if len(train) > 1 else train  # the first interval holds the compilation
  values = lambda key, rows: [r[key] for r in rows if _finite(r.get(key))]
  speed = [v for v in values("train/steps_per_second", timed) if v > 0]
  tokens = values("train/tokens_per_second", timed)
  compiled = values("train/compiled_peak_gib", rows)
  rss = values("train/host_peak_rss_gib", train)
  done = workdirs.read_json(workdirs.path(run_dir, workdirs.DONE)) or {}
  params = done.get("params")
  log = workdirs.path(run_dir, workdirs.LOG)
  if params is None and log.exists():
    params = workdirs.params_from_log(log.read_text(encoding="utf-8"))
  return {"cost/seconds_per_step": 1.0 / statistics.median(speed) if speed else NAN,
          "cost/tokens_per_second": statistics.median(tokens) if tokens else NAN,
          "cost/compiled_peak_gib": compiled[0] if compiled else NAN,
          "cost/host_peak_rss_gib": max(rss) if rss else NAN,
          "cost/params": float(params) if params is not None else NAN}


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def aggregate(results: list, arm_names: list, baseline: str) -> dict:
  """arm -> {n (finished runs), total, cells: metric -> (mean, half, diff, diff_half)}."""
  done = [r for r in results if r["status"] == "done"]
  values = {a: {} for a in arm_names}
  for r in done:
    for key, value in r["metrics"].items():
      values[r["arm"]].setdefault(key, []).append(value)
  out = {}
  for arm in arm_names:
    cells = {}
    for key, vals in values[arm].items():
      mean, half, _ = stats.mean_ci(vals)
      diff, diff_half = NAN, NAN
      if arm != baseline and key in values[baseline]:
        diff, diff_half, _ = stats.welch_diff(vals, values[baseline][key])
      cells[key] = (mean, half, diff, diff_half)
    out[arm] = dict(n=sum(r["arm"] == arm for r in done),
                    total=sum(r["arm"] == arm for r in results), cells=cells)
  return out


def main_metrics(sweep: dict, results: list) -> list:
  """The sweep's named metrics; else eval/loss, eval/score and (up to 4 tasks) each task's
  main metric."""
  if sweep.get("metrics"):
    return list(sweep["metrics"])
  keys = {k for r in results for k in r["metrics"]}
  tasks = sorted({k.split("/")[1] for k in keys if k.startswith("eval/") and k.count("/") == 2})
  found = [f"eval/{t}/{main_metric(t)}" for t in tasks if f"eval/{t}/{main_metric(t)}" in keys]
  return ["eval/loss"] + (["eval/score"] if found else []) + (found if len(found) <= 4 else [])


def fmt(x: float, digits: int = 4) -> str:
  if x != x:
    return "nan"
  if abs(x) >= 10 ** digits:
    return f"{x:,.0f}"
  return f"{x:.{digits}g}"


def _cell(cells: dict, key: str) -> str:
  if key not in cells or cells[key][0] != cells[key][0]:
    return "—"
  mean, half = cells[key][:2]
  return f"{fmt(mean)} ± {fmt(half, 2)}"


def _diff_cell(cells: dict, key: str, is_baseline: bool) -> str:
  if is_baseline:
    return "(baseline)"
  if key not in cells or cells[key][2] != cells[key][2]:
    return "—"
  diff, half = cells[key][2:]
  mark = {False: " n.s.", True: "", None: ""}[stats.significant(diff, half)]
  return f"{diff:+.3g} ± {fmt(half, 2)}{mark}"


def _cost_cell(cells: dict, key: str) -> str:
  if key not in cells or cells[key][0] != cells[key][0]:
    return "—"
  if key == "cost/params":
    return f"{cells[key][0] / 1e6:.3g}M"
  if key in ("cost/seconds_per_step", "cost/tokens_per_second"):
    return _cell(cells, key)
  return f"{cells[key][0]:.3g}"


def markdown(sweep: dict, workdir: str, results: list, agg: dict, main: list) -> str:
  """results.md: the arm table, then failed and missing runs, then the plots."""
  baseline, arms = sweep["baseline"], [a["name"] for a in sweep["arms"] if a.get("report", True)]
  lines = [f"# Sweep `{workdir}`", "",
           f"Config `{sweep['config']}`; baseline **{baseline}**; seeds "
           f"{', '.join(map(str, sweep['seeds']))}. A cell is the mean over an arm's finished "
           "seeds ± the half-width of its 95% Student-t interval; Δ is the difference to the "
           "baseline ± the half-width of Welch's unpaired 95% interval (Welch–Satterthwaite "
           "df), *n.s.* where that interval contains 0; *nan*: fewer than 2 seeds; n: finished "
           "seeds (of all).", ""]
  head = ["arm", "n"] + [c for m in main for c in (m, f"Δ {m}")] + [COST_NAMES[c] for c in COSTS]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for arm in arms:
    cells = agg[arm]["cells"]
    n, total = agg[arm]["n"], agg[arm]["total"]
    row = [f"**{arm}**" if arm == baseline else arm, str(n) if n == total else f"{n}/{total}"]
    for m in main:
      row += [_cell(cells, m), _diff_cell(cells, m, arm == baseline)]
    row += [_cost_cell(cells, c) for c in COSTS]
    lines.append("| " + " | ".join(row) + " |")
  failed = [r for r in results if r["status"] == "failed"]
  missing = [r for r in results if r["status"] not in ("done", "failed")]
  if failed:
    lines += ["", "## Failed runs", ""] + [f"- `{r['name']}`: {r['error']}" for r in failed]
  if missing:
    lines += ["", "## Missing runs", ""] + [f"- `{r['name']}`: {r['status']}" for r in missing]
  lines += ["", "## Plots", "", "![eval curves](curves.png)", "", "![main metrics](bars.png)",
            "", "![cost vs quality](cost_quality.png)", ""]
  return "\n".join(lines)


def csv_text(results: list, agg: dict) -> str:
  """results.csv: one row per run, then one per arm (mean, ci95, diff, diff_ci95)."""
  keys = sorted({k for r in results for k in r["metrics"] if not k.startswith("cost/")})
  keys += list(COSTS)
  header = ["row", "arm", "seed", "status", "n"]
  for k in keys:
    header += [k, f"{k}:ci95", f"{k}:diff", f"{k}:diff_ci95"]
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(header)
  for r in results:
    row = ["run", r["arm"], r["seed"], r["status"], ""]
    for k in keys:
      row += [r["metrics"].get(k, ""), "", "", ""]
    writer.writerow(row)
  for arm, a in agg.items():
    row = ["arm", arm, "", "", a["n"]]
    for k in keys:
      row += list(a["cells"].get(k, ("", "", "", "")))
    writer.writerow(row)
  return buffer.getvalue()


def write_report(workdir: str) -> str:
  """Writes results.csv, results.md and the plots into workdir; returns results.md's path."""
  sweep = workdirs.read_sweep(workdir)
  results = [run_result(workdir, e) for e in sweep["runs"] if e.get("report", True)]
  arms = [a["name"] for a in sweep["arms"] if a.get("report", True)]
  agg = aggregate(results, arms, sweep["baseline"])
  main = main_metrics(sweep, results)
  workdirs.path(workdir, "results.csv").write_text(csv_text(results, agg), encoding="utf-8")
  from refinedweb_jax.sweep import plots
  plots.write_plots(workdir, results, agg, main, sweep["baseline"], arms)
  target = workdirs.path(workdir, "results.md")
  target.write_text(markdown(sweep, workdir, results, agg, main), encoding="utf-8")
  return str(target)
