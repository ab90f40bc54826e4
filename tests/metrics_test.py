"""Metrics against their reference libraries, SQuAD normalisation, and the pass@1 sandbox."""

import gzip
import json
import os
import time

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from refinedweb_jax.evaluate import metrics
from refinedweb_jax.evaluate import sandbox

DATA = os.environ.get("REFINEDWEB_SHARED_DATA",
                      os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
needs_data = pytest.mark.skipif(
    not os.path.isdir(DATA), reason=f"shared data not found at {os.path.abspath(DATA)} "
                                    "(set REFINEDWEB_SHARED_DATA to its path)")

EN_TARGETS = ["The cat sat on the mat.", "A man is riding a bicycle down the street.",
              "Two dogs are playing in the snow.", "She reads the newspaper every morning."]
EN_PREDICTIONS = ["The cat is sitting on the mat.", "A man rides a bike down the street.",
                  "Two dogs play in snow.", "Every morning she reads a newspaper."]
DE_TARGETS = ["Ein Mann fährt mit dem Fahrrad die Straße entlang.",
              "Zwei Hunde spielen im Schnee.", "Die Katze sitzt auf der Matte."]
DE_PREDICTIONS = ["Ein Mann fährt ein Fahrrad die Straße hinunter.",
                  "Zwei Hunde spielen im Schnee.", "Die Katze saß auf einer Matte."]
ZH_TARGETS = ["我每天早上都喝咖啡。", "他们在公园里踢足球。", "这本书非常有意思。"]
ZH_PREDICTIONS = ["我每天早上喝咖啡。", "他们在公园踢足球。", "这本书很有意思。"]


def test_bleu_matches_sacrebleu():
  for targets, predictions in [(EN_TARGETS, EN_PREDICTIONS), (DE_TARGETS, DE_PREDICTIONS)]:
    expected = sacrebleu.corpus_bleu(predictions, [targets]).score
    assert 0 < expected < 100
    assert metrics.bleu(targets, predictions) == {"bleu": pytest.approx(expected)}
    assert metrics.bleu(targets, predictions, language="de")["bleu"] == pytest.approx(expected)


def test_bleu_chinese_uses_zh_tokenizer():
  expected = sacrebleu.corpus_bleu(ZH_PREDICTIONS, [ZH_TARGETS], tokenize="zh").score
  got = metrics.bleu(ZH_TARGETS, ZH_PREDICTIONS, language="zh")["bleu"]
  assert got == pytest.approx(expected)
  # Without it each unspaced sentence is one or two tokens and nearly nothing matches.
  assert got > metrics.bleu(ZH_TARGETS, ZH_PREDICTIONS, language="en")["bleu"] + 20


def test_chrf_matches_sacrebleu():
  for targets, predictions in [(EN_TARGETS, EN_PREDICTIONS), (DE_TARGETS, DE_PREDICTIONS),
                               (ZH_TARGETS, ZH_PREDICTIONS)]:
    expected = sacrebleu.corpus_chrf(predictions, [targets]).score
    assert metrics.chrf(targets, predictions) == {"chrf": pytest.approx(expected)}


def test_rouge_matches_rouge_score():
  targets = EN_TARGETS + ["Running runners ran quickly; the runner's shoes were running-shoes."]
  predictions = EN_PREDICTIONS + ["The runners were running quick with shoes on."]
  scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
  scores = [scorer.score(t, p) for t, p in zip(targets, predictions)]
  got = metrics.rouge(targets, predictions)
  assert set(got) == {"rouge1", "rouge2", "rougeL"}
  for name in got:
    expected = 100 * sum(s[name].fmeasure for s in scores) / len(scores)
    assert got[name] == pytest.approx(expected)


def test_rouge_chinese_counts_characters():
  # 3 of 4 characters shared: unigram P = R = 3/4; bigrams 我喜, 喜欢 of 3; LCS 3.
  got = metrics.rouge(["我喜欢猫"], ["我喜欢狗"])
  assert got == {"rouge1": pytest.approx(75.0), "rouge2": pytest.approx(200 / 3),
                 "rougeL": pytest.approx(75.0)}
  assert metrics.CJKTokenizer().tokenize("我用Python running") == ["我", "用", "python", "run"]


@pytest.mark.parametrize("target, prediction", [
    ("cat", "The Cat!"), ("an apple", "apple"), ("a dog", "the   dog."),
    ("Paris, France", "paris france"), ("New\tYork", " new york "), ("1,000", "1000"),
    ("北京大学", "北京 大学。"),
])
def test_squad_normalisation_exact_match(target, prediction):
  assert metrics.squad([target], [prediction]) == {"exact_match": 100.0, "f1": 100.0}


def test_squad_partial_overlap_and_multiple_answers():
  # Prediction tokens {denver, broncos, won} vs {broncos}: P = 1/3, R = 1, F1 = 0.5.
  assert metrics.squad(["Broncos"], ["Denver Broncos won"]) == {"exact_match": 0.0, "f1": 50.0}
  # Best of the answers: "Denver Broncos" has P = 2/3, R = 1, F1 = 0.8.
  got = metrics.squad([["Broncos", "the Denver Broncos"]], ["Denver Broncos won"])
  assert got == {"exact_match": 0.0, "f1": pytest.approx(80.0)}
  # Two examples averaged: one exact, one with no overlap.
  assert metrics.squad(["a cat", ["dog"]], ["cat", "bird"]) == {"exact_match": 50.0, "f1": 50.0}
  # Chinese: characters are tokens; 2 of 3 predicted, 2 of 4 expected: F1 = 2 * 2/3 * 1/2 / (7/6).
  got = metrics.squad(["北京大学"], ["北京市"])
  assert got["exact_match"] == 0.0 and got["f1"] == pytest.approx(100 * 4 / 7)


def test_mismatched_lengths_raise():
  with pytest.raises(ValueError, match="2 targets and 1 predictions"):
    metrics.bleu(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="1 tests for 2 predictions"):
    metrics.pass_at_1(["a", "b"], ["a", "b"], tests=["assert True"])
  with pytest.raises(ValueError, match="no acceptable answers"):
    metrics.squad([[]], ["x"])
  with pytest.raises(ValueError, match="timeout_s must be > 0, got 0"):
    sandbox.run_python("pass", timeout_s=0)


@needs_data
def test_pass_at_1_canonical_solutions_pass():
  with open(os.path.join(DATA, "mbpp", "mbpp_sanitized.jsonl"), encoding="utf-8") as f:
    mbpp = [json.loads(line) for line, _ in zip(f, range(10))]
  humaneval_path = os.path.join(DATA, "humaneval", "HumanEval.jsonl.gz")
  with gzip.open(humaneval_path, "rt", encoding="utf-8") as f:
    humaneval = [json.loads(line) for line, _ in zip(f, range(5))]
  predictions = [p["code"] for p in mbpp]
  tests = [p["test_setup_code"] + "\n" + "\n".join(p["test_list"]) for p in mbpp]
  predictions += [p["prompt"] + p["canonical_solution"] for p in humaneval]
  tests += [p["test"] + f"\ncheck({p['entry_point']})" for p in humaneval]
  assert metrics.pass_at_1(predictions, predictions, tests) == {"pass@1": 100.0}
  wrong = "def similar_elements(a, b):\n  return tuple(a)\n"
  assert metrics.pass_at_1([""], [wrong], tests[:1]) == {"pass@1": 0.0}


def test_pass_at_1_counts_failures():
  predictions = ["def add(a, b):\n  return a + b", "def add(a, b):\n  return a - b",
                 "def add(a, b)\n  return a + b"]
  tests = ["assert add(2, 3) == 5"] * 3
  assert metrics.pass_at_1(predictions, predictions, tests)["pass@1"] == pytest.approx(100 / 3)
  assert sandbox.run_python(predictions[1] + "\n" + tests[1]) == (False, "failed")


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
