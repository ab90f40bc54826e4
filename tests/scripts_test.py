"""The scripts in experiments/ and benchmarks/ name only what the package has: every
`module.name` they use of a refinedweb_jax module they import exists (a move inside the
package cannot leave a script behind)."""

import ast
import importlib
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "experiments").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))


def _imported_modules(tree) -> dict:
  """{local name: module path} for `from refinedweb_jax... import module` lines."""
  names = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("refinedweb_jax"):
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        if importlib.util.find_spec(full.rsplit(".", 1)[0]) is None:
          continue
        try:
          importlib.import_module(full)
        except ImportError:
          continue  # a function or class, not a module
        names[alias.asname or alias.name] = full
  return names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_package_name_a_script_uses_exists(path):
  tree = ast.parse(path.read_text())
  modules = _imported_modules(tree)
  missing = []
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in modules):
      if not hasattr(importlib.import_module(modules[node.value.id]), node.attr):
        missing.append(f"line {node.lineno}: {modules[node.value.id]}.{node.attr}")
  assert not missing, missing
