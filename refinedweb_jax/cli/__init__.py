"""The `refinedweb` command line: parse, validate, dispatch."""

import argparse
import logging
import os
import shlex
import sys

from refinedweb_jax.cli import commands
from refinedweb_jax.cli.commands import FORMATS, UserError

USAGE = """refinedweb COMMAND [flags] [--config path/to/config.py[:arg]] [--config.key=value ...]
refinedweb --version;  refinedweb COMMAND --help

commands:
  prepare   generate the built-in corpus (TFDS, array_record) and train its tokenizer; with
            --task NAME --train FILE..., make a task of your own files (then usable by name)
  train     train (and evaluate) in --workdir, resuming from its newest checkpoint
  eval      evaluate the newest checkpoint in --workdir on the validation or test split, or
            on any file with references (--input FILE); predictions go to a jsonl file
  config    print the resolved config: a run's (--workdir W) or a config file's with overrides
  generate  decode inputs from --text, --input FILE or stdin (one per line) with a trained
            --workdir: greedy, --beam N, or sampling (--temperature, --top-k, --top-p)
  chat      talk with a trained --workdir; the conversation is kept (/reset, /exit)
  distill   knowledge distillation: `distill dump --teacher RUN --out DIR` stores a teacher's
            top-k logits, `distill train --logits DIR --workdir W` trains a student on them
  sweep     run an experiment's ablation arms (get_sweep) one after another, each in its own
            workdir: --config FILE[:arg] --workdir DIR [--arms a,b] [--dry-run] [--shard i/n];
            `sweep report DIR` writes results.md / results.csv and plots
  import-hf convert a Hugging Face T5-family model directory (config.json, model.safetensors,
            spiece.model) into a run directory: `import-hf DIR --workdir W`
  export-hf write a t5_bias run as a Hugging Face T5: `export-hf --workdir W --out DIR`
  attention-mask
            draw an attention pattern as an image: --kind K --length N --out mask.png [sizes]
  fetch     download the public datasets the experiments read (Multi30k, Tatoeba cmn-eng,
            DialogSum, XQuAD, MBPP, HumanEval), checksummed: `fetch [NAME ...] [--out DIR]`
"""
COMMANDS = ("prepare", "train", "eval", "config", "generate", "chat", "distill", "sweep",
            "import-hf", "export-hf", "attention-mask", "fetch")
RUN_COMMANDS = ("eval", "generate", "chat")  # use a trained run's own config
DISTILL_COMMANDS = ("dump", "train")
STANDALONE = ("attention-mask", "fetch")  # commands that take no --config


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UserError(message)


def _overrides_help() -> str:
  from refinedweb_jax import configs
  keys = ", ".join(configs.default_config().keys())
  return (
      "config: the built-in default (refinedweb_jax/configs.py), or --config "
      "path/to/experiment.py[:ARG] (its get_config(ARG)); then any --config.KEY=VALUE, each "
      "type-checked against the config, e.g. --config.model.preset=tiny "
      f"--config.train.num_steps=50. Top-level keys: {keys}. `refinedweb config [--config F] "
      "[--config.KEY=VALUE ...]` prints the resolved config, `refinedweb config --workdir W` "
      "a run's. The same --workdir again resumes the run: its model, tokenizer, data and seed "
      "stay; train.*, optimizer.* (not its name), loss.* and mesh.* may change (printed). "
      "More train.num_steps continue a finished run; its learning-rate schedule then spans "
      "the new num_steps unless train.schedule_steps keeps the old length.")


