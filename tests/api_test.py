"""The applications API, the notebook workflow (train / evaluate / predict) and the CLI."""

import io
import json
import subprocess
import sys
import warnings

import pytest

from refinedweb_jax import api
from refinedweb_jax import cli as main
from refinedweb_jax.cli import inputs
from refinedweb_jax.data import registry
from refinedweb_jax.model import quantize
from conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory):
  """(workdir, history): a tiny model trained through the Python API."""
  workdir = str(tmp_path_factory.mktemp("api") / "run")
  config = tiny_config(tiny_data_dir)
  history = api.train(config, workdir, overrides={"train.eval_every": 6})
  return workdir, history


@pytest.fixture(scope="module")
def model(trained):
  return api.RefinedWeb.load(trained[0])


def test_train_returns_plain_history(trained):
  _, history = trained
  assert history["step"] == 6
  losses = history["history"]["train/loss"]
  assert [s for s, _ in losses] == [2, 4, 6] and all(isinstance(v, float) for _, v in losses)
  assert "eval/loss" in history["eval"] and "eval/chat/exact_match" in history["eval"]


def test_applications_send_the_task_prefixes(model, monkeypatch):
  sent = []
  monkeypatch.setattr(model, "generate", lambda prompts, **kw: sent.append(prompts) or prompts)
  model.translate("42 cats", source="en", target="de")
  model.translate(["7", "8"], source="zh", target="fr")
  model.summarize("The report.")
  model.summarization("The report.")
  model.answer("Who?", "Ada wrote it.")
  model.generate_code("add 3 to x")
  model.chat("hello")
  model.chat([{"role": "user", "content": "2 plus 3?"},
              {"role": "assistant", "content": "5"}, {"role": "user", "content": "times 2?"}])
  assert sent == [
      ["translate English to German: 42 cats"],
      ["translate Chinese to French: 7", "translate Chinese to French: 8"],
      ["summarize: The report."], ["summarize: The report."],
      "question: Who? context: Ada wrote it.", ["write python: add 3 to x"], "chat: hello",
      "chat: user: 2 plus 3? assistant: 5 user: times 2?"]


def test_methods_take_one_string_or_a_list(model):
  one = model.translate("42", source="en", target="de", max_new_tokens=6)
  many = model.translate(["42", "42", "17"], source="en", target="de", max_new_tokens=6)
  assert isinstance(one, str) and isinstance(many, list) and len(many) == 3
  assert many[0] == one == many[1]
  beams = model.generate(["chat: hello", "summarize: a b c"], beam_size=3, max_new_tokens=6)
  sampled = [model.chat("hello", temperature=1.0, seed=s, max_new_tokens=6) for s in (1, 1)]
  assert len(beams) == 2 and sampled[0] == sampled[1]
  assert model.answer(["Who?"], ["Ada wrote it."], max_new_tokens=4)[0] == model.answer(
      "Who?", "Ada wrote it.", max_new_tokens=4)


def test_long_inputs_are_truncated_with_one_line_or_rejected(trained, model, capsys):
  long_text = "summarize: " + "word " * 400
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a printed line, not a raw UserWarning
    outputs = model.generate([long_text, "summarize: a b", long_text + "word "],
                             max_new_tokens=4)
  assert len(outputs) == 3 and all(isinstance(o, str) for o in outputs)
  longest = len(model.tokenizer.encode(long_text + "word "))
  err = capsys.readouterr().err
  assert err.splitlines() == [
      f"refinedweb: 2 of 3 input(s) are longer than the model's input length 63 tokens (+EOS) "
      f"and were truncated (the longest: input 2, {longest} tokens)"]
  model.generate("summarize: a b", max_new_tokens=4)
  assert capsys.readouterr().err == ""
  strict = api.RefinedWeb.load(trained[0] + "/checkpoints", on_long_input="error")
  with pytest.raises(ValueError, match="more than the model's input length"):
    strict.generate(long_text)


def test_eval_counts_the_inputs_its_model_cuts_in_one_line(trained, model, capsys):
  """eval says how many of the split's inputs and targets the run's lengths cut (a trained
  model's lengths are fixed: no advice to change them)."""
  assert main.main(["eval", "--workdir", trained[0], "--tasks", "qa", "--examples", "0"]) == 0
  lines = [l for l in capsys.readouterr().err.splitlines() if "truncation:" in l]
  source = registry.for_config(model.config).get("qa").source("validation")  # by hand
  d = model.config.data
  long_in = sum(len(model.tokenizer.encode(source[i]["inputs"])) > d.input_length - 1
                for i in range(len(source)))
  assert long_in > 0 and len(lines) == 1
  assert lines[0].startswith(f"refinedweb: truncation: {long_in:,} input(s) and ")
  assert f"of {len(source):,} examples measured" in lines[0] and "--config" not in lines[0]


