"""pass@1's verdict is a plain interpreter's: small cases, and MBPP / HumanEval with mutants.

The plain verdict is that of `python program+tests` run inside the same sandbox
(sandbox.run_python: whether the top-level code ran to the end).
"""

import ast
import concurrent.futures
import gzip
import json
import logging
import os

import pytest

from refinedweb_jax.data import fetch
from refinedweb_jax.evaluate import metrics
from refinedweb_jax.evaluate import sandbox

# (program, tests): one interpreter sees what the tests do to and with the program's values.
CASES = {
    "wrong: mutates its argument": (
        "def add_one(a):\n  a.append(1)\n  return a\n", "a = [0]\nb = add_one(a)\nassert a == [0]"),
    "wrong: returns its argument": (
        "def copy(a):\n  return a\n", "a = [0]\nb = copy(a)\nassert b == a and b is not a"),
    "right: returns a copy": (
        "def copy(a):\n  return list(a)\n", "a = [0]\nb = copy(a)\nassert b == a and b is not a"),
    "wrong: returns a shared object": (
        "CACHE = []\ndef fresh():\n  return CACHE\n",
        "x = fresh()\nx.append(1)\nassert fresh() == []"),
    "wrong: returns aliased rows": (
        "def grid(n):\n  row = [0] * n\n  return [row] * n\n",
        "g = grid(2)\ng[0][0] = 1\nassert g == [[1, 0], [0, 0]]"),
    "right: fresh rows": (
        "def grid(n):\n  return [[0] * n for _ in range(n)]\n",
        "g = grid(2)\ng[0][0] = 1\nassert g == [[1, 0], [0, 0]]"),
    "right: sorts in place": (
        "def sort_in_place(xs):\n  xs.sort()\n", "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]"),
    "right: edits a nested row in place": (
        "def clear_first(m):\n  m[0][0] = 0\n",
        "m = [[1, 2], [3]]\nrow = m[0]\nclear_first(m)\nassert row == [0, 2] and m == [[0, 2], [3]]"),
    "right: a generator consumed with list()": (
        "def squares(n):\n  for i in range(n):\n    yield i * i\n",
        "assert list(squares(4)) == [0, 1, 4, 9]\nit = squares(2)\nassert next(it) == 0\n"
        "assert next(it) == 1\ntry:\n  next(it)\nexcept StopIteration:\n  pass\n"
        "else:\n  assert False\nassert sum(map(int, map(str, squares(3)))) == 5"),
    "right: a module constant": (
        "LIMIT = 10\nTABLE = {'a': [1]}\ndef clip(x):\n  return min(x, LIMIT)\n",
        "assert clip(20) == LIMIT and TABLE['a'] == [1]"),
    "right: a class defined in the tests": (
        "def total(node):\n  s = 0\n  while node:\n    s, node = s + node.v, node.nxt\n  return s\n"
        "def reverse(node):\n  prev = None\n  while node:\n    node.nxt, prev, node = prev, node, node.nxt\n"
        "  return prev\n",
        "class Node:\n  def __init__(self, v, nxt=None):\n    self.v, self.nxt = v, nxt\n"
        "  def __eq__(self, other):\n"
        "    return isinstance(other, Node) and (self.v, self.nxt) == (other.v, other.nxt)\n"
        "assert total(Node(1, Node(2))) == 3\nhead = Node(1, Node(2))\n"
        "assert reverse(head) == Node(2, Node(1)) and head.nxt is None"),
    "wrong: a class defined in the tests": (
        "def reverse(node):\n  return node\n",
        "class Node:\n  def __init__(self, v, nxt=None):\n    self.v, self.nxt = v, nxt\n"
        "  def __eq__(self, other):\n"
        "    return isinstance(other, Node) and (self.v, self.nxt) == (other.v, other.nxt)\n"
        "assert reverse(Node(1, Node(2))) == Node(2, Node(1))"),
    "right: a bytearray edited in place": (
        "def upper(b):\n  b[:] = b.upper()\n", "b = bytearray(b'ab')\nupper(b)\nassert b == b'AB'"),
    "right: a dict edited in place and a set": (
        "def bump(d, s):\n  d['n'] = d.get('n', 0) + 1\n  s.add(len(d))\n",
        "d, s = {}, set()\nbump(d, s)\nbump(d, s)\nassert d == {'n': 1 + 1} and s == {1}"),
}


def pass_at_1(program: str, tests: str, **kwargs) -> bool:
  return metrics.pass_at_1([""], [program], [tests], **kwargs)["pass@1"] == 100.0


