"""Every command and code line of README.md and docs/ is one a user can run as written: the
cheap ones run here (decoding, evaluation, the Python API on a tiny run at the Quick start's
workdir, attention-mask, the TPU scripts' dry runs); the rest are checked to parse (bash -n,
the command line's own parser and config keys, Python's ast) and to name files that exist."""

import ast
import io
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from refinedweb_jax import api, cli, configs
from refinedweb_jax.cli import parser
from refinedweb_jax.data import fetch
from conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
COMMAND_RE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def _blocks(lang: str) -> list:
  """(file:line, text) of every ```lang block."""
  found = []
  for path in FILES:
    text = path.read_text(encoding="utf-8")
    for m in COMMAND_RE.finditer(text):
      if m.group(1) == lang:
        line = text[:m.start()].count("\n") + 1
        found.append((f"{path.relative_to(ROOT)}:{line}", m.group(2)))
  return found


def _segments(block: str) -> list:
  """The simple commands of a bash block: [(env, words, stdin producer or None)], with
    `NAME="..."` assignments made earlier in the block expanded in $NAME and `export`s in env."""
  names, exported, found = {}, {}, []
  for line in block.replace("\\\n", " ").splitlines():
    lex = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lex.whitespace_split = True
    words, parts = [], []
    for word in lex:
      if word in ("|", "&&", ";", "||"):
        parts.append((word, words))
        words = []
      else:
        words.extend(shlex.split(names[word[1:]]) if word[1:] in names else [word])
    parts.append((None, words))
    producer = None
    for joint, words in parts:
      env = dict(exported)
      while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
      if words[:1] == ["export"]:
        key, _, value = words[1].partition("=")
        exported[key] = os.path.expanduser(value)
      elif not words and len(env) > len(exported):  # NAME="..." alone: a shell variable
        names.update((k, v) for k, v in env.items() if k not in exported)
      elif words:
        found.append((env, words, producer))
      producer = words if joint == "|" else None
  return found


def _readme_config(argv: list):
  """The config a `refinedweb` command's --config.KEY=VALUE flags apply to, or None when its
  file reads a public dataset that is not here (then only the file's existence is checked)."""
  spec = argv[argv.index("--config") + 1] if "--config" in argv else None
  if spec is None or not spec.startswith("experiments/"):
    return configs.default_config()
  assert (ROOT / spec.split(":")[0]).is_file(), spec
  try:
    return configs.load_config(str(ROOT / spec))
  except ValueError as e:  # the config file's fetch.require, in load_config's words
    if "is missing from" in str(e) and fetch.ENV in str(e):
      return None
    raise


def _check_refinedweb(where: str, env: dict, argv: list):
  argv = [w[1:-1] if w.startswith("[--") and w.endswith("]") else w for w in argv]  # [--flag]
  command, args, overrides = parser.parse(argv)
  if command is not None and command.config != "none":
    config = _readme_config(argv)
    for key, value in overrides if config is not None else ():
      if not key.startswith("sweep."):
        configs.apply_override(config, key, value)
  mesh = {key.split(".")[1]: int(v) for key, v in overrides if key.startswith("mesh.")}
  if mesh and not any(key.startswith("distributed.") for key, _ in overrides):
    # The mesh must fit the devices this line gives one machine (its XLA_FLAGS, if any).
    code = (f"from refinedweb_jax import sharding; sharding.make_mesh(**{mesh!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu", **env})
    assert out.returncode == 0, f"{where}: {shlex.join(argv)}: {out.stderr.strip()[-200:]}"


