"""The `refinedweb` commands as data: each one's help, arguments, config and body, in one table.

A command's `config` says where its config comes from before its --config.KEY=VALUE flags:
  none   no config (the flags are refused)
  new    --config FILE[:arg] or the built-in default
  train  the run in --workdir when it has one (its saved config), else as `new`
  run    the run in --workdir (its saved config); --config is refused
  dump   --config FILE (the student's), else the --teacher run's
  raw    the flags pass through as text (a sweep applies them to every arm)
"""

import argparse
import dataclasses
import re
import textwrap
from typing import Callable

from refinedweb_jax import config_keys, configs, plots
from refinedweb_jax.data import fetch
from refinedweb_jax.model.attention import kinds

FORMATS = ("tsv", "text", "jsonl", "squad")


class UserError(Exception):
  """An error the user can fix; printed as one line, no traceback."""


class Parser(argparse.ArgumentParser):
  """argparse's, with its errors as one line in this command line's words."""

  def error(self, message):
    choice = re.match(r"argument (COMMAND|SUBCOMMAND): invalid choice: '([^']*)'", message)
    if choice:
      what = "command" if choice.group(1) == "COMMAND" else f"'{self.prog}' subcommand"
      names = next(a.choices for a in self._actions
                   if isinstance(a, argparse._SubParsersAction))
      raise UserError(f"unknown {what} {choice.group(2)!r}; allowed: {', '.join(names)}")
    raise UserError(f"{message} (see: {self.prog} --help)")


@dataclasses.dataclass(frozen=True)
class Command:
  name: str  # "train", "distill dump", ...
  help: str
  arguments: Callable = lambda p: None  # adds the command's flags to its parser
  config: str = "none"


def _workdir(p, required=True, help="run directory (checkpoints, logs)"):
  p.add_argument("--workdir", required=required, help=help)


def _config_file(p):
  p.add_argument("--config", default=None, help="path/to/experiment.py[:arg] (default: the "
                 "built-in config, refinedweb_jax/configs.py)")


def _prepare(p):
  _config_file(p)
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
  _max_input(p)


def _max_input(p, default="4 GiB"):
  p.add_argument("--max-input-bytes", type=int, default=None,
                 help=f"larger input files (or stdin) are refused, not read (default: {default})")



def _train(p):
  _workdir(p)
  _config_file(p)


def _eval(p):
  _workdir(p)
  _run_only(p)
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


def _config(p):
  _workdir(p, required=False, help="show this run's config")
  _config_file(p)


def _run_only(p):
  p.add_argument("--config", default=None, help="not taken: this command uses the run's own "
                 "config; change single settings with --config.KEY=VALUE")


def _decoding(p):
  _workdir(p)
  _run_only(p)
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
                      "int8 matmuls (faster on CPU; see docs/performance.md, Decoding speed)")


def _generate(p):
  _decoding(p)
  p.add_argument("--text", action="append", help="input text; repeat for several; "
                 "without it (and --input), one input per line on stdin")
  p.add_argument("--input", default=None, help="a UTF-8 file with one input per line, or "
                 "with --input-field a JSONL file (one JSON object per line)")
  p.add_argument("--input-field", default=None, help="with --input: read it as JSONL and take "
                 "this key of each object as one input (multi-line inputs stay whole)")
  p.add_argument("--task", default=None, help="prefix each input with this task's prefix")
  p.add_argument("--batch-size", type=int, default=16, help="inputs decoded together")
  _max_input(p, "64 MiB")


def _dump(p):
  _config_file(p)
  p.add_argument("--teacher", required=True, help="the teacher's run directory")
  p.add_argument("--out", required=True, help="directory for the logits (resumable)")
  p.add_argument("--sequence-kd", action="store_true",
                 help="also store the teacher's decoded outputs (sequence-level KD)")


def _student(p):
  _train(p)
  p.add_argument("--logits", default=None, help="directory from `distill dump` (sets "
                 "config.distill.logits)")
  p.add_argument("--teacher", default=None, help="teacher run directory, for "
                 "config.distill.online=True (sets config.distill.teacher)")


