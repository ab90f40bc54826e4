"""benchmarks/accelerator_check.sh: it parses, fits one lease by construction, and its parts
stream their rows and verdicts as each one ends (QUICK=1, on this CPU)."""

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
SCRIPT = os.path.join(ROOT, "benchmarks", "accelerator_check.sh")
PARTS = ("train_base", "hf_base", "train_base_t5", "train_large", "decode", "attention",
         "tests")


def test_the_scripts_parse():
  for name in ("accelerator_check.sh", "gpu_wheels.sh"):
    out = subprocess.run(["bash", "-n", os.path.join(ROOT, "benchmarks", name)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean():
  for name in ("accelerator_check.sh", "gpu_wheels.sh"):
    out = subprocess.run(["shellcheck", "-S", "warning", os.path.join(ROOT, "benchmarks", name)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def _calls(text: str) -> dict:
  """{part name: (time limit, command)} of the `part` calls in one branch of the script."""
  joined = text.replace("\\\n", " ")
  return {m.group(1): (int(m.group(2)), m.group(3)) for m in
          re.finditer(r"^\s*part (\w+) (\d+) [\d.]+ (.*)$", joined, re.M)}


def test_every_part_is_timed_fixed_and_the_full_run_fits_eight_minutes():
  text = open(SCRIPT).read()
  quick, full = text.split("\nelse\n")
  quick, full = _calls(quick.split('QUICK:-}" ]]; then')[1]), _calls(full.split("\nfi\n")[0])
  assert tuple(quick) == tuple(full) == PARTS  # the same parts, in one order
  assert sum(limit for limit, _ in full.values()) <= 8 * 60 - 15  # + install and start-up
  assert "--position t5_bias" in full["train_base_t5"][1]  # T5's bias kernels timed too
  for name in ("train_base", "hf_base", "train_base_t5", "train_large"):
    assert "--batch" in full[name][1], name  # fixed batches: no search at run time
  assert "--hf base" in full["hf_base"][1] and "--preset" not in full["hf_base"][1]
  train = open(os.path.join(ROOT, "benchmarks", "accelerator_train.py")).read()
  assert "auto_batch" not in train and "memory_analysis" not in train
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION" in text and "--no-index" in text


def test_quick_train_parts_stream_rows_and_verdicts_as_each_part_ends(tmp_path):
  """Ours and the HF peer, each its own process: ours' row and verdicts reach the output
  and summary.md before the peer starts; the peer's row follows with the ratio."""
  env = {**os.environ, "OUT": str(tmp_path), "QUICK": "1", "PARTS": "train_base,hf_base",
         "PEAK_TFLOPS": "1", "WHEELS": str(tmp_path / "none")}
  out = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
  assert out.returncode == 0, out.stdout + out.stderr
  summary = (tmp_path / "summary.md").read_text()
  assert "## train_base: ok" in summary and "## hf_base: ok" in summary, summary
  assert not (tmp_path / "decode.txt").exists()  # PARTS left it out
  ours = out.stdout.index("| ours, tiny | 2 |")
  assert ours < out.stdout.index("## train_base: ok") < out.stdout.index("| HF PyTorch T5")
  assert re.search(r"\| ours, tiny \| 2 \| [\d,]+ \| [\d.]+ \| [\d.]+ \| [\d.]+% \|", summary)
  peer = (tmp_path / "hf_base.txt").read_text()
  assert re.search(r"ours [\d.]+x \|", peer) or "not installed" in peer, peer