def _parser(command: str) -> argparse.ArgumentParser:
  epilog = _overrides_help() if command in ("train", "distill train", "config") else None
  p = _Parser(prog=f"refinedweb {command}", allow_abbrev=False, epilog=epilog)
  if command == "attention-mask":
    return _mask_parser(p)
  if command == "fetch":
    return _fetch_parser(p)
  p.add_argument("--config", default=None, help="path/to/config.py[:arg] (default: built-in)"
                 + ("; not taken: these commands use the run's own config, changed only by "
                    "--config.KEY=VALUE" if command in RUN_COMMANDS else ""))
  if command == "distill dump":
    p.add_argument("--teacher", required=True, help="the teacher's run directory")
    p.add_argument("--out", required=True, help="directory for the logits (resumable)")
    p.add_argument("--sequence-kd", action="store_true",
                   help="also store the teacher's decoded outputs (sequence-level KD)")
  if command == "distill train":
    p.add_argument("--logits", default=None, help="directory from `distill dump`")
    p.add_argument("--workdir", required=True, help="the student's run directory")
    p.add_argument("--teacher", default=None,
                   help="teacher run directory, for config.distill.online=True")
  if command in ("train", "eval", "generate", "chat", "import-hf", "export-hf"):
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, logs)")
  if command == "config":
    p.add_argument("--workdir", default=None, help="show this run's config")
  if command == "import-hf":
    p.add_argument("model_dir", help="a local Hugging Face T5, T5 v1.1, Flan-T5 or mT5 directory")
  if command == "export-hf":
    p.add_argument("--out", required=True, help="new directory for the Hugging Face model")
  if command == "prepare":
    p.add_argument("--task", default=None, help="build a task from your own files instead; "
                   "it is recorded in data.data_dir, so --config.mixture.tasks=TASK finds it")
    for split in ("train", "validation", "test"):
      p.add_argument(f"--{split}", nargs="+", default=None,
                     help="files; for text, source and target files in pairs")
    _file_flags(p)
    p.add_argument("--prefix", default=None, help="inputs prefix (default: 'TASK: ')")
    p.add_argument("--skip-malformed", action="store_true",
                   help="skip bad lines (reported with file:line) instead of failing")
    p.add_argument("--max-line-bytes", type=int, default=None,
                   help="longer lines are reported as problems (default: 1 MiB)")
    p.add_argument("--split", default=None, metavar="SPLIT=FRACTION,...",
                   help="carve validation and/or test from the train files, e.g. "
                        "validation=0.05,test=0.05: round(fraction x examples) each, at least "
                        "1, train the rest (fewer examples than splits fail); no overlap; "
                        "the same examples for the same files and --seed")
    p.add_argument("--seed", type=int, default=None,
                   help="with --split: which examples are carved (default 0)")
  if command == "eval":
    p.add_argument("--split", default="validation", choices=("validation", "test"))
    p.add_argument("--examples", type=int, default=None,
                   help="examples per task for the decoded metrics (-1 = the whole split; "
                        "default: the config's train.decode_examples_per_task)")
    p.add_argument("--tasks", default=None, help="comma-separated tasks to evaluate "
                   "(default: the run's eval tasks)")
    p.add_argument("--input", default=None, help="evaluate on this file of inputs and "
                   "references instead (tsv, text pairs, jsonl, squad), every example")
    p.add_argument("--task", default=None, help="with --input: the file's examples are this "
                   "task's (its prefix, metrics and language)")
    p.add_argument("--prefix", default=None, help="with --input: inputs prefix (default: "
                   "--task's, else none)")
    p.add_argument("--name", default=None, help="with --input: the name its metrics and "
                   "predictions go under (default: the file's; test.tsv and the like get "
                   "their folder's name in front)")
    _file_flags(p)
  if command == "generate":
    p.add_argument("--text", action="append", help="input text; repeat for several; "
                   "without it (and --input), one input per line on stdin")
    p.add_argument("--input", default=None, help="a UTF-8 file with one input per line")
    p.add_argument("--task", default=None, help="prefix each input with this task's prefix "
                   "(own or public tasks: pass the experiment's --config)")
    p.add_argument("--batch-size", type=int, default=16, help="inputs decoded together")
  if command in ("generate", "chat"):
    _decoding_flags(p)
  return p


