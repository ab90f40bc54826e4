"""Teacher vs distilled students on the built-in corpus: trains, dumps, distills, prints a table.

  python experiments/distill_table.py [--smoke] [--root runs/distill] [--examples N] [--online]
                                      [--steps N] [--eval-only]

Runs (each step is the printed `refinedweb` command; re-running resumes or skips
finished steps): the teacher, its logit dump (with teacher outputs), the student from
scratch, the KD students (alpha 0 / 0.5 x T 1 / 2), the sequence-level KD student and,
with --online, the online-teacher student; then evaluates each on the validation split
(the whole split, or `--examples` decoded examples per task) and prints markdown tables:
score = mean over tasks of each task's main metric (translation chrF, summarization
ROUGE-L, QA F1, code pass@1, chat chrF), retention = student score / teacher score. See
experiments/distill_small_builtin.py for the configs and run times.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distill_small_builtin.py")
KD_ROLES = ("kd_a0_t1", "kd_a0_t2", "kd_a05_t1", "kd_a05_t2")
MAIN_METRIC = {"summarize": "rougeL", "qa": "f1", "code": "pass@1", "chat": "chrf"}


def refinedweb(*args):
  """Runs one `refinedweb` command, echoing it; fails the table if the command fails."""
  print("$ refinedweb " + " ".join(args), flush=True)
  start = time.time()
  subprocess.run([sys.executable, "-m", "refinedweb_jax.cli", *args], check=True)
  print(f"  ({time.time() - start:.0f} s)", flush=True)


def main_metric(task: str) -> str:
  return "chrf" if task.startswith("translate_") else MAIN_METRIC[task]


def decode_speed(model, inputs, batch_size: int = 32) -> float:
  """Greedy-decoded tokens (up to EOS) per second over these inputs, after one warm-up batch."""
  import jax
  from refinedweb_jax.model import decode
  tok, d = model.tokenizer, model.config.data
  settings = decode.Decoding(max_new_tokens=model.config.train.max_decode_length)
  decode_fn = decode.make_decode_fn(model.model, settings, eos_id=tok.eos_id)
  greedy = lambda params, rows: decode_fn(params, rows, jax.random.key(0))
  batches = []
  for start in range(0, len(inputs), batch_size):
    rows = np.zeros((batch_size, d.input_length), np.int32)
    for i, text in enumerate(inputs[start: start + batch_size]):
      ids = tok.encode(text)[: d.input_length - 1] + [tok.eos_id]
      rows[i, : len(ids)] = ids
    batches.append(rows)
  jax.block_until_ready(greedy(model.params, batches[0]))
  tokens, start = 0, time.time()
  for rows in batches:
    out = np.asarray(jax.device_get(greedy(model.params, rows)))
    ended = (out == tok.eos_id).any(1)
    tokens += int(np.where(ended, (out == tok.eos_id).argmax(1) + 1, out.shape[1]).sum())
  return tokens / (time.time() - start)


def evaluate(workdir: str, examples: int, speed_inputs: int) -> dict:
  """Validation metrics, parameter count and greedy decoding speed of a run's checkpoint
  (examples -1: the whole split, for the loss as well as the decoded metrics)."""
  from refinedweb_jax import api
  from refinedweb_jax.model.transformer import count_params
  model = api.RefinedWeb.load(workdir)
  metrics = model.evaluate("validation", decode_examples=examples,
                           eval_examples=-1 if examples == -1 else None)
  from refinedweb_jax.train import setup
  source = setup.builtin_source(model.config, "validation")
  inputs = [source[i]["inputs"] for i in range(min(speed_inputs, len(source)))]
  return {"metrics": metrics, "params": count_params(model.params),
          "decode_tokens_per_second": decode_speed(model, inputs)}


def tables(results: dict) -> str:
  """Markdown: a summary table by task family and a per-task table."""
  teacher = results["teacher"]
  tasks = sorted({k.split("/")[1] for k in teacher["metrics"] if k.count("/") == 2})

  def scores(r):
    return {t: r["metrics"].get(f"eval/{t}/{main_metric(t)}", float("nan")) for t in tasks}

  def score(r):
    return float(np.mean(list(scores(r).values())))

  def retention(r):
    # An untrained (smoke) teacher scores 0: no ratio then.
    return f"{score(r) / score(teacher):.2f}" if score(teacher) > 0 else "-"

  families = {"translate (chrF)": [t for t in tasks if t.startswith("translate_")],
              **{f"{t} ({MAIN_METRIC[t]})": [t] for t in MAIN_METRIC if t in tasks}}
  head = ("| model | params | score | " + " | ".join(families) +
          " | eval loss | decode tok/s | retention |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for name, r in results.items():
    s = scores(r)
    cells = [f"{np.mean([s[t] for t in members]):.1f}" for members in families.values()]
    lines.append(f"| {name} | {r['params'] / 1e6:.2f}M | {score(r):.1f} | " + " | ".join(cells)
                 + f" | {r['metrics']['eval/loss']:.3f} | {r['decode_tokens_per_second']:.0f}"
                 + f" | {retention(r)} |")
  lines += ["", "| model | " + " | ".join(f"{t} {main_metric(t)}" for t in tasks) + " |",
            "|" + "---|" * (len(tasks) + 1)]
  for name, r in results.items():
    lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in scores(r).values()) + " |")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--smoke", action="store_true", help="tiny models on a small corpus")
  p.add_argument("--root", default=None, help="runs directory (default runs/distill[_smoke])")
  p.add_argument("--examples", type=int, default=None,
                 help="decoded validation examples per task, -1 = the whole split (default -1; "
                 "smoke 4)")
  p.add_argument("--online", action="store_true", help="add the online-teacher student")
  p.add_argument("--steps", type=int, default=None,
                 help="train.num_steps for the teacher and every student (default: the config's)")
  p.add_argument("--eval-only", action="store_true",
                 help="only evaluate the finished runs under --root (e.g. with more --examples)")
  args = p.parse_args()
  suffix = ",smoke" if args.smoke else ""
  root = args.root or ("runs/distill_smoke" if args.smoke else "runs/distill")
  examples = args.examples or (4 if args.smoke else -1)
  steps = [f"--config.train.num_steps={args.steps}"] if args.steps else []
  cfg = lambda role: f"--config={CONFIG}:{role}{suffix}"
  w = lambda role: os.path.join(root, role)
  start = time.time()
  students = ["scratch", *KD_ROLES, "seqkd"] + (["online_a05_t1"] if args.online else [])
  if not args.eval_only:
    refinedweb("train", "--workdir", w("teacher"), cfg("teacher"), *steps)
    refinedweb("distill", "dump", "--teacher", w("teacher"), "--out", w("logits"),
               "--sequence-kd", cfg("kd_a05_t1"))
    refinedweb("train", "--workdir", w("scratch"), cfg("scratch"), *steps)
    for role in KD_ROLES + ("seqkd",):
      refinedweb("distill", "train", "--logits", w("logits"), "--workdir", w(role), cfg(role),
                 *steps)
    if args.online:
      refinedweb("distill", "train", "--teacher", w("teacher"), "--workdir",
                 w("online_a05_t1"), cfg("online_a05_t1"), *steps)
  results = {}
  for role in ["teacher"] + students:
    print(f"evaluating {role} ...", flush=True)
    results[role] = evaluate(w(role), examples, speed_inputs=64 if args.smoke else 256)
  name = ("results.json" if args.examples is None else
          f"results_{'all' if examples == -1 else examples}.json")
  with open(os.path.join(root, name), "w") as f:
    json.dump(results, f, indent=1)
  print(f"\n{tables(results)}\n\nall steps: {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
  main()
