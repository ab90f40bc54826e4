"""experiments/colab.ipynb runs top to bottom on CPU with a tiny config."""

import json
import os
import sys
import time

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

NOTEBOOK = os.path.join(os.path.dirname(__file__), os.pardir, "experiments", "colab.ipynb")
TINY = {"model.preset": "tiny", "data.num_train": 400, "data.num_validation": 40,
        "data.num_test": 20, "data.vocab_size": 600, "data.input_length": 64,
        "data.target_length": 32, "data.batch_size": 8, "optimizer.warmup_steps": 2,
        "train.num_steps": 6, "train.log_every": 2, "train.eval_every": 3,
        "train.checkpoint_every": 3, "train.eval_examples": 16, "train.eval_batch_size": 8,
        "train.decode_examples_per_task": 1, "train.max_decode_length": 8,
        "train.progress_bar": False, "train.async_checkpointing": False}


def _kernel_spec(root):
  """A kernel spec running this interpreter (the venv's), found through JUPYTER_PATH."""
  spec_dir = root / "kernels" / "refinedweb-test"
  spec_dir.mkdir(parents=True)
  spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
          "display_name": "refinedweb test", "language": "python"}
  (spec_dir / "kernel.json").write_text(json.dumps(spec))
  return "refinedweb-test"


def _outputs(cell, output_type):
  return [o for o in cell.get("outputs", []) if o["output_type"] == output_type]


def test_colab_notebook_runs_on_cpu(tmp_path, monkeypatch):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:
    assert not cell.get("outputs") and not cell.get("execution_count"), "strip the outputs"
  params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1, "one cell tagged 'parameters' holds WORKDIR and OVERRIDES"
  workdir = str(tmp_path / "run")
  overrides = {**TINY, "data.data_dir": str(tmp_path / "data")}
  # Like papermill: the test's values go in a cell right after the parameters cell.
  nb.cells.insert(params[0] + 1, nbformat.v4.new_code_cell(
      f"WORKDIR = {workdir!r}\nOVERRIDES = {overrides!r}"))

  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  kernel = _kernel_spec(tmp_path / "jupyter")
  start = time.time()
  nbclient.NotebookClient(nb, timeout=600, kernel_name=kernel,
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  print(f"notebook ran in {time.time() - start:.0f} s")

  sources = [c.source for c in nb.cells]
  assert not any(_outputs(c, "error") for c in nb.cells)
  install = next(c for c in nb.cells if "REPO_URL =" in c.source)
  assert "already installed" in "".join(o["text"] for o in _outputs(install, "stream"))
  runtime = next(c for c in nb.cells if "default_backend()" in c.source)
  assert "backend: cpu" in "".join(o["text"] for o in _outputs(runtime, "stream"))
  plot = next(c for c in nb.cells if "plt.show()" in c.source)
  assert any("image/png" in o["data"] for o in _outputs(plot, "display_data")), plot.outputs
  generate = nb.cells[next(i for i, s in enumerate(sources) if "model.generate" in s)]
  lines = "".join(o["text"] for o in _outputs(generate, "stream")).splitlines()
  assert len(lines) == 4 and lines[0].startswith("translate English to German: 42  ->  "), lines
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "6"))
