"""The `refinedweb` command line: parse, validate, dispatch."""

import argparse
import os
import sys

USAGE = """refinedweb COMMAND [flags] [--config path/to/config.py[:arg]] [--config.key=value ...]

commands:
  prepare   generate the built-in corpus (TFDS, array_record) and train its tokenizer
  train     train (and evaluate) in --workdir, resuming from its newest checkpoint
  eval      evaluate the newest checkpoint in --workdir on the validation split
  generate  greedy-decode inputs from --text or stdin (one per line) with a trained --workdir
  attention-mask
            draw an attention pattern as an image: --kind K --length N --out mask.png [sizes]
"""
COMMANDS = ("prepare", "train", "eval", "generate", "attention-mask")
STANDALONE = ("attention-mask",)  # commands that take no --config
# attention-mask flag -> SparseSpec field it sets.
_SIZE_FLAGS = {"window": "window", "block-size": "block_size", "stride": "stride",
               "summary": "summary", "variant": "variant", "global-blocks": "num_global_blocks",
               "window-blocks": "num_window_blocks", "random-blocks": "num_random_blocks",
               "global-positions": "global_positions", "seed": "seed"}


class UserError(Exception):
  """An error the user can fix; printed as one line, no traceback."""


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UserError(message)


def _parser(command: str) -> argparse.ArgumentParser:
  p = _Parser(prog=f"refinedweb {command}", allow_abbrev=False)
  if command == "attention-mask":
    return _mask_parser(p)
  p.add_argument("--config", default=None, help="path/to/config.py[:arg] (default: built-in)")
  if command in ("train", "eval", "generate"):
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, logs)")
  if command == "prepare":
    p.add_argument("--task", default=None, help="build a task from your own files instead")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="default: from the file suffix (.tsv, .jsonl, .json = squad, else text)")
    for split in ("train", "validation", "test"):
      p.add_argument(f"--{split}", nargs="+", default=None,
                     help="files; for text, source and target files in pairs")
    p.add_argument("--input-field", default=None)
    p.add_argument("--target-field", default=None)
    p.add_argument("--columns", default="0,1", help="tsv: input,target column numbers")
    p.add_argument("--prefix", default=None, help="inputs prefix (default: 'TASK: ')")
    p.add_argument("--skip-malformed", action="store_true",
                   help="skip bad lines (reported with file:line) instead of failing")
  if command == "eval":
    p.add_argument("--split", default="validation", choices=("validation", "test"))
    p.add_argument("--examples", type=int, default=None,
                   help="examples per task for the decoded metrics (-1 = the whole split; "
                        "default: the config's train.decode_examples_per_task)")
  if command == "generate":
    p.add_argument("--text", action="append", help="input text; repeat for several; "
                   "without it, one input per line on stdin")
    p.add_argument("--task", default=None, help="prefix each input with this task's prefix")
    p.add_argument("--max-new-tokens", type=int, default=None)
  return p


def _mask_parser(p):
  from refinedweb_jax import plots, sparse_attention
  p.add_argument("--kind", required=True, help=f"one of: {', '.join(plots.KINDS)}")
  p.add_argument("--length", type=int, required=True, help="sequence length")
  p.add_argument("--out", required=True, help="image path, e.g. mask.png")
  p.add_argument("--causal", action="store_true", help="keep only keys <= query")
  defaults = plots.spec_defaults()
  for flag, field in _SIZE_FLAGS.items():
    default, metavar = defaults[field], "N"
    if field == "global_positions":  # parsed later, so a bad value gets its own message
      default, metavar = plots.format_positions(default), "0-15,37"
    choices = sparse_attention.STRIDED_VARIANTS if field == "variant" else None
    p.add_argument(f"--{flag}", type=type(default), default=default, dest=field,
                   choices=choices, metavar=None if choices else metavar,
                   help=f"SparseSpec.{field} (default: %(default)s)")
  return p


