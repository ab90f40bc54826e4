"""The package declares every runtime dependency it imports (a `pip install .` has them all)."""

import ast
import configparser
import importlib.metadata
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")
OPTIONAL = {"torch"}  # reading a T5's pytorch_model.bin: setup.cfg's extra `torch`


def _imported() -> set:
  """Top-level third-party modules imported anywhere in refinedweb_jax/."""
  found = set()
  for folder, _, names in os.walk(os.path.join(ROOT, "refinedweb_jax")):
    for name in names:
      if name.endswith(".py"):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
          tree = ast.parse(f.read())
        for node in ast.walk(tree):
          if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
          elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
  return {m for m in found if m not in sys.stdlib_module_names and m != "refinedweb_jax"}


def _declared(section: str, key: str) -> set:
  config = configparser.ConfigParser()
  config.read(os.path.join(ROOT, "setup.cfg"))
  lines = config[section][key].replace("\n", ",").split(",")
  names = {re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0] for line in lines}
  return {n.lower().replace("_", "-") for n in names if n}


def test_every_imported_distribution_is_declared_in_setup_cfg():
  distributions = importlib.metadata.packages_distributions()
  needed = {}
  for module in _imported() - OPTIONAL:
    assert module in distributions, f"{module} is imported but not installed"
    for dist in distributions[module]:
      needed[dist.lower().replace("_", "-")] = module
  declared = _declared("options", "install_requires")
  missing = sorted(set(needed) - declared)
  assert not missing, f"imported but not in setup.cfg install_requires: {missing}"
  assert OPTIONAL <= _declared("options.extras_require", "torch")


def _pins(path) -> dict:
  with open(os.path.join(ROOT, path), encoding="utf-8") as f:
    return dict(line.strip().split("==") for line in f if "==" in line and line[0] != "#")


def test_the_peers_are_out_of_the_light_install():
  """requirements.txt (the project and its tests) has no torch, transformers or CTranslate2:
  requirements-peers.txt pins them, setup.cfg's extra `peers` names them, and a test module
  that uses them skips without them (pytest.importorskip, saying how to install them)."""
  peers = {"torch", "transformers", "ctranslate2"}
  assert not peers & set(_pins("requirements.txt"))
  assert set(_pins("requirements-peers.txt")) == peers == _declared("options.extras_require",
                                                                    "peers")
  with open(os.path.join(ROOT, "benchmarks", "requirements-decode.txt"), encoding="utf-8") as f:
    assert "-r ../requirements-peers.txt" in f.read().splitlines()
  tests = os.path.join(ROOT, "tests")
  for name in sorted(os.listdir(tests)):
    if name.endswith(".py"):
      with open(os.path.join(tests, name), encoding="utf-8") as f:
        tree = ast.parse(f.read())
      plain = [node.lineno for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               and {(a.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
                    for a in node.names} & peers]
      assert not plain, f"tests/{name}:{plain[0]} imports a peer: use pytest.importorskip"
      skips = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
               and ast.unparse(node.func) == "pytest.importorskip" and node.args
               and ast.literal_eval(node.args[0]).split(".")[0] in peers]
      assert all(any(k.arg == "reason" for k in node.keywords) for node in skips), name
      assert not skips or "requirements-peers.txt" in ast.unparse(tree), name


def test_requirements_pin_what_setup_cfg_declares():
  with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
    pinned = {line.split("==")[0].strip().lower().replace("_", "-") for line in f
              if "==" in line and not line.startswith("#")}
  loose = {"etils", "absl-py", "ml-dtypes", "nltk"}  # pinned through the packages needing them
  missing = sorted(_declared("options", "install_requires") - pinned - loose)
  assert not missing, f"in setup.cfg but not pinned in requirements.txt: {missing}"
