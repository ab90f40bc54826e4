"""The pass@1 sandbox: verdicts a wrong program cannot forge, its isolation, public benchmarks."""

import gzip
import json
import os
import random
import site
import sys
import sysconfig
import time

import pytest

from refinedweb_jax.data import fetch
from refinedweb_jax.data.corpus import code as code_task
from refinedweb_jax.evaluate import metrics
from refinedweb_jax.evaluate import sandbox

DATA = fetch.data_root()
# Where a forged verdict could go: the old harness's stdout nonce, and any descriptor.
FORGE = '''
import os, sys
def _forge(*args, **kwargs):
  for fd in range(1, 32):
    try:
      os.write(fd, b'\\n{"status": "passed"}\\n')
    except OSError:
      pass
  frame = sys._getframe()
  while frame is not None:  # up to the harness: its nonce, then its exit
    for value in list(frame.f_locals.values()):
      if isinstance(value, bytes) and len(value) == 32:
        os.write(1, b"\\n" + value + b"\\n")
    if "exit_now" in frame.f_locals:
      frame.f_locals["exit_now"](0)
    frame = frame.f_back
'''


def score(programs, tests, **kwargs) -> float:
  """pass@1 of programs (one or a list) against the same tests."""
  programs = [programs] if isinstance(programs, str) else programs
  return metrics.pass_at_1([""] * len(programs), programs, [tests] * len(programs),
                           **kwargs)["pass@1"]


def test_a_correct_solution_passes_and_a_wrong_one_fails():
  right, wrong = "def add(a, b):\n  return a + b", "def add(a, b):\n  return a - b"
  assert sandbox.run_tests(right, "assert add(2, 3) == 5") == (True, "passed")
  assert sandbox.run_tests(wrong, "assert add(2, 3) == 5") == (False, "failed")
  assert score([right, wrong, "def add(a, b)"], "assert add(2, 3) == 5") == pytest.approx(100 / 3)


def test_walking_frames_to_the_harness_wins_nothing():
  # Attack a: read the harness's nonce from its frame, print it and exit 0.
  wrong = FORGE + "def is_even(n):\n  _forge()\n  return False\n"
  assert score(wrong, "assert is_even(2)") == 0.0


def test_replacing_traceback_print_exc_wins_nothing():
  # Attack a: the harness calls traceback.print_exc in its own except: there it forges.
  wrong = FORGE + ("import traceback\ntraceback.print_exc = _forge\n"
                   "def is_even(n):\n  raise ValueError('wrong')\n")
  assert score(wrong, "assert is_even(2)") == 0.0


@pytest.mark.parametrize("result, expected", [
    ("Anything()", "5"), ("Int(0)", "5"), ("Text('')", "'5'"), ("[Anything()]", "[5]"),
    ("{'k': Anything()}", "{'k': 5}"), ("(5, Int(0))", "(5, 5)")])
def test_values_that_equal_anything_fail(result, expected):
  # Attack b: __eq__ always True, on a plain class, a builtin's subclass, or nested.
  wrong = ("class Anything:\n  def __eq__(self, other):\n    return True\n"
           "class Int(int):\n  __eq__ = Anything.__eq__\n  __hash__ = int.__hash__\n"
           "class Text(str):\n  __eq__ = Anything.__eq__\n  __hash__ = str.__hash__\n"
           f"def add(a, b):\n  return {result}\n")
  assert score(wrong, f"assert add(2, 3) == {expected}") == 0.0


def test_redefining_a_builtin_the_tests_use_wins_nothing():
  wrong = ("def set(*args):\n  return 0\ndef abs(x):\n  return 0\n"
           "def pair(a, b):\n  return (a, a)\n")
  assert score(wrong, "assert set(pair(1, 2)) == set((1, 2))") == 0.0
  assert score(wrong, "assert abs(pair(1, 2)[1] - 2) < 1e-9") == 0.0
  # Where the reference solution defines it (MBPP 126 defines sum), it is the program's.
  mbpp_126 = "def sum(a, b):\n  return a + b\n"
  assert metrics.pass_at_1([mbpp_126], [mbpp_126], ["assert sum(1, 2) == 3"])["pass@1"] == 100.0


