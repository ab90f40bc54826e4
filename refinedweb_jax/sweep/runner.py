"""Runs a sweep's arms one after another, each seed a `refinedweb` subprocess in its own workdir.

Each run is the command `--dry-run` prints, so a crash stays in its run and any run can be
repeated by hand. A finished run is skipped; an interrupted one is started again with the
same command and resumes from its checkpoint by itself. A failed run leaves
sweep_error.txt and the sweep goes on; the exit status is 1 if any run failed or could
not start (its prerequisite is not finished). SIGINT / SIGTERM are passed to the run,
which saves and stops; the sweep then stops too. Runs start in their own session and
get SIGTERM should the sweep die (Linux), so a killed sweep leaves a saved checkpoint;
the next sweep waits for such a run to exit before it touches the run's workdir.
With --shard, a run whose prerequisite (Arm.after) fell to another shard is blocked
until that shard has finished it: run it there first, then this shard again.
"""

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from refinedweb_jax.sweep import arms as arms_lib, workdirs

ERROR_LINES = 30


def plan(spec: str, workdir: str, *, arms: str | None = None, shard: str | None = None,
         common: dict | None = None):
  """(sweep.json contents, the selected runs as dicts): every arm checked before any runs.

  common: {key: value text} overrides for every run (the command line's --config.key=VALUE),
  applied before each arm's own.
  """
  config, sweep = arms_lib.load(spec)
  where = spec.partition(":")[0]
  common = dict(common or {})
  from refinedweb_jax import configs
  for key, value in common.items():
    configs.apply_override(config, key, value)
  names = [a.name for a in sweep.arms]
  all_runs = arms_lib.runs(sweep)
  picked = {r.name for r in arms_lib.select(all_runs, arms, shard, names)}
  entries = []
  for run in all_runs:
    arm_config = arms_lib.arm_config(config, run, where)
    run_dir = os.path.join(workdir, run.arm.name, f"seed_{run.seed}")
    fill = dict(run=run_dir, root=workdir, seed=run.seed)
    argv = [*run.arm.command, *(f.format(**fill) for f in run.arm.flags), "--config", spec,
            *(f"--config.{k}={v}" for k, v in common.items()),
            *(f"--config.{k}={arms_lib.as_text(v)}" for k, v in run.overrides.items())]
    entries.append(dict(name=run.name, arm=run.arm.name, seed=run.seed, dir=run_dir,
                        overrides=run.overrides, argv=argv, report=run.arm.report,
                        num_steps=arm_config.train.num_steps if run.arm.trains else None,
                        after=[f"{a}/seed_{run.seed}" for a in run.arm.after],
                        picked=run.name in picked))
  info = dict(config=spec, workdir=workdir, overrides=common, baseline=sweep.baseline,
              seeds=sweep.seed_list,
              seed_keys=list(sweep.seed_keys), metrics=list(sweep.metrics),
              arms=[dict(name=a.name, overrides=a.overrides, command=list(a.command),
                         flags=list(a.flags), after=list(a.after), report=a.report)
                    for a in sweep.arms],
              runs=[{k: v for k, v in e.items() if k != "picked"} for e in entries])
  return info, [e for e in entries if e["picked"]]


def display(argv) -> str:
  return shlex.join(["refinedweb", *argv])


def run_sweep(spec: str, workdir: str, *, arms: str | None = None, shard: str | None = None,
              dry_run: bool = False, common: dict | None = None, out=print) -> int:
  """Runs (or with dry_run prints) the selected runs, then writes the report; the exit status."""
  info, runs = plan(spec, workdir, arms=arms, shard=shard, common=common)
  if dry_run:
    for r in runs:
      done = workdirs.finished(r["dir"], r["num_steps"])
      out(f"{r['name']}{'  [finished]' if done else ''}\n  overrides: "
          + (" ".join(f"{k}={arms_lib.as_text(v)}" for k, v in r["overrides"].items())
             or "(none)") + f"\n  {display(r['argv'])}")
    return 0
  workdirs.write_json(workdirs.path(workdir, workdirs.SWEEP), info)
  by_name = {r["name"]: r for r in info["runs"]}
  problems, status = [], 0
  for i, r in enumerate(runs):
    out(f"[{i + 1}/{len(runs)}] {r['name']}: {display(r['argv'])}")
    waiting = [a for a in r["after"]
               if not workdirs.finished(by_name[a]["dir"], by_name[a]["num_steps"])]
    if waiting:
      problems.append(f"{r['name']} (waits for {', '.join(waiting)})")
      out(f"  blocked: {', '.join(waiting)} is not finished; run it first (or rerun this shard "
          "after the one that has it)")
      continue
    result = run_one(r, out)
    if result.startswith("stopped"):
      out(f"sweep {result} in {r['name']}; run the same command to resume")
      status = 130 if "SIGINT" in result else 143
      break
    if result == "failed":
      problems.append(r["name"])
  from refinedweb_jax.sweep import report
  out(f"report: {report.write_report(workdir)}")
  if problems and not status:
    out(f"{len(problems)} of {len(runs)} runs did not finish: {', '.join(problems)}")
    status = 1
  return status


