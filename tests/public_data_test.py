"""A fresh clone has no public data beside it: every test that reads it carries the
`public_data` marker (tests/conftest.py) and skips, naming what is missing, instead of failing."""

import ast
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

from refinedweb_jax.data import fetch

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = sorted(p for p in (ROOT / "tests").glob("*_test.py") if p.name != "public_data_test.py")
# Tests that name fetch.require without reading a dataset.
NOT_READING = {"fetch_test.py::test_unknown_names_and_sources_are_refused"}  # unknown names


def _reads_public_data(text: str) -> bool:
  return "fetch.require" in text or "data_root" in text


def _experiments_reading_public_data() -> set:
  """Experiment files that read a public dataset, directly or through another experiment."""
  sources = {p.name: p.read_text() for p in (ROOT / "experiments").glob("*.py")}
  found = {name for name, text in sources.items() if _reads_public_data(text)}
  grew = True
  while grew:
    more = {name for name, text in sources.items() if any(f in text for f in found)}
    grew, found = bool(more - found), found | more
  return found


def _marked(node) -> bool:
  return any("public_data" in ast.unparse(d) for d in node.decorator_list)


def test_every_test_that_reads_public_data_is_marked():
  """A test (or a fixture it takes) that reads the public data folder, or loads an experiment
  that does, carries @pytest.mark.public_data."""
  experiments = _experiments_reading_public_data()
  assert "train_small_multi30k.py" in experiments and "finetune_t5_multi30k.py" in experiments
  unmarked = []
  for path in TESTS:
    tree = ast.parse(path.read_text())
    module_marked = any(isinstance(n, ast.Assign) and "pytestmark" in ast.unparse(n.targets[0])
                        and "public_data" in ast.unparse(n.value) for n in tree.body)
    # Module-level names bound to the public data folder (SHARED = fetch.data_root()).
    names = {t.id for n in tree.body if isinstance(n, ast.Assign)
             and _reads_public_data(ast.unparse(n.value)) for t in n.targets
             if isinstance(t, ast.Name)}
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]

    def reads(node) -> bool:
      body = ast.unparse(node)
      used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
      return (_reads_public_data(body) or bool(used & names)
              or any(f in body for f in experiments))

    # Fixtures and helpers that read it, then whatever takes or calls them.
    readers = {f.name for f in functions if reads(f)}
    grew = True
    while grew:
      more = {f.name for f in functions if {a.arg for a in f.args.args} & readers
              or {n.id for n in ast.walk(f) if isinstance(n, ast.Name)} & readers}
      grew, readers = bool(more - readers), readers | more
    unmarked += [f"{path.name}::{f.name}" for f in functions
                 if f.name.startswith("test_") and f.name in readers
                 and not (_marked(f) or module_marked)
                 and f"{path.name}::{f.name}" not in NOT_READING]
  assert not unmarked, f"read the public data without @pytest.mark.public_data: {unmarked}"


def test_without_public_data_the_tests_that_need_it_skip(tmp_path):
  """README's test command on a clone with no public data anywhere: $REFINEDWEB_SHARED_DATA
  names an empty folder (it wins over ../shared/data) and HOME has no cache. The marked tests
  all skip with fetch's one-line reason; none fails or errors."""
  empty, home = tmp_path / "no_public_data", tmp_path / "home"
  empty.mkdir()
  home.mkdir()
  env = dict(os.environ, **{fetch.ENV: str(empty)}, HOME=str(home), JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                        "-m", "public_data", "-p", "no:xdist", "tests"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  text = out.stdout + out.stderr
  summary = text.strip().splitlines()[-1]
  assert out.returncode == 0 and re.fullmatch(r"=* ?\d+ skipped, \d+ deselected in .*", summary), text
  skips = re.findall(r"^SKIPPED \[(\d+)\] tests/(\w+\.py):\d+: (.*)$", text, re.M)
  assert sum(int(n) for n, _, _ in skips) == int(re.search(r"(\d+) skipped", summary).group(1))
  for _, _, reason in skips:
    assert (f"is missing from {empty} (no " in reason and "run `refinedweb fetch " in reason
            or "requirements-peers.txt" in reason), reason  # hf_t5_test.py without torch
  files = {f for _, f, reason in skips if "is missing from" in reason}
  expected = {"own_data_test.py", "sandbox_test.py", "fetch_test.py"}
  if importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"):
    expected.add("hf_t5_test.py")  # else the whole module skips: no torch
  assert expected <= files, text
