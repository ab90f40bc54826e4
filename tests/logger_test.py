"""TensorBoard events: written without importing torch, and readable as TensorBoard reads them."""

import glob
import os
import struct
import subprocess
import sys

WRITE = """
import sys
from refinedweb_jax.train import logger
log = logger.MetricLogger(sys.argv[1])
log.scalars(1, "train", {"train/loss": 0.25})
log.scalars(2, "train", {"train/loss": 0.125})
log.close()
print("torch" in sys.modules)
"""


def _events(folder):
  """(tag, step, value) of every scalar in the folder's event files (TFRecord framing)."""
  from tensorboardX.proto import event_pb2
  found = []
  for path in glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True):
    data, at = open(path, "rb").read(), 0
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
      at += 12 + length + 4
      found += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
  return found


def test_a_run_writes_tensorboard_events_without_importing_torch(tmp_path):
  out = subprocess.run([sys.executable, "-c", WRITE, str(tmp_path)], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == "False"  # ~2 s of every start when torch is installed
  assert sorted(_events(tmp_path / "tensorboard")) == [("train/loss", 1, 0.25),
                                                       ("train/loss", 2, 0.125)]