def run_one(r: dict, out=print) -> str:
  """Runs one run unless finished: 'done', 'failed' or 'stopped[ by SIGNAL]' (it saved)."""
  run_dir = r["dir"]
  _wait_for_other(run_dir, out)
  if workdirs.finished(run_dir, r["num_steps"]):
    out("  finished already: skipped")
    if not workdirs.path(run_dir, workdirs.DONE).exists():
      _mark_done(r, seconds=None, log_text="")
    return "done"
  workdirs.path(run_dir).mkdir(parents=True, exist_ok=True)
  start = time.time()
  code, stopped, stdout, stderr = _execute(r)
  error = workdirs.path(run_dir, workdirs.ERROR)
  if stopped:
    return f"stopped by {stopped}"
  if code == 0 and (r["num_steps"] is None or workdirs.finished(run_dir, r["num_steps"])):
    if error.exists():
      error.unlink()
    _mark_done(r, seconds=time.time() - start, log_text=stdout)
    out(f"  done in {time.time() - start:.0f} s")
    return "done"
  if code == 0:  # a preemption notice or a signal from elsewhere: it saved and stopped
    return "stopped"
  tail = "\n".join(stderr.splitlines()[-ERROR_LINES:])
  error.write_text(f"exit status {code}\ncommand: {display(r['argv'])}\n{tail}\n",
                   encoding="utf-8")
  out(f"  FAILED (exit status {code}); see {error}")
  return "failed"


def _wait_for_other(run_dir: str, out):
  """Waits while another process on this host trains the run (a sweep killed a moment ago)."""
  lock = workdirs.read_json(workdirs.path(run_dir, workdirs.LOCK))
  if not lock or lock.get("host") != socket.gethostname():
    return
  if workdirs.pid_alive(lock["pid"], run_dir):
    out(f"  waiting for pid {lock['pid']}, which still runs it, to exit")
    while workdirs.pid_alive(lock["pid"], run_dir):
      time.sleep(0.5)


def _execute(r: dict):
  """Runs the command (output to files, echoed here); (exit status, stop signal, stdout, stderr)."""
  run_dir = r["dir"]
  remote = "://" in run_dir
  log_dir = tempfile.mkdtemp(prefix="sweep_log_") if remote else run_dir
  paths = [os.path.join(log_dir, workdirs.LOG), os.path.join(log_dir, "sweep_stderr.txt")]
  files = [open(p, "w", encoding="utf-8") for p in paths]
  command = [sys.executable, "-m", "refinedweb_jax.cli", *r["argv"]]
  proc = subprocess.Popen(command, stdout=files[0], stderr=files[1], start_new_session=True,
                          preexec_fn=_die_with_parent)
  for f in files:
    f.close()
  workdirs.write_json(workdirs.path(run_dir, workdirs.LOCK),
                      dict(host=socket.gethostname(), pid=proc.pid))
  stopped = []

  def forward(signum, frame):
    del frame
    stopped.append(signal.Signals(signum).name)
    proc.send_signal(signum)  # a second one makes the run exit at once, as at its terminal

  main = threading.current_thread() is threading.main_thread()
  previous = {}
  if main:  # signal handlers can only be set in the main thread
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  done = threading.Event()
  echo = [threading.Thread(target=_follow, args=(p, stream, done), daemon=True)
          for p, stream in zip(paths, (sys.stdout, sys.stderr))]
  for t in echo:
    t.start()
  try:
    code = proc.wait()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    done.set()
    for t in echo:
      t.join()
  texts = []
  for p in paths:
    with open(p, encoding="utf-8", errors="replace") as f:
      texts.append(f.read())
  if remote:
    for p, text in zip(paths, texts):
      workdirs.path(run_dir, os.path.basename(p)).write_text(text, encoding="utf-8")
  workdirs.path(run_dir, workdirs.LOCK).unlink(missing_ok=True)
  return code, (stopped[0] if stopped else None), texts[0], texts[1]


def _follow(path: str, stream, done: threading.Event):
  """Copies what a run writes to `path` onto `stream` until `done` and the end of the file."""
  with open(path, encoding="utf-8", errors="replace") as f:
    while True:
      chunk = f.read()
      if chunk:
        stream.write(chunk)
        stream.flush()
      elif done.is_set():
        return
      else:
        time.sleep(0.2)


try:  # resolved here, not in the forked child, where loading a library is not safe
  _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (AttributeError, OSError):
  _PRCTL = None


def _die_with_parent():
  """In the child before exec: SIGTERM when the sweep dies (PR_SET_PDEATHSIG), so it saves."""
  if _PRCTL is not None:
    _PRCTL(1, signal.SIGTERM)


def _mark_done(r: dict, *, seconds, log_text: str):
  """sweep_done.json (command, seconds, parameters) and the run's hyper-parameters for
  TensorBoard's HParams view, with its final evaluation as the metrics."""
  params = workdirs.params_from_log(log_text)
  rows = [row for row in workdirs.read_rows(r["dir"]) if row.get("split") == "eval"]
  final = rows[-1] if rows else {}
  metrics = {f"hparam/{k}": float(v) for k, v in final.items()
             if k not in ("step", "split") and isinstance(v, (int, float)) and v == v}
  if metrics:
    from refinedweb_jax.train.logger import summary_writer
    hparams = {"arm": r["arm"], "seed": r["seed"],
               **{k: v for k, v in r["overrides"].items()
                  if isinstance(v, (bool, int, float, str))}}
    with summary_writer(os.path.join(r["dir"], "tensorboard")) as writer:
      writer.add_hparams(hparams, metrics, name="hparams", global_step=int(final["step"]))
  workdirs.write_json(workdirs.path(r["dir"], workdirs.DONE), dict(
      command=display(r["argv"]), seconds=seconds, params=params, finished=time.time()))

