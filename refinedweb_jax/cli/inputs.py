"""Reading a command's inputs: own-data flags, input files and stdin, decoding flags.

Every problem is a UserError of one line naming the flag, the file or the line.
"""

import gzip
import json
import os
import stat
import sys

from refinedweb_jax import configs
from refinedweb_jax.cli.parser import UserError
from refinedweb_jax.data import checks, registry, tasks, tokenizer
from refinedweb_jax.data.datasets import builtin, own_data, own_splits
from refinedweb_jax.model import decode
from refinedweb_jax.train import setup

BOM = "\ufeff"  # a UTF-8 byte-order mark at the start of a file is no input text
PEEK_BYTES = 1 << 16  # what a look at a file's first line reads at most
MAX_INPUT_BYTES = 1 << 32  # an own-data file's size limit (--max-input-bytes raises it)
MAX_TEXT_BYTES = 1 << 26  # generate's inputs, held in memory whole (--max-input-bytes too)


def check_input_file(path: str, flag: str, limit: int | None):
  """An input is a regular file of at most `limit` bytes (None: MAX_INPUT_BYTES), so that no
  read is unbounded (/dev/zero, a pipe, a file larger than memory)."""
  limit = MAX_INPUT_BYTES if limit is None else limit
  if limit < 1:
    raise UserError(f"--max-input-bytes must be >= 1, got {limit}")
  try:
    st = os.stat(path)
  except OSError:
    return  # missing: the reader's own message names it
  if not stat.S_ISREG(st.st_mode):
    raise UserError(f"{flag} {path!r} is not a regular file (a device, pipe or folder); "
                    "give a file")
  if st.st_size > limit:
    raise UserError(f"{flag} {path!r} has {st.st_size:,} bytes, more than --max-input-bytes="
                    f"{limit:,}; raise --max-input-bytes to read it")


def read_bounded(f, limit: int | None, what: str) -> bytes:
  """All of a binary stream, refused in one line past `limit` bytes (None: MAX_TEXT_BYTES)."""
  limit = MAX_TEXT_BYTES if limit is None else limit
  if limit < 1:
    raise UserError(f"--max-input-bytes must be >= 1, got {limit}")
  raw = f.read(limit + 1)
  if len(raw) > limit:
    raise UserError(f"{what} has more than --max-input-bytes={limit:,} bytes; raise "
                    "--max-input-bytes to read it")
  return raw


def decoding_settings(args) -> dict:
  """The decoding flags, checked (decode.Decoding) before any checkpoint is loaded."""
  settings = dict(beam_size=args.beam, length_penalty=args.length_penalty,
                  length_penalty_style=args.length_penalty_style,
                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                  seed=args.seed)
  if args.max_new_tokens is not None:
    settings["max_new_tokens"] = args.max_new_tokens
  check_seed(args.seed, "--seed")
  decode.Decoding(**settings)
  return settings


def check_seed(seed, flag: str):
  """A seed is an integer in [0, configs.INT_MAX]."""
  if seed is not None and not 0 <= seed <= configs.INT_MAX:
    raise UserError(f"{flag} must be in [0, {configs.INT_MAX}], got {seed}")


def _check_own_name(task: str):
  """An own task may not take a built-in or public task's name: training would use that one."""
  from refinedweb_jax.data.datasets import public  # TFDS: prepare loads it anyway
  taken = tuple(tasks.BUILTIN) + tuple(public.PUBLIC)
  if task in taken:
    raise UserError(f"--task {task!r} is the name of a built-in task; give your own task "
                    f"another name (taken: {', '.join(taken)})")


def own_task_spec(args) -> dict:
  """`prepare --task` flags -> the own_data.build arguments (also a config.own_tasks entry)."""
  if not args.train:
    raise UserError("--task needs --train FILE...")
  _check_own_name(args.task)
  if "pass@1" in (_metrics(args) or ()):
    raise UserError("--metrics pass@1 runs each example's tests, and own files (tsv, text, "
                    "jsonl, squad) carry none; score the task with bleu, chrf, rouge or "
                    "exact_match instead")
  for path in args.train + (args.validation or []) + (args.test or []):
    check_input_file(path, "--train" if path in args.train else "--validation/--test",
                     args.max_input_bytes)
  fmt = args.format or guess_format(args.train[0], len(args.train))
  spec = dict(task=args.task, format=fmt, skip_malformed=args.skip_malformed)
  for split in ("train", "validation", "test"):
    files = getattr(args, split)
    if not files:
      continue
    files = [os.path.abspath(f) for f in files]
    if fmt == "text":
      if len(files) % 2:
        raise UserError(f"--{split} for format text takes source and target files in pairs, "
                        f"got {len(files)} file(s); a file of input<TAB>target lines takes "
                        "--format tsv")
      files = [(files[i], files[i + 1]) for i in range(0, len(files), 2)]
    spec[split] = files
  _check_fields(fmt, args, args.train[0])
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
  if args.max_line_bytes is not None:
    spec["max_line_bytes"] = args.max_line_bytes
  spec.update(_carve(args))
  return spec


