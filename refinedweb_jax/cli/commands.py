"""The bodies of the `refinedweb` commands: each takes its parsed flags and settled config."""

import dataclasses
import json
import os
import shlex
import sys

from refinedweb_jax import api, configs, plots
from refinedweb_jax.cli import inputs
from refinedweb_jax.cli.parser import UserError
from refinedweb_jax.convert import commands as convert
from refinedweb_jax.data import checks, fetch as fetch_lib, registry, tasks, tokenizer
from refinedweb_jax.distill import dump
from refinedweb_jax.sweep import arms, report, runner
from refinedweb_jax.train import memory, resume, setup, teacher, trainer


def prepare(args, settled):
  config = settled.config
  if args.task is not None:
    return inputs.prepare_own(args, config)  # checks its flags before it writes anything
  setup.check_data_dir(config.data.data_dir)
  d = config.data
  vocab_size, fit = configs.tokenizer_vocab_size(config)
  builder, path = tokenizer.prepare_builtin(
      d.data_dir, num_train=d.num_train, num_validation=d.num_validation, num_test=d.num_test,
      seed=d.corpus_seed, long_fraction=d.long_fraction, vocab_size=vocab_size, fit=fit)
  print(f"corpus: {builder.data_dir}\ntokenizer: {path}")
  named = [(task.name, task.source("train")) for task in setup.run_tasks(config)]
  line = checks.truncation_line(tokenizer.Tokenizer(path), named, d.input_length,
                                d.target_length)
  if line:
    print(f"refinedweb: {line}", flush=True)


def train(args, settled):
  memory.check(settled.config)
  trainer.train(settled, args.workdir, command=args.command_line)


def distill_train(args, settled):
  kd = settled.config.distill
  if not teacher.is_student(settled.config):
    raise UserError("distill train needs --logits LOGITS_DIR (from refinedweb distill dump), "
                    "or --config.distill.online=true with --teacher WORKDIR")
  if kd.logits and not kd.online and not os.path.isdir(kd.logits):
    raise UserError(f"logits directory {kd.logits!r} does not exist; write it with: "
                    f"refinedweb distill dump --teacher WORKDIR --out {kd.logits}")
  memory.check(settled.config)
  trainer.train(settled, args.workdir, command=args.command_line)


def evaluate(args, settled):
  """`refinedweb eval`: a split of the run's tasks, or every example of an --input file."""
  if args.examples is not None and args.examples < -1:
    raise UserError(f"--examples must be -1 (the whole split) or >= 0, got {args.examples}")
  file_flags = [f"--{name.replace('_', '-')}" for name in ("task", "prefix", "name", "format",
                                                           "input_field", "target_field",
                                                           "metrics", "language")
                if getattr(args, name) is not None]
  if args.input is None and file_flags:
    raise UserError(f"{file_flags[0]} applies to --input FILE only")
  if args.input is not None and args.tasks is not None:
    raise UserError("give --tasks (the run's tasks) or --input FILE, not both")
  names = None if args.tasks is None else [t.strip() for t in args.tasks.split(",") if t.strip()]
  known = registry.for_config(settled.config)
  for name in names or ():
    known.get(name, "--tasks")
  task = None if args.input is None else inputs.file_task(args, settled.config)
  model = api.RefinedWeb.load(args.workdir, settled=settled)
  d = model.config.data
  if task is not None:
    named = [(task.name, task.source("test"))]
    lines = [checks.coverage_line(model.tokenizer, named, str(d.tokenizer))]
  else:
    named = [(n, known.get(n).source(args.split))
             for n in names or configs.eval_task_names(settled.config)]
    lines = []
  lines.append(checks.truncation_line(model.tokenizer, named, d.input_length, d.target_length,
                                      advice=False))
  for line in filter(None, lines):
    print(f"refinedweb: {line}", file=sys.stderr, flush=True)
  if task is not None:
    model.evaluate_file(task)
  else:
    model.evaluate(args.split, eval_examples=-1 if args.examples == -1 else None,
                   decode_examples=args.examples, tasks=names)


def show_config(args, settled):
  """The settled config, with the model's sizes resolved (preset, overrides, vocabulary)."""
  shown = configs.to_dict(settled.config)
  model_cfg = configs.model_config(settled.config,
                                   vocab_size=_vocab_size(settled.config, args.workdir))
  resolved = dataclasses.asdict(model_cfg)
  shown["model"] = {**resolved, **{k: v for k, v in shown["model"].items() if v is not None},
                    "attention": {**resolved["attention"], **{
                        k: v for k, v in shown["model"].get("attention", {}).items()
                        if v is not None}}}
  print(json.dumps(shown, indent=2, sort_keys=True, ensure_ascii=False))


def _vocab_size(config, workdir: str | None) -> int:
  """The tokenizer's vocabulary: a run's own (saved with its checkpoint), a *.model file's,
  else the size a trained one is asked for (data.vocab_size, else the preset's)."""
  if workdir and resume.has_run(workdir):
    return tokenizer.Tokenizer(model_proto=resume.saved(workdir)[1]).vocab_size
  if str(config.data.tokenizer).endswith(".model") and os.path.isfile(config.data.tokenizer):
    return tokenizer.Tokenizer(config.data.tokenizer).vocab_size
  return configs.tokenizer_vocab_size(config)[0]