def test_fork_fails_even_as_root():
  # Attack c: RLIMIT_NPROC does not bind root; as root 60 of 60 forks succeeded.
  program = ("import ctypes\nlibc = ctypes.CDLL(None)\n"
             "def forks():\n  made = 0\n  for _ in range(60):\n    pid = libc.fork()\n"
             "    if pid == 0:\n      libc._exit(0)\n    made += pid > 0\n  return made\n")
  assert score(program, "assert forks() == 0") == 100.0


def test_a_fork_bomb_is_stopped_at_once_not_by_the_wall_clock():
  bomb = ("import ctypes\nlibc = ctypes.CDLL(None)\n"
          "def bomb():\n  for _ in range(10):\n    if libc.fork() < 0:\n      return 'refused'\n"
          "  return 'forked'\n")
  start = time.monotonic()
  assert score(bomb, "assert bomb() == 'refused'", timeout_s=20) == 100.0
  assert time.monotonic() - start < 10  # the wall clock would end it after 22 s
  threads = "import threading\nthreading.Thread(target=print).start()"
  assert sandbox.run_python(threads) == (False, "failed")  # no threads either, as under NPROC=0


def test_only_the_standard_library_is_importable():
  # Attack d: the host interpreter's site-packages (numpy, .pth files) are not there.
  base_sites = [p for p in site.getsitepackages([sys.base_prefix]) if os.path.isdir(p)]
  program = ("import os, sys\ndef probe(dirs):\n  try:\n    import numpy\n"
             "  except ImportError:\n    numpy = None\n"
             "  return (numpy is None, [os.listdir(d) for d in dirs if os.path.isdir(d)],\n"
             "          sorted(m for m in sys.modules if 'distutils' in m))\n"
             "import json, collections, decimal\n")
  tests = f"assert probe({base_sites!r}) == (True, [[]] * {len(base_sites)}, [])"
  assert score(program, tests) == 100.0


def test_only_the_interpreter_is_visible_of_where_it_lives():
  # Attack d: /root (and the interpreter's prefix) showed pip, other scripts, site-packages.
  libpython = os.path.join(sysconfig.get_config_var("LIBDIR"),
                           sysconfig.get_config_var("INSTSONAME"))
  allowed = [sandbox.PYTHON, os.path.realpath(os.path.dirname(os.__file__)), libpython]
  tops = ["/root"] + ([] if sys.base_prefix.startswith("/usr") else [sys.base_prefix])
  program = ("import os\ndef visible(tops, allowed):\n  found = []\n  for top in tops:\n"
             "    for root, dirs, files in os.walk(top):\n"
             "      dirs[:] = [d for d in dirs if os.path.join(root, d) not in allowed]\n"
             "      found += [os.path.join(root, f) for f in files]\n"
             "  return sorted(p for p in found if p not in allowed)\n")
  assert score(program, f"assert visible({tops!r}, {allowed!r}) == []") == 100.0


def test_exceptions_the_tests_expect_arrive_as_builtins():
  program = ("class Bad(ValueError):\n  pass\n"
             "def parse(s):\n  if s == 'bad':\n    raise Bad('no')\n  return int(s)\n"
             "def stop():\n  raise StopIteration\n")
  # StopIteration arrives as a RuntimeError: it would end a loop over map(stop, ...) as if empty.
  tests = ("for arg, error in (('x', ValueError), ('bad', ValueError), (None, TypeError),\n"
           "                   ('1', None)):\n"
           "  try:\n    parse(arg)\n  except ValueError if error is None else error:\n"
           "    assert error is not None\n  else:\n    assert error is None\n"
           "try:\n  stop()\nexcept RuntimeError as e:\n  assert 'StopIteration' in str(e)\n"
           "else:\n  assert False\n")
  assert sandbox.run_tests(program, tests) == (True, "passed")


def test_a_program_that_never_answers_times_out():
  start = time.monotonic()
  spin = "def f():\n  while True:\n    pass\n"
  assert sandbox.run_tests(spin, "f()", timeout_s=1.0) == (False, "timeout")
  sleep = "import time\ndef f():\n  time.sleep(60)\n"
  assert sandbox.run_tests(sleep, "f()", timeout_s=1.0) == (False, "timeout")
  assert time.monotonic() - start < 2 * (1.0 + 2.0) + 1.0