def _sweep(p):
  p.add_argument("--config", required=True, help="experiment file with get_sweep: FILE[:arg]")
  p.add_argument("--workdir", required=True, help="the sweep's folder (one sub-folder per run)")
  p.add_argument("--arms", default=None, help="comma-separated arm names (default: all)")
  p.add_argument("--dry-run", action="store_true", help="print each run's command and overrides")
  p.add_argument("--shard", default=None, help="i/n: run every n-th run, from the i-th")


def _import_hf(p):
  p.add_argument("model_dir", help="a local Hugging Face T5, T5 v1.1, Flan-T5 or mT5 directory")
  _workdir(p, help="new run directory for the imported model")
  p.add_argument("--config", default=None, help="path/to/experiment.py[:arg]: the settings "
                 "of later fine-tuning (data, train, optimizer); the model section comes from "
                 "the Hugging Face config")


def _export_hf(p):
  _workdir(p)
  _run_only(p)
  p.add_argument("--out", required=True, help="new directory for the Hugging Face model")


def _mask(p):
  p.add_argument("--kind", required=True, help=f"one of: {', '.join(kinds.ATTENTION_KINDS)}")
  p.add_argument("--length", type=int, required=True, help="sequence length")
  p.add_argument("--out", required=True, help="image path, e.g. mask.png")
  p.add_argument("--causal", action="store_true", help="keep only keys <= query")
  for name, size in plots.pattern_sizes().items():
    p.add_argument(f"--{name.replace('_', '-')}", type=type(size.default), default=size.default,
                   dest=name, choices=size.choices or None,
                   metavar=None if size.choices else "N" if isinstance(size.default, int)
                   else "TEXT", help=f"{size.help} (default: %(default)s)")


def _fetch(p):
  p.add_argument("names", nargs="*", metavar="NAME",
                 help=f"datasets to fetch (default: all): {', '.join(fetch.NAMES)}")
  p.add_argument("--out", default=None, help=f"the data folder (default: ${fetch.ENV}, else "
                 f"{fetch.default_out()})")
  p.add_argument("--source", default=None, help="a mirror instead of GitHub: a URL or folder "
                 "laid out like upstream (OWNER/REPO/COMMIT/PATH) or like the data folder")


COMMANDS = (
    Command("prepare", "generate the built-in corpus (TFDS, array_record) and train its "
            "tokenizer; with --task NAME --train FILE..., make a task of your own files",
            _prepare, "new"),
    Command("train", "train (and evaluate) in --workdir; an existing run continues with its "
            "own config, flags change it", _train, "train"),
    Command("eval", "evaluate the newest checkpoint in --workdir on the validation or test "
            "split, or on a file with references (--input FILE)", _eval, "run"),
    Command("config", "print the resolved config: a run's (--workdir W) or a config file's "
            "with overrides", _config, "new"),
    Command("generate", "decode inputs from --text, --input FILE or stdin with a trained "
            "--workdir: greedy, --beam N, or sampling", _generate, "run"),
    Command("chat", "talk with a trained --workdir; the conversation is kept (/reset, /exit)",
            _decoding, "run"),
    Command("distill dump", "store a teacher's top-k log-probabilities: --teacher RUN --out DIR",
            _dump, "dump"),
    Command("distill train", "train a student on stored logits (--logits DIR) or an online "
            "--teacher, in --workdir", _student, "train"),
    Command("sweep run", "run an experiment's ablation arms (get_sweep), each in its own "
            "workdir; --config.KEY=VALUE applies to every arm", _sweep, "raw"),
    Command("sweep report", "write results.md / results.csv and plots of a sweep's workdir",
            lambda p: p.add_argument("workdir", help="the sweep's --workdir")),
    Command("import-hf", "convert a Hugging Face T5-family model directory into a run "
            "directory", _import_hf, "new"),
    Command("export-hf", "write a t5_bias run as a Hugging Face T5", _export_hf, "run"),
    Command("attention-mask", "draw an attention pattern as an image", _mask),
    Command("fetch", "download the public datasets the experiments read, checksummed", _fetch),
)
GROUPS = {"distill": "knowledge distillation: dump a teacher's logits, train a student",
          "sweep": "ablation sweeps: run the arms, then report"}