def parse(argv):
  """argv (without program name) -> (command, args, config)."""
  if not argv or argv[0] in ("-h", "--help"):
    print(USAGE)
    raise SystemExit(0 if argv else 2)
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    raise UserError(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)}")
  if command in STANDALONE:
    return command, _parser(command).parse_args(rest), None
  args, extra = _parser(command).parse_known_args(rest)
  from refinedweb_jax import configs
  config = configs.load_config(args.config)
  for item in extra:
    if not item.startswith("--config."):
      raise UserError(f"unknown flag {item!r} for 'refinedweb {command}'")
    key, eq, value = item[len("--config."):].partition("=")
    if not eq:
      raise UserError(f"config override {item!r} needs a value: --config.{key}=VALUE")
    configs.apply_override(config, key, value)
  configs.validate(config)
  return command, args, config


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  # TFDS logs a warning per build of a custom-sized corpus; keep the console for progress.
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    command, args, config = parse(argv)
    if command == "prepare" and args.task:
      _prepare_own(args, config)
    elif command == "prepare":
      from refinedweb_jax import tokenizer
      d = config.data
      builder, path = tokenizer.prepare_builtin(
          d.data_dir, num_train=d.num_train, num_validation=d.num_validation,
          num_test=d.num_test, seed=d.corpus_seed, long_fraction=d.long_fraction,
          vocab_size=d.vocab_size)
      print(f"corpus: {builder.data_dir}\ntokenizer: {path}")
    elif command == "train":
      from refinedweb_jax import train
      train.train_and_evaluate(config, args.workdir)
    elif command == "eval":
      from refinedweb_jax import api
      metrics = api.RefinedWeb.load(args.workdir).evaluate(
          args.split, eval_examples=-1 if args.examples == -1 else None,
          decode_examples=args.examples)
      for name, value in sorted(metrics.items()):
        print(f"{name}\t{value:.4f}")
    elif command == "generate":
      _generate(args)
    elif command == "attention-mask":
      _attention_mask(args)
  except (UserError, ValueError, FileNotFoundError) as e:
    print(f"refinedweb: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("refinedweb: interrupted", file=sys.stderr)
    return 130
  return 0


FORMATS = ("tsv", "text", "jsonl", "squad")


def _own_task_spec(args) -> dict:
  """`prepare --task` flags -> the own_data.build arguments (also a config.own_tasks entry)."""
  if not args.train:
    raise UserError("--task needs --train FILE...")
  fmt = args.format or _guess_format(args.train[0])
  spec = dict(task=args.task, format=fmt, skip_malformed=args.skip_malformed)
  for split in ("train", "validation", "test"):
    files = getattr(args, split)
    if not files:
      continue
    files = [os.path.abspath(f) for f in files]
    if fmt == "text":
      if len(files) % 2:
        raise UserError(f"--{split} for format text takes source and target files in pairs, "
                        f"got {len(files)} files")
      files = [(files[i], files[i + 1]) for i in range(0, len(files), 2)]
    spec[split] = files
  if args.input_field:
    spec["input_field"] = args.input_field
  if args.target_field:
    spec["target_field"] = args.target_field
  if fmt == "tsv":
    try:
      spec["columns"] = tuple(int(c) for c in args.columns.split(","))
    except ValueError:
      raise UserError(f"bad --columns {args.columns!r}; use INPUT,TARGET like 0,1") from None
  if args.prefix is not None:
    spec["prefix"] = args.prefix
  return spec


def _guess_format(path: str) -> str:
  name = path[:-3] if path.endswith(".gz") else path
  return {".tsv": "tsv", ".jsonl": "jsonl", ".json": "squad"}.get(os.path.splitext(name)[1],
                                                                   "text")


def _prepare_own(args, config):
  from refinedweb_jax.datasets import own_data
  spec = _own_task_spec(args)
  builder = own_data.build(config.data.data_dir, **spec)
  print(f"task {args.task}: {builder.data_dir}")
  print("add to an experiment config:\n  config.own_tasks = [" + repr(spec) + "]")
  print(f"  config.mixture.tasks = {args.task!r}")


def _generate(args):
  from refinedweb_jax import api, corpus
  if args.task is not None and args.task not in corpus.TASKS:
    raise UserError(f"unknown task {args.task!r}; allowed: {', '.join(corpus.TASKS)}")
  if args.max_new_tokens is not None and args.max_new_tokens < 1:
    raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
  texts = args.text if args.text else _stdin_lines()
  for i, text in enumerate(texts):
    if not text.strip():
      where = f"--text #{i + 1}" if args.text else f"stdin line {i + 1}"
      raise UserError(f"empty input text ({where}); give a non-empty string")
  if not texts:
    raise UserError("no input: pass --text or one input per line on stdin")
  model = api.RefinedWeb.load(args.workdir)
  if args.task is not None:
    texts = [api.task_prefix(args.task) + t for t in texts]
  for output in model.generate(texts, max_new_tokens=args.max_new_tokens):
    print(output, flush=True)


def _attention_mask(args):
  from refinedweb_jax import plots
  sizes = {field: getattr(args, field) for field in _SIZE_FLAGS.values()}
  sizes["global_positions"] = plots.parse_positions(sizes["global_positions"])
  density = plots.plot_pattern(args.out, args.kind, args.length, args.causal, sizes)
  print(f"{args.out} density {density:.4f}")


def _stdin_lines():
  raw = sys.stdin.buffer.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"stdin is not valid UTF-8 (byte {e.start}): pass UTF-8 text") from None
  return [line for line in text.splitlines()]


if __name__ == "__main__":
  sys.exit(main())