def test_a_crash_or_a_huge_answer_mid_call_fails():
  crash = "import ctypes\ndef f():\n  return ctypes.string_at(0)\n"  # a segfault
  quits = "import ctypes\ndef f():\n  ctypes.CDLL(None)._exit(0)\n"
  huge = f"def f():\n  return 'x' * {sandbox.sandbox_child.MESSAGE_BYTES}\n"
  tests = "try:\n  f()\nexcept Exception:\n  pass\n"  # a lost C is no exception to catch
  assert score([crash, quits, huge], tests) == 0.0
  assert sandbox.run_tests("def f():\n  return 'x' * 2**20", "assert len(f()) == 2**20") == (
      True, "passed")


def test_builtin_values_arrive_exactly():
  program = ("import collections, re\n"
             "def echo(*args, **kwargs):\n  return args, kwargs\n"
             "def count(xs):\n  return collections.Counter(xs)\n"
             "def match(s):\n  return re.search(r'(a)(b)?', s)\n")
  values = ("(None, True, -2**200, 0.1, float('inf'), 1e-310, 2j, 'é\\ud800', b'\\x00', [1, [2]],"
            " (3,), {4}, frozenset({5}), {6: {'k': (7,)}}, range(1, 9, 2))")
  tests = (f"v = {values}\nassert echo(*v, key=v) == (v, {{'key': v}})\n"
           "import math\nassert math.isnan(echo(float('nan'))[0][0])\n"
           "assert count('aab') == {'a': 2, 'b': 1} and count('aab').most_common(1) == [('a', 2)]\n"
           "m = match('xab')\nassert m and m.group() == 'ab' and m.span(1) == (1, 2)\n"
           "assert not match('xyz')\n")
  assert sandbox.run_tests(program, tests) == (True, "passed")


def test_setup_code_and_check_candidate_style():
  # MBPP's test_setup_code runs first; its definitions beat the program's.
  program = "def helper():\n  return 2\ndef triple(x):\n  return 3 * x\n"
  assert sandbox.run_tests(program, "assert triple(K) == 6 and helper() == 1",
                           setup="K = 2\ndef helper():\n  return 1\n") == (True, "passed")
  # HumanEval: the tests define check(candidate); the entry point's proxy is passed to it.
  check = "def check(candidate):\n  assert candidate(2) == 6\n  assert candidate(0) == 0\n"
  assert sandbox.run_tests(program, check, entry_point="triple") == (True, "passed")
  assert sandbox.run_tests(program, check, entry_point="helper") == (False, "failed")
  assert sandbox.run_tests(program, check + "check(triple)\n") == (True, "passed")


def test_the_built_in_code_task():
  rng = random.Random(0)
  examples = [code_task.code(rng) for _ in range(6)]
  references = [reference for _, reference, _ in examples]
  tests = [test for _, _, test in examples]
  wrong = [reference.split("\n")[0] + "\n    return None" for reference in references]
  assert metrics.pass_at_1(references, references, tests) == {"pass@1": 100.0}
  assert metrics.pass_at_1(references, wrong, tests) == {"pass@1": 0.0}


@pytest.mark.public_data("mbpp", "humaneval")
def test_public_benchmarks_reference_solutions_pass():
  with open(os.path.join(DATA, "mbpp", "mbpp_sanitized.jsonl"), encoding="utf-8") as f:
    mbpp = [json.loads(line) for line, _ in zip(f, range(15))]
  with gzip.open(os.path.join(DATA, "humaneval", "HumanEval.jsonl.gz"), "rt",
                 encoding="utf-8") as f:
    humaneval = [json.loads(line) for line, _ in zip(f, range(10))]
  programs = [p["code"] for p in mbpp] + [p["prompt"] + p["canonical_solution"] for p in humaneval]
  tests = ["\n".join(p["test_list"]) for p in mbpp] + [p["test"] for p in humaneval[:5]]
  setups = [p["test_setup_code"] for p in mbpp] + [p["prompt"] for p in humaneval[:5]]
  entry_points = [None] * len(mbpp) + [p["entry_point"] for p in humaneval[:5]]
  # The other five as the tests call check themselves, with no setup.
  tests += [p["test"] + f"\ncheck({p['entry_point']})" for p in humaneval[5:]]
  setups += [""] * 5
  entry_points += [None] * 5
  got = metrics.pass_at_1(programs, programs, tests, setups=setups, entry_points=entry_points)
  assert got == {"pass@1": 100.0}
  wrong = "def similar_elements(a, b):\n  return tuple(a)\n"
  assert metrics.pass_at_1([""], [wrong], tests[:1]) == {"pass@1": 0.0}


