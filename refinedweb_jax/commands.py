"""The bodies of the `refinedweb` commands that read inputs or print results (cli.py dispatches)."""

import os
import sys



class UserError(Exception):
  """An error the user can fix; printed as one line, no traceback."""

def decoding_settings(args) -> dict:
  """The decoding flags, checked (decode.Decoding) before any checkpoint is loaded."""
  from refinedweb_jax.model import decode
  settings = dict(beam_size=args.beam, length_penalty=args.length_penalty,
                  length_penalty_style=args.length_penalty_style,
                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                  seed=args.seed)
  if args.max_new_tokens is not None:
    settings["max_new_tokens"] = args.max_new_tokens
  decode.Decoding(**settings)
  return settings


FORMATS = ("tsv", "text", "jsonl", "squad")
BOM = "\ufeff"  # a UTF-8 byte-order mark at the start of a file is no input text


def own_task_spec(args) -> dict:
  """`prepare --task` flags -> the own_data.build arguments (also a config.own_tasks entry)."""
  if not args.train:
    raise UserError("--task needs --train FILE...")
  fmt = args.format or guess_format(args.train[0])
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
  if args.max_line_bytes is not None:
    spec["max_line_bytes"] = args.max_line_bytes
  return spec


def guess_format(path: str) -> str:
  name = path[:-3] if path.endswith(".gz") else path
  return {".tsv": "tsv", ".jsonl": "jsonl", ".json": "squad"}.get(os.path.splitext(name)[1],
                                                                   "text")


def prepare_own(args, config):
  from refinedweb_jax.data.datasets import own_data
  spec = own_task_spec(args)
  builder = own_data.build(config.data.data_dir, **spec)
  print(f"task {args.task}: {builder.data_dir}")
  print("add to an experiment config:\n  config.own_tasks = [" + repr(spec) + "]")
  print(f"  config.mixture.tasks = {args.task!r}")


def generate(args, config):
  from refinedweb_jax import api, configs
  known = configs.known_tasks(config)  # own and public tasks come from the experiment's --config
  if args.task is not None and args.task not in known:
    raise UserError(f"unknown task {args.task!r}; allowed: {', '.join(known)}")
  settings = decoding_settings(args)
  if args.batch_size < 1:
    raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
  if args.text and args.input:
    raise UserError("give inputs by --text or by --input FILE, not both")
  if args.text:
    texts, where = args.text, "--text #{}"
  elif args.input:
    texts, where = file_lines(args.input), f"--input {args.input} line {{}}"
  else:
    texts, where = stdin_lines(), "stdin line {}"
  for i, text in enumerate(texts):
    if not text.strip():
      raise UserError(f"empty input text ({where.format(i + 1)}); give a non-empty string")
  if not texts:
    raise UserError("no input: pass --text, --input FILE or one input per line on stdin")
  model = api.RefinedWeb.load(args.workdir)
  if args.task is not None:
    texts = [api.task_prefix(args.task, model.config) + t for t in texts]
  for output in model.stream(texts, batch_size=args.batch_size, **settings):
    print(output, flush=True)


def chat(args):
  """Reads user turns from stdin, answers each with the whole conversation as context."""
  from refinedweb_jax import api
  from refinedweb_jax.data import tasks
  settings = decoding_settings(args)
  model = api.RefinedWeb.load(args.workdir)
  interactive = sys.stdin.isatty()
  if interactive:
    print("chat with the model; /reset starts over, /exit (or Ctrl-D) quits", flush=True)
  turns = []
  while True:
    try:
      line = input("you> " if interactive else "")
    except EOFError:
      return
    line = line.strip()
    if line in ("/exit", "/quit"):
      return
    if line == "/reset":
      turns = []
      continue
    if not line:
      continue
    turns.append(line)
    # Oldest exchanges go first when the conversation outgrows the model's input length.
    while len(turns) > 1 and (len(model.tokenizer.encode(tasks.chat_prompt(turns)))
                              >= model.config.data.input_length):
      turns = turns[2:]
    reply = model.chat(turns, **settings)
    turns.append(reply.strip() or "...")
    print(f"model> {reply}" if interactive else reply, flush=True)


def attention_mask(args):
  from refinedweb_jax import plots
  sizes = {name: getattr(args, name) for name in plots.pattern_sizes()}
  density = plots.plot_pattern(args.out, args.kind, args.length, args.causal, sizes)
  print(f"{args.out} density {density:.4f}")


def file_lines(path: str):
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise UserError(f"cannot read --input {path!r}: {e.strerror}") from None
  try:
    return raw.decode("utf-8").removeprefix(BOM).splitlines()
  except UnicodeDecodeError as e:
    raise UserError(f"--input {path!r} is not valid UTF-8 (byte {e.start}): "
                    "pass UTF-8 text") from None


def stdin_lines():
  raw = sys.stdin.buffer.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"stdin is not valid UTF-8 (byte {e.start}): pass UTF-8 text") from None
  return text.removeprefix(BOM).splitlines()