def plain(program: str, tests: str) -> bool:
  """The verdict of one interpreter running the program, then its tests (in the sandbox)."""
  return sandbox.run_python(program + "\n" + tests, timeout_s=10.0)[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_verdict_is_the_plain_interpreters(name):
  program, tests = CASES[name]
  expected = name.startswith("right")
  assert plain(program, tests) == expected, "the case itself is wrong"
  assert pass_at_1(program, tests) == expected


def test_tests_with_no_assert_score_zero_with_one_warning(caplog):
  tests = ["pass", "# a comment", "", "print('checked')", "assert True"]
  with caplog.at_level(logging.WARNING):
    got = metrics.pass_at_1([""] * 5, [""] * 5, tests)
  assert got == {"pass@1": 20.0}
  warnings = [r.message for r in caplog.records if "no assert" in r.message]
  assert len(warnings) == 1 and "4 of 5" in warnings[0]


def mutants(program: str, name: str) -> dict:
  """Wrong (or harmless) versions of function `name`: None, off by one, mutated arguments."""
  tree = ast.parse(program)
  functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
  if not functions:
    return {}
  function = functions[-1]
  result = {}
  for kind in ("returns None", "off by one", "mutates its arguments"):
    body = ast.parse(ast.unparse(function)).body[0]
    for node in ast.walk(body):
      if isinstance(node, ast.Return) and node.value is not None:
        if kind == "returns None":
          node.value = ast.Constant(None)
        elif kind == "off by one":
          node.value = ast.parse(f"(lambda r: r + 1 if type(r) is int else r)"
                                 f"({ast.unparse(node.value)})", mode="eval").body
    if kind == "mutates its arguments":
      # Computes as the reference does, then empties each list argument.
      body.name = f"_{name}_reference"
      wrapper = (f"def {name}(*args, **kwargs):\n  r = {body.name}(*args, **kwargs)\n"
                 "  for a in args:\n    if type(a) is list:\n      a.clear()\n  return r\n")
      result[kind] = program + "\n" + ast.unparse(body) + "\n" + wrapper
      continue
    result[kind] = program + "\n" + ast.unparse(body)
  return result


def load_benchmarks(mbpp_every: int, humaneval_every: int) -> list:
  """(label, program, tests, setup, entry_point, plain tests) of every n-th problem."""
  with open(os.path.join(fetch.require("mbpp"), "mbpp_sanitized.jsonl"), encoding="utf-8") as f:
    mbpp = [json.loads(line) for line in f][::mbpp_every]
  with gzip.open(os.path.join(fetch.require("humaneval"), "HumanEval.jsonl.gz"), "rt",
                 encoding="utf-8") as f:
    humaneval = [json.loads(line) for line in f][::humaneval_every]
  problems = []
  for p in mbpp:
    tests = "\n".join(p["test_list"])
    name = ast.parse(p["test_list"][0]).body[0].test
    name = next(n.func.id for n in ast.walk(name) if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Name) and n.func.id in p["code"])
    problems.append((f"mbpp/{p['task_id']}", p["code"], tests, p["test_setup_code"], None,
                     name, p["test_setup_code"] + "\n" + tests))
  for p in humaneval:
    program = p["prompt"] + p["canonical_solution"]
    problems.append((p["task_id"], program, p["test"], p["prompt"], p["entry_point"],
                     p["entry_point"], p["test"] + f"\ncheck({p['entry_point']})"))
  runs = []
  for label, program, tests, setup, entry, name, plain_tests in problems:
    variants = {"reference": program, **mutants(program, name)}
    for kind, variant in variants.items():
      runs.append((f"{label} {kind}", variant, tests, setup, entry, plain_tests))
  return runs


@pytest.mark.public_data("mbpp", "humaneval")  # skipped, with the reason, where absent
def test_mbpp_and_humaneval_verdicts_are_the_plain_interpreters():
  runs = load_benchmarks(mbpp_every=30, humaneval_every=15)

  def verdicts(run):
    label, program, tests, setup, entry, plain_tests = run
    scored = metrics.pass_at_1([program], [program], [tests], setups=[setup],
                               entry_points=[entry], timeout_s=10.0)["pass@1"] == 100.0
    return label, scored, plain(program, plain_tests)

  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    results = list(pool.map(verdicts, runs))
  differ = [(label, scored, expected) for label, scored, expected in results
            if scored != expected]
  assert not differ, f"{len(differ)} of {len(results)} verdicts differ: {differ}"
  references = [expected for label, _, expected in results if label.endswith("reference")]
  assert all(references), "a reference solution fails in a plain interpreter"
  wrong = [label for label, _, expected in results if not expected]
  assert len(wrong) >= len(references)  # the mutants are mostly caught