def _file_flags(p):
  """How to read own files (prepare --task, eval --input)."""
  p.add_argument("--format", default=None, choices=FORMATS,
                 help="default: from the file suffix (.tsv, .jsonl, .json = squad, else text)")
  p.add_argument("--input-field", default=None, help="jsonl: the input's key")
  p.add_argument("--target-field", default=None, help="jsonl: the target's key")
  p.add_argument("--columns", default="0,1", help="tsv: input,target column numbers (0-based; "
                 "other columns are ignored)")
  p.add_argument("--metrics", "--task-metrics", default=None, dest="metrics",
                 help="comma-separated, of: bleu, chrf, rouge, squad, pass@1, exact_match "
                      "(default: squad for squad files, else bleu,chrf)")
  p.add_argument("--language", default=None, help="the targets' language (en, de, fr, zh; "
                 "zh: BLEU tokenizes Chinese; default en)")


def _decoding_flags(p):
  p.add_argument("--max-new-tokens", type=int, default=None,
                 help="default: the config's train.max_decode_length")
  p.add_argument("--beam", type=int, default=1, help="beam size (1 = no beam search)")
  p.add_argument("--length-penalty", type=float, default=0.6,
                 help="beam search's alpha in ((5 + length) / 6) ** alpha (t5x style) or "
                      "length ** alpha (hf style)")
  p.add_argument("--length-penalty-style", default="t5x", choices=("t5x", "hf"),
                 help="t5x (GNMT's penalty, T5X's beam search) or hf (Hugging Face generate's)")
  p.add_argument("--temperature", type=float, default=0.0, help="> 0 samples; 0 = greedy")
  p.add_argument("--top-k", type=int, default=0, help="sample from the k best (0 = all)")
  p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1]")
  p.add_argument("--seed", type=int, default=0, help="sampling seed")
  p.add_argument("--weights", default="float32", choices=("float32", "int8"),
                 help="int8: weights quantized per output channel, activations per row, "
                      "int8 matmuls (faster on CPU; see README, Decoding speed)")


def _mask_parser(p):
  from refinedweb_jax import plots
  from refinedweb_jax.model.attention import kinds
  p.add_argument("--kind", required=True, help=f"one of: {', '.join(kinds.ATTENTION_KINDS)}")
  p.add_argument("--length", type=int, required=True, help="sequence length")
  p.add_argument("--out", required=True, help="image path, e.g. mask.png")
  p.add_argument("--causal", action="store_true", help="keep only keys <= query")
  # One flag per size option of the kinds (kinds.SIZES), with its default and help.
  for name, size in plots.pattern_sizes().items():
    p.add_argument(f"--{name.replace('_', '-')}", type=type(size.default), default=size.default,
                   dest=name, choices=size.choices or None,
                   metavar=None if size.choices else "N" if isinstance(size.default, int)
                   else "TEXT",
                   help=f"{size.help} (default: %(default)s)")
  return p


def _fetch_parser(p):
  from refinedweb_jax.data import fetch
  p.add_argument("names", nargs="*", metavar="NAME",
                 help=f"datasets to fetch (default: all): {', '.join(fetch.NAMES)}")
  p.add_argument("--out", default=None, help=f"the data folder (default: ${fetch.ENV}, else "
                 f"{fetch.default_out()})")
  p.add_argument("--source", default=None, help="a mirror instead of GitHub: a URL or folder "
                 "laid out like upstream (OWNER/REPO/COMMIT/PATH) or like the data folder")
  return p