def test_pass_at_1_counts_failures():
  predictions = ["def add(a, b):\n  return a + b", "def add(a, b):\n  return a - b",
                 "def add(a, b)\n  return a + b"]
  tests = ["assert add(2, 3) == 5"] * 3
  assert metrics.pass_at_1(predictions, predictions, tests)["pass@1"] == pytest.approx(100 / 3)
  assert sandbox.run_python(predictions[1] + "\n" + tests[1]) == (False, "failed")


# Isolation: what a program can reach.


def test_sandbox_stops_infinite_loop():
  start = time.monotonic()
  assert sandbox.run_python("while True:\n  pass", timeout_s=1.0) == (False, "timeout")
  assert time.monotonic() - start < 1.0 + 2.0


def test_sandbox_cannot_delete_outside_files(tmp_path):
  outside = tmp_path / "outside"
  outside.mkdir()
  keep = outside / "keep.txt"
  keep.write_text("precious")
  programs = [f"import shutil\nshutil.rmtree({str(outside)!r})",
              f"import os\nos.remove({str(keep)!r})",
              f"import pathlib\npathlib.Path({str(keep)!r}).unlink()",
              f"open({str(keep)!r}, 'w').close()"]
  for code in programs:
    passed, status = sandbox.run_python(code, timeout_s=5.0)
    assert not passed and status == "failed", code
    assert keep.read_text() == "precious", code


def test_sandbox_can_use_its_own_directory():
  code = ("import os, shutil, tempfile\n"
          "assert os.getcwd() == '/sandbox' and tempfile.gettempdir() == os.getcwd()\n"
          "os.makedirs('a/b')\nopen('a/b/f.txt', 'w').write('x')\nshutil.rmtree('a')\n"
          "with tempfile.NamedTemporaryFile() as f:\n  f.write(b'y')\n")
  assert sandbox.run_python(code) == (True, "passed")


def test_sandbox_blocks_network():
  import socket
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(1)
  server.settimeout(0.5)
  port = server.getsockname()[1]
  connect = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"
  passed, status = sandbox.run_python(connect)
  assert not passed and status in ("failed", "error")
  # Below the guard: the sandbox's own network namespace has no route to the host's server.
  raw = (f"import _socket\ns = _socket.socket()\ntry:\n  s.connect(('127.0.0.1', {port}))\n"
         "except OSError:\n  pass\nelse:\n  raise AssertionError('connected')\n")
  assert sandbox.run_python(raw) == (True, "passed")
  with pytest.raises(socket.timeout):
    server.accept()
  server.close()
  guarded = ("import socket\ntry:\n  socket.socket()\nexcept PermissionError:\n  pass\n"
             "else:\n  raise AssertionError('socket created')\n")
  assert sandbox.run_python(guarded) == (True, "passed")


def test_sandbox_survives_memory_bomb():
  assert sandbox.run_python("x = bytearray(10**10)", memory_mb=256) == (False, "failed")
  got = metrics.pass_at_1([""], ["x = bytearray(10**10)"], tests=["assert len(x)"])
  assert got == {"pass@1": 0.0}


def test_sandbox_environment_is_minimal(monkeypatch):
  monkeypatch.setenv("REFINEDWEB_SANDBOX_PROBE", "secret")
  code = (f"import os, subprocess\nassert os.getpid() != {os.getpid()}\n"
          "assert 'REFINEDWEB_SANDBOX_PROBE' not in os.environ, sorted(os.environ)\n"
          "allowed = {'PATH', 'LANG', 'HOME', 'TMPDIR', 'LC_CTYPE', 'PWD'}\n"
          "assert set(os.environ) <= allowed, sorted(os.environ)\n"
          "try:\n  subprocess.run(['true'])\nexcept PermissionError:\n  pass\n"
          "else:\n  raise AssertionError('started a process')\n")
  assert sandbox.run_python(code) == (True, "passed")


def test_sandbox_program_cannot_exit_early_as_passed():
  assert sandbox.run_python("import sys\nsys.exit(0)\nassert False") == (False, "failed")
  assert sandbox.run_python("import os\nos._exit(0)\nassert False") == (False, "failed")


def test_sandbox_runs_as_nobody_in_a_fresh_root():
  code = ("import os\nassert os.getuid() == 65534 and os.getgid() == 65534\n"
          "assert not os.path.exists('/etc/passwd') and not os.path.exists('/root/.cache')\n"
          "assert sorted(os.listdir('/sandbox')) == []\n")
  assert sandbox.run_python(code) == (True, "passed")