def test_every_command_parses_and_names_what_exists():
  """bash -n for every bash block; each `refinedweb` command through the command line's
  parser and its --config.KEY=VALUE flags through the config; scripts and files exist."""
  checked = 0
  for where, block in _blocks("bash"):
    out = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
    assert out.returncode == 0, f"{where}: {out.stderr}"
    for env, words, _ in _segments(block):
      if words[0] == "refinedweb":
        try:
          _check_refinedweb(where, env, words[1:])
        except (parser.UserError, ValueError) as e:
          pytest.fail(f"{where}: {shlex.join(words)}: {e}")
        checked += 1
      elif words[0] == "python" and words[1].endswith(".py"):
        assert (ROOT / words[1]).is_file(), f"{where}: {words[1]}"
      elif words[:3] == ["pip", "install", "-r"]:
        assert all((ROOT / w).is_file() for w in words[3:] if w.endswith(".txt")), where
      elif words[0].startswith("experiments/"):
        assert (ROOT / words[0]).is_file(), f"{where}: {words[0]}"
  assert checked >= 40, checked


def test_inline_commands_parse():
  """`refinedweb ...` in the text, with its flags, is a command the parser takes."""
  bad = []
  for path in FILES:
    for span in re.findall(r"`(refinedweb [^`]*--[^`]*)`", path.read_text(encoding="utf-8")):
      words = shlex.split(" ".join(span.split()))
      try:
        parser.parse(words[1:])
      except SystemExit as e:  # --help
        assert e.code == 0, span
      except parser.UserError as e:
        if not (words[-1].startswith("--") and "expected one argument" in str(e)):
          bad.append(f"{path.name}: {span}: {e}")  # else a flag named, not a command
  assert not bad, bad


def test_python_blocks_parse_and_name_what_the_api_has():
  """Every ```python block parses; rw.NAME and model.NAME exist in the API."""
  for where, block in _blocks("python"):
    tree = ast.parse(block, filename=where)
    for node in ast.walk(tree):
      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id == "rw":
          assert hasattr(api, node.attr), f"{where}: rw.{node.attr}"
        elif node.value.id == "model":
          assert hasattr(api.RefinedWeb, node.attr), f"{where}: model.{node.attr}"


def _api_block() -> str:
  [(_, block)] = [(w, b) for w, b in _blocks("python") if "rw.RefinedWeb.load" in b]
  return block


def _quick_start() -> str:
  readme = (ROOT / "README.md").read_text(encoding="utf-8")
  start = readme.index("## Quick start")
  return readme[start:readme.index("\n## ", start + 1)]


def test_the_notebook_train_line_does_not_shrink_the_quick_start_run():
  """rw.train(..., num_steps=200) on a workdir the Quick start trains to 800 steps is refused:
  the API example trains a workdir of its own."""
  trained = {words[words.index("--workdir") + 1] for lang, block in _block_texts(_quick_start())
             if lang == "bash" for _, words, _ in _segments(block)
             if words[:2] == ["refinedweb", "train"]}
  assert "runs/demo" in trained
  calls = [n for n in ast.walk(ast.parse(_api_block())) if isinstance(n, ast.Call)
           and ast.unparse(n.func) == "rw.train"]
  assert calls and all(ast.literal_eval(c.args[1]) not in trained for c in calls)


def _block_texts(markdown: str) -> list:
  return [(m.group(1), m.group(2)) for m in COMMAND_RE.finditer(markdown)]


def test_the_quick_start_shows_decoding_before_the_tests():
  quick = _quick_start()
  assert quick.index("refinedweb generate --workdir runs/demo") < quick.index(
      "python -m pytest -q -n 2")


def test_colab_and_its_docs_page_describe_the_default_job():
  """The Colab notebook and docs/tpu-and-colab.md's Colab section name the default job's preset
  and steps."""
  default = configs.default_config()
  job = (f"the `{default.model.preset}` model", f"{default.train.num_steps} steps")
  notebook = (ROOT / "experiments" / "colab.ipynb").read_text(encoding="utf-8")
  page = (ROOT / "docs" / "tpu-and-colab.md").read_text(encoding="utf-8")
  colab = page[page.index("## Colab"):]
  for name, text in (("colab.ipynb", notebook), ("docs/tpu-and-colab.md's Colab section", colab)):
    said = re.findall(r"the `(\w+)` model, (?:[\d.]+M parameters, )?([\d,]+) steps", text)
    assert said and all(f"the `{p}` model" == job[0] and f"{n} steps" == job[1]
                        for p, n in said), (name, said, job)