def parse(argv):
  """argv (without program name) -> (command, args, config)."""
  if not argv or argv[0] in ("-h", "--help"):
    print(USAGE)
    raise SystemExit(0 if argv else 2)
  if argv[0] in ("--version", "-V"):
    from refinedweb_jax import __version__
    print(f"refinedweb_jax {__version__}")
    raise SystemExit(0)
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    raise UserError(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)}")
  if command in STANDALONE:
    return command, _parser(command).parse_args(rest), None
  if command == "distill":
    if not rest or rest[0] not in DISTILL_COMMANDS:
      raise UserError("'refinedweb distill' needs a subcommand: dump or train, got "
                      f"{rest[0] if rest else 'none'!r}")
    command, rest = f"distill {rest[0]}", rest[1:]
  args, extra = _parser(command).parse_known_args(rest)
  args.command_line = shlex.join(["refinedweb"] + list(argv))
  from refinedweb_jax import configs
  overrides = []
  for item in extra:
    if not item.startswith("--config."):
      raise UserError(f"unknown flag {item!r} for 'refinedweb {command}'")
    key, eq, value = item[len("--config."):].partition("=")
    if not eq:
      raise UserError(f"config override {item!r} needs a value: --config.{key}=VALUE")
    overrides.append((key, value))
  config, run_dir = _base_config(command, args)
  saved = config.to_dict() if run_dir else None
  for key, value in overrides:
    configs.apply_override(config, key, value)
  if run_dir:  # a trained run's config: only what a resumed run could change may differ
    from refinedweb_jax.train import resume
    resume.resume_changes(saved, config, run_dir,  # a dump's own settings are its own
                          also=("distill.",) if command == "distill dump" else ())
  configs.resolve(config)
  configs.validate(config)
  return command, args, config


def _base_config(command, args):
  """(config before overrides, the run directory it comes from or None)."""
  from refinedweb_jax import configs
  run_dir = (args.workdir if command in RUN_COMMANDS or command == "config" else
             args.teacher if command == "distill dump" and args.config is None else None)
  if not run_dir:
    return configs.load_config(args.config), None
  from refinedweb_jax.train import checkpoint
  if command != "config" and not checkpoint.has_steps(os.path.join(run_dir, "checkpoints")):
    return configs.load_config(args.config), None  # loading the run fails later, by itself
  if args.config and command != "distill dump":
    raise UserError(f"'refinedweb {command}' uses the run's own config (saved in {run_dir}); "
                    f"--config {args.config} is not taken: change single settings with "
                    "--config.KEY=VALUE")
  from refinedweb_jax.train import resume, setup
  saved = resume.read_config(run_dir) if command == "config" and os.path.isdir(run_dir) else None
  if saved is None:
    return setup.run_config(run_dir), run_dir
  return configs.from_saved(saved), run_dir


def main(argv=None):
  """Runs one command; every expected failure is one line on stderr and an exit status."""
  from refinedweb_jax.train import stop  # no JAX at import time
  argv = sys.argv[1:] if argv is None else argv
  # Compiled programs persist across commands (train, then eval, generate, a resume reuse
  # them) unless JAX_COMPILATION_CACHE_DIR says otherwise ("" turns the cache off).
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
      os.path.expanduser("~/.cache/refinedweb_jax"), "jax_cache"))
  # TFDS logs a warning per build of a custom-sized corpus; keep the console for progress.
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.ERROR)
  # A failed background save fails several of Orbax's write futures at once: the error is
  # reported here once, not by asyncio for every future or Orbax's own traceback log.
  logging.getLogger("asyncio").setLevel(logging.CRITICAL)
  absl_logging.get_absl_logger().addFilter(
      lambda record: not (record.levelno >= logging.ERROR and "/orbax/" in record.pathname))
  sys.unraisablehook = _quiet_closed_loop(sys.unraisablehook)
  try:
    if argv and argv[0] == "sweep":  # a runner of `refinedweb train` commands, own flags
      from refinedweb_jax.sweep import command as sweep_command
      return sweep_command.main(argv[1:])
    _run(*parse(argv))
  except ValueError as e:
    if _storage_error(e):  # TensorStore's wording of a failed write (a full disk, say)
      return _fail_storage(e)
    return _fail(e, 2)
  except (UserError, FileNotFoundError) as e:
    return _fail(e, 2)
  except stop.Stopped as e:
    print(f"refinedweb: {e}", file=sys.stderr)
    return e.exit_code
  except stop.NonFiniteLoss as e:
    return _fail(e, 1)
  except OSError as e:  # the workdir cannot be written: read-only, a file, a full disk, ...
    return _fail_storage(e)
  except KeyboardInterrupt:
    print("refinedweb: interrupted", file=sys.stderr)
    return 130
  except BrokenPipeError:  # the reader went away (`refinedweb eval | head`): nothing to say
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
  return 0