def generate(args, settled):
  known = registry.for_config(settled.config)
  if args.task is not None and args.task not in known:
    raise UserError(f"unknown task {args.task!r}; allowed: {', '.join(known.names())}")
  settings = inputs.decoding_settings(args)
  if args.batch_size < 1:
    raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
  if args.text and args.input:
    raise UserError("give inputs by --text or by --input FILE, not both")
  if args.input_field is not None and not args.input:
    raise UserError("--input-field applies to --input FILE (a JSONL file) only")
  if args.text:
    texts, where = args.text, "--text #{}"
  elif args.input and args.input_field is not None:
    texts = inputs.jsonl_field(args.input, args.input_field, args.max_input_bytes)
    where = f"--input {args.input} line {{}} field {args.input_field!r}"
  elif args.input:
    texts = inputs.file_lines(args.input, args.max_input_bytes)
    where = f"--input {args.input} line {{}}"
  else:
    texts, where = inputs.stdin_lines(args.max_input_bytes), "stdin line {}"
  for i, text in enumerate(texts):
    if not text.strip():
      raise UserError(f"empty input text ({where.format(i + 1)}); give a non-empty string")
  if not texts:
    raise UserError("no input: pass --text, --input FILE or one input per line on stdin")
  model = api.RefinedWeb.load(args.workdir, settled=settled, weights=args.weights)
  inputs.check_vocabulary(settings, model)
  if args.task is not None:
    texts = [known.get(args.task).prefix + t for t in texts]
  for output in model.stream(texts, batch_size=args.batch_size, **settings):
    print(output, flush=True)


def chat(args, settled):
  """Reads user turns from stdin, answers each with the whole conversation as context."""
  settings = inputs.decoding_settings(args)
  model = api.RefinedWeb.load(args.workdir, settled=settled, weights=args.weights)
  inputs.check_vocabulary(settings, model)
  interactive = sys.stdin.isatty()
  if interactive:
    print("chat with the model; /reset starts over, /exit (or Ctrl-D) quits", flush=True)
  turns = []
  for line in inputs.stdin_turns(interactive):
    if line in ("/exit", "/quit"):
      return
    if line == "/reset":
      turns = []
      print("(conversation reset)", flush=True)
      continue
    turns.append(line)
    # Oldest exchanges go first when the conversation outgrows the model's input length.
    while len(turns) > 1 and (len(model.tokenizer.encode(tasks.chat_prompt(turns)))
                              >= model.config.data.input_length):
      turns = turns[2:]
    reply = model.chat(turns, **settings)
    turns.append(reply.strip() or "...")
    print(f"model> {reply}" if interactive else reply, flush=True)


def distill_dump(args, settled):
  dump.dump(settled.config, args.teacher, args.out, sequence_kd=args.sequence_kd)


def sweep_run(args, overrides):
  if args.shard is not None:
    arms.parse_shard(args.shard)  # before the experiment file loads
  return runner.run_sweep(args.config, args.workdir, arms=args.arms, shard=args.shard,
                          dry_run=args.dry_run, common=dict(overrides),
                          out=lambda text: print(text, flush=True))


def sweep_report(args, settled):
  print(report.write_report(args.workdir))


def import_hf(args, settled):
  convert.import_hf(args.model_dir, args.workdir, settled.config)
  print(f"imported {args.model_dir} into {args.workdir}; fine-tune with: refinedweb train "
        f"--workdir NEW --config.train.init_from={shlex.quote(args.workdir)}")


def export_hf(args, settled):
  print(f"exported {args.workdir} to {convert.export_hf(args.workdir, args.out)}")


def attention_mask(args, settled):
  sizes = {name: getattr(args, name) for name in plots.pattern_sizes()}
  density = plots.plot_pattern(args.out, args.kind, args.length, args.causal, sizes)
  print(f"{args.out} density {density:.4f}")


def fetch(args, settled):
  written = fetch_lib.fetch(args.names, args.out, args.source)
  print(f"{sum(map(len, written.values()))} files written; the experiments read "
        f"{args.out or fetch_lib.default_out()} when {fetch_lib.ENV} names it")


BODIES = {"prepare": prepare, "train": train, "eval": evaluate, "config": show_config,
          "generate": generate, "chat": chat, "distill dump": distill_dump,
          "distill train": distill_train, "sweep run": sweep_run, "sweep report": sweep_report,
          "import-hf": import_hf, "export-hf": export_hf, "attention-mask": attention_mask,
          "fetch": fetch}


def config_json(workdir: str):
  """`refinedweb config --workdir W` of a run with no checkpoint yet: its config.json."""
  saved = resume.read_config(workdir)
  if saved is None:
    raise FileNotFoundError(f"{workdir} holds no run (no checkpoint, no config.json); train "
                            f"first with: refinedweb train --workdir {shlex.quote(str(workdir))}")
  return configs.from_saved(saved)
