"""benchmarks/accelerator_check.sh: it parses, and a part writes its result and summary."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
SCRIPT = os.path.join(ROOT, "benchmarks", "accelerator_check.sh")


def test_the_script_parses():
  out = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean():
  out = subprocess.run(["shellcheck", "-S", "warning", SCRIPT], capture_output=True, text=True)
  assert out.returncode == 0, out.stdout


def test_quick_attention_part_writes_its_table_and_the_summary(tmp_path):
  """The attention part through the model's attention layer (dispatch.py's kernels) in
  bfloat16, every kind; a part's PASS/FAIL lines and status reach summary.md."""
  env = {**os.environ, "OUT": str(tmp_path), "QUICK": "1", "PARTS": "attention",
         "PEAK_TFLOPS": "0"}
  out = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stdout + out.stderr
  summary = (tmp_path / "summary.md").read_text()
  assert "## attention: ok" in summary, summary
  assert not (tmp_path / "train.txt").exists()  # PARTS left it out
  table = (tmp_path / "attention.txt").read_text()
  assert "bfloat16, forward+backward" in table
  assert "kernels: " in table and "self-attention (dense) -> xla" in table, table
  for kind in ("dense", "local", "strided/fixed", "strided/strided", "bigbird", "global_local"):
    rows = [line for line in table.splitlines()
            if line.startswith(("| 256 |", "| 512 |")) and f"| {kind} |" in line]
    assert len(rows) == 2 and all("failed" not in row for row in rows), (kind, table)
  assert "PASS" in summary or "FAIL" in summary
