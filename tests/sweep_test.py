"""The ablation sweep: runner (skip, resume, shards, failures), report with intervals, the t math.

One sweep of two arms x two seeds of the tiny config runs once per module: killed
(SIGKILL) while its second arm trains, then run again; a third arm fails at run time.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from refinedweb_jax import cli
from refinedweb_jax.sweep import stats, workdirs

TIMEOUT_S = 240
STEPS = 4
TESTS = os.path.dirname(os.path.abspath(__file__))
EXPERIMENT = """
import sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from refinedweb_jax import sweep

def get_config(arg=""):
  c = tiny_config({data_dir!r})
  c.train.update(dict(num_steps={steps}, log_every=1, eval_every={steps}, checkpoint_every=1,
                      eval_examples=8, decode_examples_per_task=0))
  return c

def get_sweep(arg=""):
  arms = [sweep.Arm("base"), sweep.Arm("fast", {{"optimizer.learning_rate": 0.01}}),
          sweep.Arm("broken", {{"data.data_dir": "/dev/null/nowhere"}})]
  if arg == "typo":
    arms.append(sweep.Arm("typo", {{"optimizer.learnin_rate": 0.1}}))
  return sweep.Sweep(arms=arms, baseline="base", seeds=2)
"""


@pytest.fixture(scope="module")
def experiment(tiny_data_dir, tmp_path_factory):
  path = tmp_path_factory.mktemp("experiment") / "exp.py"
  path.write_text(EXPERIMENT.format(tests=TESTS, data_dir=tiny_data_dir, steps=STEPS))
  return str(path)


def _sweep(*args):
  return [sys.executable, "-m", "refinedweb_jax.cli", "sweep", *args]


def _run(args, env):
  out = subprocess.run(_sweep(*args), env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
  return out.returncode, out.stdout, out.stderr


def _state(run_dir) -> tuple:
  """What retraining would change: checkpoint steps and the mtimes of the logs and steps."""
  steps = workdirs.checkpoint_steps(run_dir)
  times = [os.stat(os.path.join(run_dir, "checkpoints", str(s))).st_mtime_ns for s in steps]
  return steps, times, os.stat(os.path.join(run_dir, "metrics.jsonl")).st_mtime_ns


@pytest.fixture(scope="module")
def swept(experiment, env, tmp_path_factory):
  """base and fast x 2 seeds, killed during fast/seed_0 and rerun; then broken/seed_0 alone."""
  workdir = str(tmp_path_factory.mktemp("sweeps") / "ablate")
  args = ["--config", experiment, "--workdir", workdir, "--arms", "base,fast"]
  second = os.path.join(workdir, "fast", "seed_0")
  with open(os.path.join(os.path.dirname(workdir), "killed.log"), "w") as log:
    proc = subprocess.Popen(_sweep(*args), env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + TIMEOUT_S
    while not workdirs.checkpoint_steps(second):
      assert proc.poll() is None, "the sweep ended before its second arm saved a step"
      assert time.time() < deadline, "the second arm saved no step in time"
      time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  first = {s: _state(os.path.join(workdir, "base", s)) for s in ("seed_0", "seed_1")}
  code, out, err = _run(args, env)
  assert code == 0, err[-3000:]
  broken = _run(["--config", experiment, "--workdir", workdir, "--arms", "broken",
                 "--shard", "0/2"], env)
  return dict(workdir=workdir, first=first, out=out, broken=broken)


def test_rerun_after_a_kill_skips_the_first_arm_and_resumes_the_second(swept):
  workdir = swept["workdir"]
  for seed, before in swept["first"].items():
    assert _state(os.path.join(workdir, "base", seed)) == before  # not retrained
  assert swept["out"].count("finished already: skipped") == 2
  log = open(os.path.join(workdir, "fast", "seed_0", workdirs.LOG)).read()
  assert "resumed from step" in log
  for arm in ("base", "fast"):
    for seed in ("seed_0", "seed_1"):
      assert workdirs.checkpoint_steps(os.path.join(workdir, arm, seed))[-1] == STEPS
      hparams = os.path.join(workdir, arm, seed, "tensorboard", "hparams")
      assert any(n.startswith("events.out") for n in os.listdir(hparams))


def test_report_has_both_arms_with_intervals(swept):
  workdir = swept["workdir"]
  md = open(os.path.join(workdir, "results.md")).read()
  rows = {line.split("|")[1].strip(): line for line in md.splitlines()
          if line.startswith("| ") and "---" not in line}
  assert "**base**" in rows and "fast" in rows
  for name in ("**base**", "fast"):
    cells = [c.strip() for c in rows[name].split("|")[1:-1]]
    assert cells[1] == "2"  # seeds
    mean, half = cells[2].split(" ± ")
    assert math.isfinite(float(mean)) and float(half) > 0
  diff = [c.strip() for c in rows["fast"].split("|")[1:-1]][3]
  assert diff.startswith(("+", "-")) and " ± " in diff
  assert "(baseline)" in rows["**base**"]
  with open(os.path.join(workdir, "results.csv")) as f:
    kinds = [line.split(",")[:3] for line in f.read().splitlines()[1:]]
  assert ["arm", "base", ""] in kinds and ["run", "fast", "1"] in kinds
  for name in ("curves.png", "bars.png", "cost_quality.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 1000


def test_a_failed_arm_is_reported_and_the_exit_status_is_not_zero(swept):
  code, out, _ = swept["broken"]
  assert code != 0
  assert "FAILED" in out
  md = open(os.path.join(swept["workdir"], "results.md")).read()
  failed = md.split("## Failed runs")[1].split("##")[0]
  assert "`broken/seed_0`" in failed and "Not a directory" in failed
  missing = md.split("## Missing runs")[1].split("##")[0]
  assert "`broken/seed_1`: missing" in missing  # the other shard's run


def _dry_run(capsys, experiment, *extra) -> list:
  assert cli.main(["sweep", "--config", experiment, "--workdir", "/nonexistent/sweep",
                   "--dry-run", *extra]) == 0
  out = capsys.readouterr().out
  return [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]


def test_shards_partition_the_runs(capsys, experiment):
  everything = _dry_run(capsys, experiment)
  assert everything == [f"{a}/seed_{s}" for a in ("base", "fast", "broken") for s in (0, 1)]
  shards = [_dry_run(capsys, experiment, "--shard", f"{i}/2") for i in range(2)]
  assert shards == [everything[0::2], everything[1::2]]
  assert _dry_run(capsys, experiment, "--arms", "fast", "--shard", "1/2") == ["fast/seed_1"]


def test_dry_run_prints_each_runs_command_and_overrides(capsys, experiment):
  assert cli.main(["sweep", "--config", experiment, "--workdir", "w", "--dry-run", "--arms",
                   "fast"]) == 0
  out = capsys.readouterr().out
  assert "overrides: optimizer.learning_rate=0.01 seed=1" in out
  assert (f"refinedweb train --workdir w/fast/seed_1 --config {experiment} "
          "--config.optimizer.learning_rate=0.01 --config.seed=1") in out


def test_overrides_on_the_command_line_reach_every_run_before_its_own(capsys, experiment):
  assert cli.main(["sweep", "--config", experiment, "--workdir", "w", "--dry-run", "--arms",
                   "fast", "--config.train.num_steps=3",
                   "--config.optimizer.learning_rate=0.5"]) == 0
  out = capsys.readouterr().out
  assert ("--config.train.num_steps=3 --config.optimizer.learning_rate=0.5 "
          "--config.optimizer.learning_rate=0.01 --config.seed=1") in out  # the arm's wins
  assert cli.main(["sweep", "--config", experiment, "--workdir", "w", "--dry-run",
                   "--config.train.nope=1"]) == 2
  assert "unknown config key 'config.train.nope'" in capsys.readouterr().err
  assert cli.main(["sweep", "--config", experiment, "--workdir", "w", "--steps", "3"]) == 2
  assert "unknown flag '--steps'" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--arms", "base,nope"], "unknown arm 'nope' in --arms; allowed: base, fast, broken"),
    (["--shard", "2/2"], "bad --shard '2/2'"),
    (["--shard", "1"], "bad --shard '1'"),
    (["--shard", "a/b"], "bad --shard 'a/b'"),
])
def test_bad_flags_are_one_line_errors_before_any_run(experiment, env, tmp_path, args, message):
  code, out, err = _run(["--config", experiment, "--workdir", str(tmp_path / "w"), *args], env)
  assert code == 2 and out == ""
  assert err.count("\n") == 1 and err.startswith("refinedweb: error: ") and message in err
  assert not os.path.exists(tmp_path / "w")


def test_an_unknown_override_key_names_the_arm_and_key_before_any_run(experiment, env, tmp_path):
  code, _, err = _run(["--config", experiment + ":typo", "--workdir", str(tmp_path / "w")], env)
  assert code == 2 and err.count("\n") == 1
  assert "arm 'typo', override 'optimizer.learnin_rate'" in err
  assert "unknown config key 'config.optimizer.learnin_rate'" in err
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("make", ["empty", "nothing", "no_arms"])
def test_a_report_on_a_folder_without_arms_is_one_line(env, tmp_path, make):
  target = tmp_path / "dir"
  if make != "nothing":
    target.mkdir()
  if make == "no_arms":
    (target / workdirs.SWEEP).write_text(json.dumps({"arms": [], "runs": []}))
  code, out, err = _run(["report", str(target)], env)
  assert code == 2 and out == "" and err.count("\n") == 1
  assert err.startswith("refinedweb: error: ") and str(target) in err


@pytest.mark.parametrize("spec", ["ablate_attention.py", "ablate_multitask.py",
                                  "ablate_distill.py"])
@pytest.mark.parametrize("arg", ["", ":smoke"])
def test_the_ablation_files_validate(capsys, spec, arg):
  path = os.path.join(os.path.dirname(TESTS), "experiments", spec)
  names = _dry_run(capsys, path + arg)
  assert len(names) >= (3 if arg else 9)


# t_{0.975, df} from printed tables.
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 30: 2.042, 120: 1.980}


def test_t_quantiles_match_the_tables():
  for df, t in T_TABLE.items():
    assert stats.t_quantile(0.975, df) == pytest.approx(t, abs=5e-4)
  assert stats.t_quantile(0.995, 4) == pytest.approx(4.604, abs=5e-4)
  assert stats.t_quantile(0.025, 4) == pytest.approx(-2.776, abs=5e-4)
  assert stats.t_quantile(0.975, 1e7) == pytest.approx(1.95996, abs=1e-4)


def test_intervals_of_means_and_differences():
  mean, half, n = stats.mean_ci([1.0, 2.0, 3.5])
  sd = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (3.5 - mean) ** 2) / 2)
  assert (mean, n) == (pytest.approx(13 / 6), 3)
  assert half == pytest.approx(4.303 * sd / math.sqrt(3), rel=1e-4)
  # Welch: a = 1, 2, 3.5; b = 2, 4, 4.1, 5 (hand-computed df 4.4712).
  diff, half, df = stats.welch_diff([1.0, 2.0, 3.5], [2.0, 4.0, 4.1, 5.0])
  assert diff == pytest.approx(13 / 6 - 3.775)
  assert df == pytest.approx(4.4712, abs=1e-4)
  assert half == pytest.approx(2.5676, abs=1e-4)
  assert not stats.significant(diff, half)
  assert stats.significant(*stats.welch_diff([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])[:2])
  assert math.isnan(stats.mean_ci([4.0])[1]) and math.isnan(stats.welch_diff([1.0], [2, 3])[1])
  assert stats.significant(1.0, float("nan")) is None


def test_intervals_agree_with_scipy_where_installed():
  scipy_stats = pytest.importorskip("scipy.stats")
  for df in (0.7, 1, 2.5, 7, 40, 1000):
    for p in (0.6, 0.9, 0.975, 0.999):
      assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-8)
  a, b = [0.3, 0.5, 0.4, 0.45], [0.6, 0.55, 0.8]
  result = scipy_stats.ttest_ind(a, b, equal_var=False)
  interval = result.confidence_interval(0.95)
  diff, half, df = stats.welch_diff(a, b)
  assert (diff - half, diff + half) == (pytest.approx(interval.low), pytest.approx(interval.high))
  assert df == pytest.approx(result.df)


def test_axis_product_and_zipped_name_and_merge_arms():
  from refinedweb_jax import sweep
  alphas = sweep.axis("distill.alpha", [0.0, 0.5])
  temps = sweep.axis("distill.temperature", [1.0, 2.0], name="T")
  grid = sweep.product(alphas, temps)
  assert [a.name for a in grid] == ["alpha0_T1", "alpha0_T2", "alpha0.5_T1", "alpha0.5_T2"]
  assert grid[3].overrides == {"distill.alpha": 0.5, "distill.temperature": 2.0}
  paired = sweep.zipped(alphas, temps)
  assert [a.name for a in paired] == ["alpha0_T1", "alpha0.5_T2"]
  with pytest.raises(ValueError, match="one length"):
    sweep.zipped(alphas, temps[:1])
  with pytest.raises(ValueError, match="both set distill.alpha"):
    sweep.product(alphas, alphas)