def _carve(args) -> dict:
  """--split and --seed -> the carve settings of own_data.build (none without --split)."""
  if args.split is None:
    if args.seed is not None:
      raise UserError("--seed applies to --split only (it chooses the carved examples)")
    return {}
  try:
    carve = own_splits.fractions(args.split, "--split")
  except ValueError as e:
    raise UserError(str(e)) from None
  for split in carve:
    if getattr(args, split):
      raise UserError(f"--split {split}={carve[split]:g} and --{split} FILE both give the "
                      f"{split} split; drop one")
  check_seed(args.seed, "--seed")
  return dict(carve=carve, carve_seed=0 if args.seed is None else args.seed)


def _check_fields(fmt: str, args, first_file: str):
  """jsonl needs --input-field and --target-field (named with the file's keys); others none."""
  if fmt != "jsonl":
    if args.input_field or args.target_field:
      raise UserError(f"--input-field/--target-field apply to --format jsonl only, not {fmt}")
    return
  if args.input_field and args.target_field:
    return
  keys = "?"
  try:
    with open(first_file, encoding="utf-8") as f:
      keys = ", ".join(sorted(json.loads(f.readline(PEEK_BYTES))))
  except (OSError, ValueError, TypeError, AttributeError, RecursionError):
    pass
  raise UserError(f"format jsonl needs --input-field and --target-field, the keys of the "
                  f"input and the target; {first_file} line 1 has keys: {keys}")


def _metrics(args) -> list | None:
  """--metrics a,b checked against the known metrics (None: the task's default)."""
  if not args.metrics:
    return None
  names = [m.strip() for m in args.metrics.split(",") if m.strip()]
  for name in names:
    if name not in tasks.METRICS:
      raise UserError(f"unknown metric {name!r} in --metrics; allowed: "
                      f"{', '.join(tasks.METRICS)}")
  return names


def _language(args) -> str | None:
  if args.language is not None and args.language not in tasks.LANGUAGES:
    raise UserError(f"unknown --language {args.language!r}; allowed: "
                    f"{', '.join(tasks.LANGUAGES)}")
  return args.language


def guess_format(path: str, files: int = 1) -> str:
  """The format of `files` files named like `path`: from the extension, else "tsv" for one
  file whose first line holds a tab (a Tatoeba export's cmn.txt), else "text" (pairs)."""
  name = path[:-3] if path.endswith(".gz") else path
  known = {".tsv": "tsv", ".jsonl": "jsonl", ".json": "squad"}.get(os.path.splitext(name)[1])
  if known:
    return known
  if files == 1:
    try:
      with (gzip.open if path.endswith(".gz") else open)(path, "rt", errors="replace") as f:
        if "\t" in f.readline(PEEK_BYTES):
          return "tsv"
    except OSError:
      pass  # a missing file is reported with the build's own message
  return "text"


def prepare_own(args, config):
  """Builds an own task and records it in data.data_dir's registry (registry.record_prepared)."""
  spec = own_task_spec(args)
  given = str(config.data.tokenizer)
  if given.endswith(".model") and not os.path.isfile(given):
    raise UserError(f"config.data.tokenizer {given!r}: no such file")
  setup.check_data_dir(config.data.data_dir)
  builder = own_data.build(config.data.data_dir, **spec)
  entry = dict(spec, metrics=_metrics(args) or list(tasks.default_metrics(spec["format"])),
               language=_language(args) or "en")
  registry.record_prepared(config.data.data_dir, entry)
  splits = builder.info.splits
  sizes = ", ".join(f"{split} {splits[split].num_examples}" for split in own_data.SPLITS
                    if split in splits)
  print(f"task {args.task} ({sizes} examples; metrics {', '.join(entry['metrics'])}): "
        f"{builder.data_dir}")
  for line in _tokenizer_lines(config, builder, args.task):
    print(f"refinedweb: {line}")
  print(f"recorded in {os.path.join(config.data.data_dir, registry.PREPARED)}; train on it (and "
        f"others, comma-separated): refinedweb train --workdir runs/{args.task} "
        f"--config.mixture.tasks={args.task}")


def _tokenizer_lines(config, builder, task: str) -> list:
  """How the tokenizer this config trains with covers the task's train split, and how many
  examples data.input_length / target_length cut: with a *.model file, or the built-in
  corpus's once prepared (a mixture's is trained by train itself)."""
  d = config.data
  if str(d.tokenizer).endswith(".model"):
    path = d.tokenizer
  elif d.tokenizer == "builtin":
    corpus = builtin.RefinedWebBuiltin(data_dir=d.data_dir, config=builtin.make_config(
        num_train=d.num_train, num_validation=d.num_validation, num_test=d.num_test,
        seed=d.corpus_seed, long_fraction=d.long_fraction))
    path = os.path.join(os.fspath(corpus.data_dir),
                        f"spm_{configs.tokenizer_vocab_size(config)[0]}.model")
  else:
    return []
  if not os.path.isfile(path):
    return []
  named = [(task, builtin.StrDataSource(builder.as_data_source("train")))]
  reader = tokenizer.Tokenizer(path)
  lines = (checks.coverage_line(reader, named, d.tokenizer),
           checks.truncation_line(reader, named, d.input_length, d.target_length))
  return [line for line in lines if line]