BY_NAME = {c.name: c for c in COMMANDS}

OVERRIDES_HELP = (
    "Any --config.KEY=VALUE changes one setting, type-checked against the config, e.g. "
    "--config.model.preset=tiny --config.train.num_steps=50. Top-level keys: {keys}; "
    "`refinedweb config --help` lists every key with its default, allowed values and help. A "
    "workdir that holds a run continues it with its own saved config: flags are changes to "
    "it, and those that would change its model, tokenizer, data or seed are refused "
    "({resumable} may change). More train.num_steps "
    "continue a finished run, whose learning-rate schedule then spans the new num_steps "
    "unless train.schedule_steps keeps the old length. `refinedweb config --workdir W` shows "
    "a run's config.")


def build() -> Parser:
  """The whole command line: a subparser per command, nested ones for the groups."""
  root = Parser(prog="refinedweb", description="refinedweb_jax: train, evaluate, decode and "
                "distill encoder-decoder Transformers", allow_abbrev=False)
  root.add_argument("--version", "-V", action="store_true", help="print the version")
  top = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
  groups = {}
  for command in COMMANDS:
    group, _, leaf = command.name.partition(" ")
    if leaf:
      if group not in groups:
        sub = top.add_parser(group, help=GROUPS[group], description=GROUPS[group],
                             allow_abbrev=False)
        groups[group] = sub.add_subparsers(dest="subcommand", metavar="SUBCOMMAND",
                                           parser_class=Parser, required=True)
      p = groups[group].add_parser(leaf, help=command.help, description=command.help,
                                   allow_abbrev=False, epilog=_epilog(command))
    else:
      table = command.name == "config"  # its epilog's key table keeps its lines
      p = top.add_parser(group, help=command.help, allow_abbrev=False, epilog=_epilog(command),
                         description=textwrap.fill(command.help, 79) if table else command.help,
                         formatter_class=argparse.RawDescriptionHelpFormatter if table
                         else argparse.HelpFormatter)
    command.arguments(p)
    p.set_defaults(command_name=command.name)
  return root


def _epilog(command: Command) -> str | None:
  """The --config.KEY=VALUE help; `refinedweb config --help` also lists every key."""
  if command.config in ("none", "raw"):
    return None
  text = OVERRIDES_HELP.format(keys=", ".join(configs.default_config().keys()),
                               resumable=config_keys.resumable_summary())
  if command.name != "config":
    return text
  return "\n".join([textwrap.fill(text, 79), ""] + config_keys.help_lines())


def parse(argv: list):
  """argv -> (Command, args, [(key, raw value), ...]) for the --config.KEY=VALUE flags.

  `refinedweb sweep --config ...` is `refinedweb sweep run --config ...`.
  """
  if argv[:1] == ["sweep"] and argv[1:2] not in (["run"], ["report"], ["-h"], ["--help"]):
    argv = ["sweep", "run"] + list(argv[1:])
  flags = [a for a in argv if a.startswith("--config.")]
  rest = [a for a in argv if not a.startswith("--config.")]
  args, extra = build().parse_known_args(rest)
  if extra and getattr(args, "command_name", None):
    raise UserError(f"unknown flag {extra[0]!r} for 'refinedweb {args.command_name}'; see: "
                    f"refinedweb {args.command_name} --help")
  if extra:
    raise UserError(f"unknown flag {extra[0]!r}; see: refinedweb --help")
  if args.version:
    return None, args, []
  if not getattr(args, "command_name", None):
    raise UserError("no command given; see: refinedweb --help")
  command = BY_NAME[args.command_name]
  overrides = []
  for item in flags:
    key, eq, value = item[len("--config."):].partition("=")
    if not eq:
      raise UserError(f"config override {item!r} needs a value: --config.{key}=VALUE")
    overrides.append((key, value))
  if overrides and command.config == "none":
    raise UserError(f"'refinedweb {command.name}' takes no --config.KEY=VALUE, got {flags[0]}")
  return command, args, overrides
