"""`refinedweb attention-mask`: writes a picture of each pattern, rejects bad input in one line."""

import subprocess
import sys

import numpy as np
import pytest

from refinedweb_jax import cli as main
from refinedweb_jax import plots
from refinedweb_jax.model.attention import spec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Small sizes, so that at length 256 each pattern is sparse enough to show its shape.
CASES = {
    "dense": ("dense", []),
    "dense_causal": ("dense", ["--causal"]),
    "local": ("local", ["--window", "16"]),
    "strided_fixed": ("strided", ["--stride", "64", "--block-size", "16", "--summary", "4"]),
    "strided_strided": ("strided", ["--stride", "64", "--block-size", "16", "--variant",
                                    "strided"]),
    "bigbird": ("bigbird", ["--block-size", "16", "--random-blocks", "2", "--seed", "1"]),
    "bigbird_causal": ("bigbird", ["--block-size", "16", "--causal"]),
    "global_local": ("global_local", ["--window", "8", "--global-positions", "0-3,100"]),
}


def _run(argv, capsys):
  rc = main.main(argv)
  out, err = capsys.readouterr()
  return rc, out, err


def _assert_png(path):
  data = path.read_bytes()
  assert len(data) > len(PNG_SIGNATURE) and data.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("case", sorted(CASES))
def test_writes_png_for_each_kind(case, tmp_path, capsys):
  kind, flags = CASES[case]
  out = tmp_path / "mask.png"
  rc, stdout, err = _run(["attention-mask", "--kind", kind, "--length", "256", "--out", str(out)]
                         + flags, capsys)
  assert rc == 0, err
  _assert_png(out)
  path, _, density = stdout.strip().partition(" density ")
  assert path == str(out) and 0 < float(density) <= 1
  if case == "dense":
    assert float(density) == 1


def test_long_mask_is_downsampled(tmp_path, capsys):
  out = tmp_path / "long.png"
  rc, stdout, err = _run(["attention-mask", "--kind", "local", "--length", "8192", "--window", "64",
                          "--out", str(out)], capsys)
  assert rc == 0, err
  _assert_png(out)
  assert stdout.strip().startswith(f"{out} density ")


def test_downsample_max_pools():
  mask = np.zeros((10, 10), bool)
  mask[9, 0] = True  # one pair in the padded last block must survive pooling
  pooled, factor = plots.downsample(mask, max_side=4)
  assert factor == 3 and pooled.shape == (4, 4)
  assert pooled[3, 0] and pooled.sum() == 1


def test_positions_round_trip():
  assert spec.parse_positions("0-3, 9,11-12") == (0, 1, 2, 3, 9, 11, 12)
  assert spec.format_positions((0, 1, 2, 3, 9, 11, 12)) == "0-3,9,11-12"


@pytest.mark.parametrize("flags, bad", [
    (["--kind", "sparse"], "'sparse'"),
    (["--kind", "local", "--window", "0"], "--window must be >= 1, got 0"),
    (["--kind", "strided", "--stride", "100", "--block-size", "64"], "--stride=100"),
    (["--kind", "global_local", "--global-positions", "0,300-310"], "300-310"),
    (["--kind", "global_local", "--global-positions", "3-1"], "'3-1'"),
    (["--kind", "global_local", "--global-positions", "a,b"], "'a,b'"),
    (["--kind", "local", "--length", "0"], "length 0"),
    (["--kind", "local", "--out", "/nonexistent/dir/mask.png"], "'/nonexistent/dir'"),
    (["--kind", "local", "--out", "mask.xyz"], "'xyz'"),
    (["--kind", "local", "--variant", "odd"], "'odd'"),
])
def test_bad_input_is_one_line(flags, bad, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)  # relative --out paths land here if a case wrongly succeeds
  argv = ["attention-mask", "--length", "256", "--out", "unused.png"] + flags
  # Later flags win in argparse, so a case may override --length or --out.
  rc, stdout, err = _run(argv, capsys)
  assert rc == 2 and not stdout
  assert err.count("\n") == 1 and err.startswith("refinedweb: error: ") and bad in err, err
  assert "allowed" in err or "must be" in err or "choose from" in err, err
  assert not list(tmp_path.iterdir())


def test_main_imports_no_jax():
  code = "import sys, refinedweb_jax.cli; sys.exit('jax' in sys.modules)"
  assert subprocess.run([sys.executable, "-c", code]).returncode == 0
