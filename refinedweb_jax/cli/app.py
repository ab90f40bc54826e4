"""The command line's work: parse (parser.py's table), settle the config once, dispatch.

Every expected failure is one line on stderr and an exit status: 2 for input the user can
fix, 1 for a run that stopped (a non-finite loss, a storage error), 130 for an interrupt.
"""

import importlib.util
import logging
import os
import shlex
import sys

from absl import logging as absl_logging
from etils import epath

import refinedweb_jax
from refinedweb_jax import backend, sharding
from refinedweb_jax.cli import commands, parser
from refinedweb_jax.cli.parser import UserError, parse
from refinedweb_jax.train import resume, stop


def settle(command, args, overrides):
  """The command's config (resume.settle), by the table's `config` rule; None for none."""
  mode = command.config
  for flag in ("workdir", "teacher", "logits", "out"):
    check_storage(f"--{flag}", getattr(args, flag, None))
  if mode in ("none", "raw"):
    return None
  if command.name == "distill train":
    overrides = list(overrides) + [(f"distill.{key}", os.path.abspath(path)) for key, path in
                                   (("logits", args.logits), ("teacher", args.teacher)) if path]
  if mode == "train":
    _make_workdir(args.workdir)
    return resume.settle(args.workdir, spec=args.config, overrides=overrides)
  if mode == "run" and args.config:
    raise UserError(f"'refinedweb {command.name}' uses the run's own config (saved in "
                    f"{args.workdir}); --config {args.config} is not taken: change single "
                    "settings with --config.KEY=VALUE")
  if mode == "run":  # with no run yet, the flags are checked first; loading it then fails
    return resume.settle(args.workdir if resume.has_run(args.workdir) else None,
                         overrides=overrides)
  if mode == "dump" and not args.config:  # the teacher's config; the dump's settings are own
    return resume.settle(args.teacher, overrides=overrides, also=("distill.",))
  if command.name == "config" and args.workdir:
    if resume.has_run(args.workdir):
      return resume.settle(args.workdir, overrides=overrides)
    return resume.settle(None, base=commands.config_json(args.workdir), overrides=overrides)
  return resume.settle(None, spec=args.config, overrides=overrides)


def main(argv) -> int:
  """Runs one command (argv without the program's name); returns its exit status."""
  # TFDS logs a warning per build of a custom-sized corpus; keep the console for progress.
  absl_logging.set_verbosity(absl_logging.ERROR)
  # A failed background save fails several of Orbax's write futures at once: the error is
  # reported here once, not by asyncio for every future or Orbax's own traceback log.
  logging.getLogger("asyncio").setLevel(logging.CRITICAL)
  absl_logging.get_absl_logger().addFilter(
      lambda record: not (record.levelno >= logging.ERROR and "/orbax/" in record.pathname))
  try:
    if not argv:
      print(parser.build().format_help(), file=sys.stderr)
      return 2
    command, args, overrides = parse(argv)
    if command is None:
      print(f"refinedweb_jax {refinedweb_jax.__version__}")
      return 0
    args.command_line = shlex.join(["refinedweb"] + list(argv))
    _start_jax(overrides)
    settled = settle(command, args, overrides)
    stop.check_pending()
    result = commands.BODIES[command.name](args, overrides if command.config == "raw"
                                           else settled)
    return result if isinstance(result, int) else 0
  except SystemExit as e:  # argparse's --help (0)
    return e.code if isinstance(e.code, int) else 0
  except ValueError as e:
    if _storage_error(e):  # TensorStore's wording of a failed write (a full disk, say)
      return _fail_storage(e)
    return _fail(e, 2)
  except (UserError, FileNotFoundError) as e:
    return _fail(e, 2)
  except (stop.Stopped, stop.Interrupted) as e:
    print(f"refinedweb: {e}", file=sys.stderr)
    return e.exit_code
  except stop.NonFiniteLoss as e:
    return _fail(e, 1)
  except BrokenPipeError:  # the reader went away (`refinedweb eval | head`): nothing to say
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
  except OSError as e:  # the workdir cannot be written: read-only, a file, a full disk, ...
    return _fail_storage(e)
  except KeyboardInterrupt:
    print("refinedweb: interrupted", file=sys.stderr)
    return 130


def _start_jax(overrides):
  """Compiler flags and a multi-process job's start, before any command reads a checkpoint
  (which starts JAX); the job comes from --config.distributed.* or JAX_* variables."""
  backend.configure()
  given = {key.split(".", 1)[1]: value for key, value in overrides
           if key.startswith("distributed.")}
  sharding.initialize_distributed(given.get("coordinator_address"),
                                  given.get("num_processes"), given.get("process_id"))


def check_storage(flag: str, path) -> None:
  """A gs:// path needs gcsfs (through etils.epath); without it, one line saying so."""
  if not isinstance(path, str) or not path.startswith("gs://"):
    return
  if importlib.util.find_spec("gcsfs") is None:
    raise UserError(f"{flag} {path!r} is on Google Cloud Storage, which needs the gcsfs "
                    "package: pip install gcsfs (or use a local folder)")


def _make_workdir(path: str):
  """Creates the run directory (a local folder or gs:// URL) before anything else runs."""
  if not str(path).strip():
    raise UserError("--workdir is empty; give a folder (or gs:// path) for the run")
  try:
    epath.Path(path).mkdir(parents=True, exist_ok=True)
  except OSError as e:  # nothing runs yet: no background writer to stop, a plain error
    raise UserError(f"--workdir {path!r} cannot be created: {e.strerror or e}") from e
  if not epath.Path(path).is_dir():
    raise UserError(f"--workdir {path!r} is not a directory")


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