def test_bad_api_input_names_the_problem(model):
  with pytest.raises(ValueError, match="unknown target language 'xx'"):
    model.translate("hi", target="xx")
  with pytest.raises(ValueError, match="--top-p"):
    model.generate("chat: hi", top_p=2.0)
  with pytest.raises(ValueError, match="unknown decoding setting"):
    model.generate("chat: hi", beams=2)
  with pytest.raises(ValueError, match="input 1 is empty"):
    model.generate(["chat: hi", " "])
  with pytest.raises(ValueError, match="must end with a user message"):
    model.chat(["hi", "hello"])


def test_a_decode_length_that_cannot_fit_in_memory_is_one_line(trained, capsys):
  workdir, _ = trained
  argv = ["generate", "--workdir", workdir, "--text", "chat: hi", "--max-new-tokens", "100000000"]
  assert main.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "--max-new-tokens=100000000 needs ~" in err, err
  assert "allowed: at most" in err


def test_an_eval_decode_length_that_cannot_fit_fails_before_training(tiny_data_dir, tmp_path):
  config = tiny_config(tiny_data_dir)
  config.train.max_decode_length = 100000000
  with pytest.raises(ValueError, match="config.train.max_decode_length=100000000 needs ~"):
    api.train(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists() or not any(
      (tmp_path / "run" / "checkpoints").iterdir())


def test_evaluate_and_predict_return_plain_python(trained):
  workdir, _ = trained
  metrics = api.evaluate(workdir, examples=2)
  assert isinstance(metrics["eval/loss"], float)
  out = api.predict(workdir, ["42", "7"], task="translate_en_fr", beam_size=2,
                    max_new_tokens=5)
  assert isinstance(out, list) and all(isinstance(o, str) for o in out)


def test_cli_generate_decoding_flags_and_input_file(trained, tmp_path, capsys):
  workdir, _ = trained
  path = tmp_path / "inputs.txt"
  path.write_text("42\n7\n12\n", encoding="utf-8")
  args = ["generate", "--workdir", workdir, "--task", "translate_en_de", "--input", str(path),
          "--max-new-tokens", "5", "--batch-size", "2"]
  assert main.main(args + ["--temperature", "0.8", "--top-k", "5", "--seed", "3"]) == 0
  first = capsys.readouterr().out.splitlines()
  assert main.main(args + ["--temperature", "0.8", "--top-k", "5", "--seed", "3"]) == 0
  assert capsys.readouterr().out.splitlines() == first and len(first) == 3
  assert main.main(args + ["--beam", "3", "--length-penalty", "1.0"]) == 0
  assert len(capsys.readouterr().out.splitlines()) == 3


def test_cli_generate_reads_a_jsonl_field_whole(trained, model, tmp_path, capsys):
  """--input FILE --input-field KEY: one input per JSON object, its newlines kept."""
  workdir, _ = trained
  dialogue = "#Person1#: Hi, how are you?\n#Person2#: Fine, thanks.\n#Person1#: Good to hear."
  path = tmp_path / "dialogues.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in (
      {"id": 1, "dialogue": dialogue}, {"id": 2, "dialogue": "a b c"})), encoding="utf-8")
  args = ["generate", "--workdir", workdir, "--task", "summarize", "--input", str(path),
          "--max-new-tokens", "5"]
  assert main.main(args + ["--input-field", "dialogue"]) == 0
  want = model.summarize([dialogue, "a b c"], max_new_tokens=5)
  assert capsys.readouterr().out == "".join(f"{text}\n" for text in want)
  for flags, message in ((["--input-field", "summary"], "line 1 has no key 'summary' for "
                          "--input-field; it has: dialogue, id"),
                         (["--input-field", "id"], "line 1 field 'id' is int, not a string")):
    assert main.main(args + flags) == 2
    assert message in capsys.readouterr().err
  path.write_text(dialogue + "\n", encoding="utf-8")
  assert main.main(args + ["--input-field", "dialogue"]) == 2
  assert "line 1 is not JSON" in capsys.readouterr().err