def _make_workdir(path: str):
  """Creates the run directory (a local folder or gs:// URL) before anything else runs."""
  from etils import epath
  try:
    epath.Path(path).mkdir(parents=True, exist_ok=True)
  except OSError as e:  # nothing runs yet: no background writer to stop, a plain error
    raise UserError(f"--workdir {path!r} cannot be created: {e.strerror or e}") from e
  if not epath.Path(path).is_dir():
    raise UserError(f"--workdir {path!r} is not a directory")


def _quiet_closed_loop(hook):
  """sys.unraisablehook without TensorStore's late callbacks into an event loop Orbax has
  closed (each prints a traceback when a save fails; the failure is reported once)."""
  def quiet(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      hook(unraisable)
  return quiet


def _storage_error(error: ValueError) -> bool:
  text = str(error)
  return "os_error_code" in text or text.startswith(("RESOURCE_EXHAUSTED", "PERMISSION_DENIED"))


def _fail_storage(error):
  """A write to the run's storage failed: one line, then exit at once. Background writers
  (TensorBoard's, Orbax's) would only fail again, each with its traceback, at shutdown."""
  if isinstance(error, OSError):
    text = f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
  else:
    text = str(error)
  _fail((text.strip().splitlines() or [""])[0], 1)  # TensorStore adds pages of context
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(1)


def _fail(error, code: int) -> int:
  """Prints an error (one line; own-data problems add a `file:line` line each) and returns
  the exit status."""
  text = str(error).strip()
  print(f"refinedweb: error: {text or type(error).__name__}", file=sys.stderr)
  return code


def _run(command, args, config):
  if command == "prepare" and args.task is not None:
    commands.prepare_own(args, config)
  elif command == "prepare":
    from refinedweb_jax import configs
    from refinedweb_jax.data import tokenizer
    d = config.data
    vocab_size, fit = configs.tokenizer_vocab_size(config)
    builder, path = tokenizer.prepare_builtin(
        d.data_dir, num_train=d.num_train, num_validation=d.num_validation,
        num_test=d.num_test, seed=d.corpus_seed, long_fraction=d.long_fraction,
        vocab_size=vocab_size, fit=fit)
    print(f"corpus: {builder.data_dir}\ntokenizer: {path}")
  elif command == "train":
    from refinedweb_jax.train import loop
    _make_workdir(args.workdir)
    loop.train_and_evaluate(config, args.workdir, command=args.command_line)
  elif command == "eval":
    commands.evaluate(args, config)
  elif command == "config":
    import json
    print(json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True, ensure_ascii=False))
  elif command == "generate":
    commands.generate(args, config)
  elif command == "chat":
    commands.chat(args, config)
  elif command == "distill dump":
    from refinedweb_jax.distill import dump
    dump.dump(config, args.teacher, args.out, sequence_kd=args.sequence_kd)
  elif command == "distill train":
    from refinedweb_jax.distill import student
    _make_workdir(args.workdir)
    student.train_student(config, args.workdir, logits_dir=args.logits,
                          teacher_workdir=args.teacher, command=args.command_line)
  elif command == "import-hf":
    from refinedweb_jax.convert import commands as convert
    convert.import_hf(args.model_dir, args.workdir, config)
    print(f"imported {args.model_dir} into {args.workdir}; fine-tune with: refinedweb train "
          f"--workdir NEW --config.train.init_from={args.workdir}")
  elif command == "export-hf":
    from refinedweb_jax.convert import commands as convert
    print(f"exported {args.workdir} to {convert.export_hf(args.workdir, args.out)}")
  elif command == "attention-mask":
    commands.attention_mask(args)
  elif command == "fetch":
    from refinedweb_jax.data import fetch
    written = fetch.fetch(args.names, args.out, args.source)
    print(f"{sum(map(len, written.values()))} files written; the experiments read "
          f"{args.out or fetch.default_out()} when {fetch.ENV} names it")
