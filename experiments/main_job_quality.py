"""Exact match per translation direction and kind (number, date, time, ...) of a trained run.

  python experiments/main_job_quality.py --workdir runs/demo
  python experiments/main_job_quality.py --workdir runs/demo --checkpoints all --out q.json

The built-in validation split is regenerated past its stored size (example i depends on
its index only, so its first `data.num_validation` examples are the stored split) until
every (direction, kind) group holds --examples translations. Each is decoded greedily and
scored by exact string match. With --checkpoints all, every kept checkpoint gives one
point of the exact-match-against-minutes curve; minutes are the run's time in train steps
(compilation included, evaluation excluded) up to that checkpoint, from metrics.jsonl.
The last lines say PASS or FAIL for the target: >= 60% exact match on every number,
date and time direction, and the README's example right.
"""

import argparse
import json
import os
import sys

import numpy as np

from refinedweb_jax import api
from refinedweb_jax.data import corpus, tasks
from refinedweb_jax.evaluate import metrics
from refinedweb_jax.train import logger, resume

TARGET = 0.6
TARGET_KINDS = ("number", "date", "time")
EXAMPLE = ("translate English to German: 42", "zweiundvierzig")


def validation_groups(config, kinds, per_group: int, limit: int = 10**7) -> dict:
  """{(direction, kind): [(inputs, targets), ...]}: the first examples of each group in the
  run's validation split, generated lazily until every group is full."""
  d = config.data
  groups = {(t, k): [] for t in tasks.TRANSLATION_TASKS for k in sorted(kinds)}
  missing = len(groups)
  for ex in corpus.generate_split("validation", limit, d.corpus_seed,
                                  long_fraction=d.long_fraction):
    group = groups.get((ex["task"], ex["kind"]))
    if group is not None and len(group) < per_group:
      group.append((ex["inputs"], ex["targets"]))
      missing -= len(group) == per_group
      if not missing:
        return groups
  raise ValueError(f"the first {limit} validation examples hold fewer than {per_group} of "
                   "some direction and kind")


def minutes_by_step(workdir: str) -> dict:
  """{step: minutes of train steps up to it} from metrics.jsonl's train rows."""
  seconds, previous, out = 0.0, 0, {}
  rows = logger.read_rows(os.path.join(workdir, "metrics.jsonl"), "train")
  for row in sorted(rows, key=lambda r: r["step"]):
    if row["step"] > previous and row.get("train/steps_per_second"):
      seconds += (row["step"] - previous) / row["train/steps_per_second"]
      previous = row["step"]
    out[row["step"]] = seconds / 60
  return out


def score(model: api.RefinedWeb, groups: dict, batch_size: int) -> tuple[dict, str]:
  """({(direction, kind): exact match}, the README example's output)."""
  keys = list(groups)
  prompts = [p for key in keys for p, _ in groups[key]] + [EXAMPLE[0]]
  outputs = model.generate(prompts, batch_size=batch_size)
  result, at = {}, 0
  for key in keys:
    pairs = groups[key]
    got = outputs[at: at + len(pairs)]
    result[key] = metrics.exact_match([t for _, t in pairs], got)["exact_match"] / 100
    at += len(pairs)
  return result, outputs[-1]


def table(result: dict, kinds) -> str:
  lines = ["| direction | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
  for direction in tasks.TRANSLATION_TASKS:
    cells = [f"{100 * result[(direction, k)]:.0f}" for k in kinds]
    lines.append(f"| {direction.removeprefix('translate_')} | " + " | ".join(cells) + " |")
  means = [f"{100 * np.mean([result[(t, k)] for t in tasks.TRANSLATION_TASKS]):.0f}"
           for k in kinds]
  lines.append("| mean | " + " | ".join(means) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--examples", type=int, default=32, help="per direction and kind")
  parser.add_argument("--kinds", default=",".join(corpus.TRANSLATION_KINDS))
  parser.add_argument("--checkpoints", choices=("last", "all"), default="last")
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--out", help="write the results here as JSON")
  args = parser.parse_args(argv)
  kinds = tuple(args.kinds.split(","))
  unknown = set(kinds) - set(corpus.TRANSLATION_KINDS)
  if unknown:
    parser.error(f"unknown --kinds {sorted(unknown)}; allowed: "
                 f"{', '.join(corpus.TRANSLATION_KINDS)}")
  workdir, ckpt_dir, _ = resume.locate(args.workdir)
  steps = sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit())
  if not steps:
    parser.error(f"no checkpoint under {ckpt_dir}")
  if args.checkpoints == "last":
    steps = steps[-1:]
  minutes = minutes_by_step(workdir)
  groups = validation_groups(resume.saved_config(workdir), kinds, args.examples)
  points = []
  for step in steps:
    model = api.RefinedWeb.load(os.path.join(ckpt_dir, str(step)))
    result, example = score(model, groups, args.batch_size)
    worst = min((result[(t, k)] for t in tasks.TRANSLATION_TASKS for k in kinds
                 if k in TARGET_KINDS), default=0.0)
    points.append(dict(step=step, minutes=minutes.get(step), example=example, worst=worst,
                       exact_match={f"{t}/{k}": v for (t, k), v in result.items()}))
    print(f"\n## step {step} ({points[-1]['minutes'] or 0:.1f} min of steps), "
          f"{args.examples} examples per cell, exact match %\n")
    print(table(result, kinds))
    print(f"\n{EXAMPLE[0]!r} -> {example!r}", flush=True)
  if len(points) > 1:
    print("\n| step | minutes | " + " | ".join(f"mean {k}" for k in kinds) + " | worst n/d/t |")
    print("|---" * (len(kinds) + 3) + "|")
    for p in points:
      means = [np.mean([p["exact_match"][f"{t}/{k}"] for t in tasks.TRANSLATION_TASKS])
               for k in kinds]
      print(f"| {p['step']} | {p['minutes'] or 0:.1f} | "
            + " | ".join(f"{100 * m:.0f}" for m in means) + f" | {100 * p['worst']:.0f} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(workdir=workdir, examples=args.examples, points=points), f, indent=1)
  last = points[-1]
  met = [k for k in kinds if k in TARGET_KINDS]
  print(f"\n{'PASS' if last['worst'] >= TARGET else 'FAIL'}: every {'/'.join(met)} direction "
        f">= {100 * TARGET:.0f}% exact match (worst {100 * last['worst']:.0f}%)")
  print(f"{'PASS' if last['example'] == EXAMPLE[1] else 'FAIL'}: {EXAMPLE[0]!r} -> "
        f"{EXAMPLE[1]!r} (got {last['example']!r})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