def test_int8_weights_decode_through_the_api_and_the_cli(trained, model, capsys):
  workdir, _ = trained
  int8 = api.RefinedWeb.load(workdir, weights="int8")
  assert quantize.is_quantized(int8.decode_params) and not quantize.is_quantized(model.params)
  prompts = ["translate English to German: 42", "chat: hello", "summarize: a b c"]
  full, small = model.generate(prompts, max_new_tokens=6), int8.generate(prompts,
                                                                          max_new_tokens=6)
  assert len(small) == 3 and all(isinstance(s, str) for s in small)
  assert sum(a == b for a, b in zip(full, small)) >= 2  # a 6-step tiny model: near ties
  assert main.main(["generate", "--workdir", workdir, "--text", "hello", "--weights", "int8",
                    "--max-new-tokens", "4"]) == 0
  assert len(capsys.readouterr().out.splitlines()) == 1
  with pytest.raises(ValueError, match="weights='int4'; allowed: float32, int8"):
    api.RefinedWeb.load(workdir, weights="int4")


def test_cli_chat_keeps_the_conversation(trained, monkeypatch, capsys):
  seen = []
  original = api.RefinedWeb.chat

  def spy(self, turns, **kw):
    seen.append(list(turns))
    return original(self, turns, **kw)

  monkeypatch.setattr(api.RefinedWeb, "chat", spy)
  monkeypatch.setattr(sys, "stdin", io.StringIO("2 plus 3?\ntimes 2?\n/reset\nhello\n/exit\n"))
  assert main.main(["chat", "--workdir", trained[0], "--max-new-tokens", "4"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[2] == "(conversation reset)"  # /reset answers
  replies = lines[:2] + lines[3:]
  assert len(replies) == 3
  assert seen[0] == ["2 plus 3?"] and seen[1][0::2] == ["2 plus 3?", "times 2?"]
  assert seen[1][1] == (replies[0].strip() or "...") and seen[2] == ["hello"]


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--beam", "0"], "--beam must be >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--task", "poetry"], "unknown task 'poetry'"),
    (["--beam", "2", "--temperature", "0.5"], "exclude each other"),
])
def test_bad_flags_fail_before_loading_any_checkpoint(flags, message, tmp_path, capsys):
  # The workdir has no checkpoint: the flag error must come first.
  for command in ("generate", "chat"):
    if command == "chat" and "--task" in flags:
      continue
    argv = [command, "--workdir", str(tmp_path), "--text", "chat: hi"] + flags
    argv = argv if command == "generate" else [a for a in argv if a not in ("--text",
                                                                           "chat: hi")]
    assert main.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_invalid_utf8_input_file_is_one_line_error(tmp_path, capsys):
  path = tmp_path / "bad.txt"
  path.write_bytes(b"ok\n\xff bad\n")
  assert main.main(["generate", "--workdir", str(tmp_path), "--input", str(path)]) == 2
  err = capsys.readouterr().err
  assert "not valid UTF-8" in err and "Traceback" not in err


def test_a_byte_order_mark_is_no_input_text(tmp_path):
  path = tmp_path / "inputs.txt"
  path.write_bytes("\ufeffchat: hello\nchat: hi\n".encode("utf-8"))
  assert inputs.file_lines(str(path)) == ["chat: hello", "chat: hi"]


def test_text_the_tokenizer_cannot_take_and_files_without_tests_are_one_line(trained, tmp_path):
  """Once tracebacks: chat with non-UTF-8 bytes on stdin, generate with an undecodable byte in
  --text (a lone surrogate once in Python), and pass@1 asked of a TSV (no tests to run)."""
  workdir = trained[0]
  good = tmp_path / "good.tsv"
  good.write_text("a\tb\n")
  for argv, stdin, message in (
      (["chat", "--workdir", workdir], b"hello \xff\n", "stdin line 1 is not valid UTF-8"),
      (["generate", "--workdir", workdir, "--text", "caf\udce9"], b"",
       "text is not valid UTF-8"),
      (["eval", "--workdir", workdir, "--input", str(good), "--task-metrics", "pass@1"], b"",
       "has none: it needs a jsonl file with a tests field")):
    out = subprocess.run([sys.executable, "-m", "refinedweb_jax.cli"] + argv, input=stdin,
                         capture_output=True, timeout=300)
    err = out.stderr.decode("utf-8", "replace")
    assert out.returncode == 2 and message in err, err[-2000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-2000:]