def _run_line(env: dict, words: list, producer, monkeypatch, capsys):
  """One README line through cli.main in this process, a piped producer's output on stdin."""
  data = b""
  if producer:
    data = subprocess.run(producer, capture_output=True, check=True).stdout
  monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
  code = cli.main(words[1:])
  out, err = capsys.readouterr()
  assert code == 0, f"{shlex.join(words)}: {err}"
  return out


def test_the_cheap_commands_run_as_written(tiny_data_dir, tmp_path, monkeypatch, capsys):
  """A tiny run stands at the Quick start's runs/demo; then the decoding, chat, eval and API
  lines of README and docs/ after the Quick start run exactly as written (rw.train is checked
  above)."""
  monkeypatch.chdir(tmp_path)
  config = tiny_config(tiny_data_dir)
  flags = [f"--config.{k}={v}" for k, v in (
      ("model.preset", "tiny"), ("data.data_dir", tiny_data_dir),
      ("data.num_train", config.data.num_train), ("data.num_validation", 40),
      ("data.num_test", 20), ("data.vocab_size", 600), ("data.input_length", 64),
      ("data.target_length", 32), ("data.batch_size", 8), ("train.num_steps", 2),
      ("train.eval_every", 2), ("train.checkpoint_every", 2), ("train.eval_examples", 4),
      ("train.decode_examples_per_task", 1), ("train.max_decode_length", 8),
      ("train.progress_bar", "false"), ("train.async_checkpointing", "false"),
      ("mixture.tasks", "translate_en_de,translate_en_fr,translate_fr_en,translate_en_zh,"
                        "summarize,qa,code,chat"))]  # the tasks README's lines name
  assert cli.main(["train", "--workdir", "runs/demo"] + flags) == 0
  (tmp_path / "sentences.txt").write_text("42\n7 dogs\n")
  capsys.readouterr()
  ran = 0
  for where, block in _blocks("bash"):
    for env, words, producer in _segments(block):
      cheap = words[:1] == ["refinedweb"] and "runs/demo" in words and words[1] in (
          "generate", "chat", "eval")
      if cheap or words[:2] == ["refinedweb", "attention-mask"]:
        _run_line(env, words, producer, monkeypatch, capsys)
        ran += 1
  assert ran >= 9 and (tmp_path / "mask.png").is_file()
  # The Python API block, but for its rw.train line.
  tree = ast.parse(_api_block())
  body = [n for n in tree.body if "rw.train(" not in ast.unparse(n)]
  scope = {"document": "On day 2, Laura climbed a hill in Dublin.", "context":
           "Mount Dordormesa is 5482 metres high."}
  for node in body:
    if "rw.evaluate(" in ast.unparse(node):
      results = eval(compile(ast.Expression(node.value), "README", "eval"), scope)
    else:
      exec(compile(ast.Module([node], []), "README", "exec"), scope)
  said = re.search(r'rw\.evaluate\("runs/demo", split="test"\)\s+# \{"([^"]+)"', _api_block())
  assert said and said.group(1) in results, (said and said.group(1), sorted(results)[:5])


def test_the_tpu_examples_dry_run_as_written():
  """The Cloud TPU lines, with their exported REFINEDWEB_REPO, print their gcloud commands."""
  ran, exported = 0, {}  # the later TPU lines use the REFINEDWEB_REPO exported before
  for where, block in _blocks("bash"):
    for env, words, _ in _segments(block):
      exported.update((k, v) for k, v in env.items() if k.startswith("REFINEDWEB_"))
      env = {**exported, **env}
      if words[0].startswith("experiments/tpu/"):
        out = subprocess.run(["bash", str(ROOT / words[0]), *words[1:], "--dry-run"],
                             capture_output=True, text=True, timeout=60,
                             env={"PATH": os.defpath, **env})
        assert out.returncode == 0 and out.stdout.startswith("gcloud "), f"{where}: {out.stderr}"
        ran += 1
  assert ran >= 3