def test_sandbox_blocks_attacks_through_ctypes_and_libc(tmp_path):
  keep = tmp_path / "keep.txt"
  keep.write_text("precious")
  secret = tmp_path / "secret.txt"
  secret.write_text("s3cret")
  made = tmp_path / "made_by_system"
  libc = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
  attacks = {
      "unlink": libc + f"libc.unlink({str(keep).encode()!r})",
      "open-write": libc + f"fd = libc.open({str(keep).encode()!r}, os.O_WRONLY | os.O_TRUNC)\n"
                           "libc.write(fd, b'gone', 4)",
      "system": libc + f"libc.system(b'touch {made} && rm -f {keep}')",
      "fork-bomb": libc + "for _ in range(2000):\n  libc.fork()",
  }
  for name, code in attacks.items():
    sandbox.run_python(code, timeout_s=5.0)
    assert keep.read_text() == "precious", name
    assert not made.exists(), name
  # Reading a host file: the program cannot see it, so its assert fails.
  # (A generous wall clock: right after the fork bomb, on a loaded machine, start-up is slow.)
  read = f"assert open({str(secret)!r}).read() == 's3cret'"
  assert sandbox.run_python(read, timeout_s=30.0) == (False, "failed")
  assert sandbox.run_python(libc + f"assert libc.open({str(secret).encode()!r}, 0) >= 0",
                            timeout_s=30.0) == (False, "failed")


def test_sandbox_cannot_reach_a_unix_socket_of_the_host(tmp_path):
  import socket
  path = str(tmp_path / "host.sock")
  server = socket.socket(socket.AF_UNIX)
  server.bind(path)
  server.listen(1)
  server.settimeout(0.5)
  code = f"import _socket\ns = _socket.socket(_socket.AF_UNIX)\ns.connect({path!r})"
  assert sandbox.run_python(code, timeout_s=30.0) == (False, "failed")
  with pytest.raises(socket.timeout):
    server.accept()  # nobody connected
  server.close()


def test_a_wrong_solution_that_exits_early_scores_zero():
  wrong = ("def add(a, b):\n  return a - b\n"
           "import ctypes\nctypes.CDLL(None)._exit(0)\n")
  assert metrics.pass_at_1([""], [wrong], tests=["assert add(2, 3) == 5"]) == {"pass@1": 0.0}
  assert sandbox.run_python(wrong + "assert add(2, 3) == 5") == (False, "failed")


def test_without_bwrap_pass_at_1_refuses_unless_asked(monkeypatch):
  monkeypatch.setattr(sandbox, "_bwrap_works", lambda: False)
  monkeypatch.delenv(sandbox.UNSAFE, raising=False)
  with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install -y bubblewrap"):
    sandbox.run_python("assert True")
  monkeypatch.setenv(sandbox.UNSAFE, "1")
  assert sandbox.run_python("assert True") == (True, "passed")
  assert sandbox.run_python("import os\nos._exit(0)\nassert False") == (False, "failed")


@pytest.mark.parametrize("answer, expected", [
    ({"value": ["ref", 99]}, 0.0), ({"value": ["same", 0]}, 0.0),
    ({"value": ["obj", ["Node", []]]}, 0.0), ({"value": ["new", 0, ["list", []]]}, 0.0),
    ({"sync": {"0": ["int", "0x1"]}, "value": None}, 0.0), ({"iter": "x"}, 0.0),
    ({"stop": True}, 0.0),
    ({"value": None}, 100.0)])  # a well-formed answer: what C may forge is what is tested
def test_forged_answers_on_the_wire_fail(answer, expected):
  # C writes its own frame to the answer pipe (the last argument of its command line), then
  # ends: references to objects T never shared, to classes the tests do not define, a list
  # turned into an int, or a stop outside next() fail the program.
  wrong = ("import ctypes, json, sys\n"
           "def f(xs):\n  data = json.dumps(" + repr(answer) + ").encode()\n"
           "  frame = len(data).to_bytes(4, 'big') + data\n"
           "  libc = ctypes.CDLL(None)\n  libc.write(int(sys.argv[-1]), frame, len(frame))\n"
           "  libc._exit(0)\n")
  assert score(wrong, "xs = [1]\nf(xs)\nassert True") == expected