def file_lines(path: str, limit: int | None = None):
  try:
    with open(path, "rb") as f:
      raw = read_bounded(f, limit, f"--input {path!r}")
  except OSError as e:
    raise UserError(f"cannot read --input {path!r}: {e.strerror}") from None
  try:
    return raw.decode("utf-8").removeprefix(BOM).splitlines()
  except UnicodeDecodeError as e:
    raise UserError(f"--input {path!r} is not valid UTF-8 (byte {e.start}): "
                    "pass UTF-8 text") from None


def jsonl_field(path: str, field: str, limit: int | None = None) -> list:
  """The `field` string of each JSON object line of a JSONL file (blank lines skipped)."""
  texts = []
  for number, line in enumerate(file_lines(path, limit), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError as e:
      raise UserError(f"--input {path} line {number} is not JSON ({e.msg}); --input-field "
                      "takes a JSONL file, one JSON object per line") from None
    if not isinstance(record, dict) or field not in record:
      keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
      raise UserError(f"--input {path} line {number} has no key {field!r} for --input-field; "
                      f"it has: {keys}")
    if not isinstance(record[field], str):
      raise UserError(f"--input {path} line {number} field {field!r} is "
                      f"{type(record[field]).__name__}, not a string")
    texts.append(record[field])
  return texts


def stdin_lines(limit: int | None = None):
  raw = read_bounded(sys.stdin.buffer, limit, "stdin")
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"stdin is not valid UTF-8 (byte {e.start}): pass UTF-8 text") from None
  return text.removeprefix(BOM).splitlines()


def file_task(args, config):
  """The task of `eval --input FILE`: its examples, with --task's or the flags' prefix,
  metrics and language."""
  like = None
  if args.task is not None:
    known = registry.for_config(config)
    if args.task not in known:
      raise UserError(f"unknown --task {args.task!r}; this run knows: "
                      f"{', '.join(known.names())}")
    like = known.get(args.task)
  check_input_file(args.input, "--input", args.max_input_bytes)
  fmt = args.format or guess_format(args.input)
  if fmt == "text":
    raise UserError("--input takes one file (tsv, jsonl or squad), not a text pair; join the "
                    "source and target lines with a tab into a .tsv")
  _check_fields(fmt, args, args.input)
  try:
    columns = tuple(int(c) for c in args.columns.split(","))
  except ValueError:
    raise UserError(f"bad --columns {args.columns!r}; use INPUT,TARGET like 0,1") from None
  if not os.path.isfile(args.input):
    raise UserError(f"--input {args.input!r}: no such file")
  stem = os.path.basename(args.input).split(".")[0]
  if stem in ("train", "dev", "validation", "test", "eval"):  # not a name of its own
    stem = f"{os.path.basename(os.path.dirname(os.path.abspath(args.input)))}_{stem}"
  name = args.name or "".join(c if c.isalnum() or c in "_-" else "_" for c in stem) or "input"
  prefix = args.prefix if args.prefix is not None else like.prefix if like else ""
  examples = own_data.read_examples(
      task=name, format=fmt, files=[args.input], input_field=args.input_field,
      target_field=args.target_field, columns=columns if fmt == "tsv" else (0, 1),
      prefix=prefix)
  metrics = _metrics(args) or (like.metrics if like else tasks.default_metrics(fmt))
  if "pass@1" in metrics and not all(ex.get("tests") for ex in examples):
    raise UserError(f"--metrics pass@1 runs each example's tests, and {args.input} has none: "
                    "it needs a jsonl file with a tests field (the built-in code task's "
                    "format); score it with bleu, chrf or exact_match instead")
  language = _language(args) or (like.language if like else "en")
  return tasks.Task(name, lambda split: examples, tuple(metrics), language, prefix)


def check_vocabulary(settings: dict, model):
  """Decoding flags that a model's vocabulary bounds: a beam wider than it is refused."""
  vocab = model.model.cfg.vocab_size
  if settings.get("beam_size", 1) > vocab:
    raise UserError(f"--beam {settings['beam_size']} is more than this model's vocabulary of "
                    f"{vocab}; allowed: 1..{vocab}")


def stdin_turns(interactive: bool):
  """Chat turns from stdin, stripped and non-empty; bytes that are not UTF-8 are one error."""
  number = 0
  while True:
    number += 1
    if interactive:
      try:
        line = input("you> ")
      except EOFError:
        return
      raw = line.encode("utf-8", "surrogateescape")
    else:  # bytes where stdin has them, so that bad ones are ours to report
      raw = getattr(sys.stdin, "buffer", sys.stdin).readline()
      if not raw:
        return
      raw = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise UserError(f"stdin line {number} is not valid UTF-8 (byte {e.start}): pass UTF-8 "
                      "text") from None
    text = text.removeprefix(BOM).strip() if number == 1 else text.strip()
    if text:
      yield text
