"""The `refinedweb` command line (python -m refinedweb_jax.cli, or the `refinedweb` script).

main() sets a SIGTERM handler first, then loads the rest (app.py, and JAX with it): a
signal while starting ends the command with one line, never silently.
"""

import signal
import sys
import threading

from refinedweb_jax.train import stop


def main(argv=None) -> int:
  """Runs one command; every expected failure is one line on stderr and an exit status."""
  previous = None
  if threading.current_thread() is threading.main_thread():
    # Until training takes SIGTERM over (stop.StopSignals), it ends the command in one line.
    previous = signal.signal(signal.SIGTERM, stop.raise_interrupted)
  if not getattr(sys.unraisablehook, "quiets_echoes", False):  # kept until exit: objects
    sys.unraisablehook = _quiet_echoes(sys.unraisablehook)    # are collected after main
  try:
    from refinedweb_jax.cli import app  # JAX and the library load here, after the handler
    return app.main(sys.argv[1:] if argv is None else argv)
  except stop.Interrupted as e:  # while loading, before app.main catches it itself
    print(f"refinedweb: {e}", file=sys.stderr)
    return e.exit_code
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)


def _quiet_echoes(hook):
  """sys.unraisablehook without the echoes of what the command has said in one line: a
  stop.Interrupted raised where nothing could catch it (a finalizer, a thread), TensorStore's
  late callbacks into an event loop Orbax has closed (a failed save), and the orphaned read
  coroutines of a checkpoint that did not read back (a fallback's)."""
  def quiet(unraisable):
    error, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
    if (isinstance(error, stop.Interrupted)
        or isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
        or code is not None and "/orbax/" in code.co_filename):
      return
    hook(unraisable)
  quiet.quiets_echoes = True
  return quiet


def settle(command, args, overrides):
  """The command's config (app.settle): a test and a notebook's way to what a command gets."""
  from refinedweb_jax.cli import app
  return app.settle(command, args, overrides)


def parse(argv):
  from refinedweb_jax.cli import parser
  return parser.parse(argv)
