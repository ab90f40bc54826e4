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
  if not getattr(sys.unraisablehook, "quiets_interrupted", False):  # kept until exit: objects
    sys.unraisablehook = _quiet_interrupted(sys.unraisablehook)    # are collected after main
  try:
    from refinedweb_jax.cli import app  # JAX and the library load here, after the handler
    return app.main(sys.argv[1:] if argv is None else argv)
  except stop.Interrupted as e:  # while loading, before app.main catches it itself
    print(f"refinedweb: {e}", file=sys.stderr)
    return e.exit_code
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)


def _quiet_interrupted(hook):
  """sys.unraisablehook without the stop.Interrupted a signal raised where nothing could
  catch it (a finalizer, a thread): the command has said it in one line."""
  def quiet(unraisable):
    if not isinstance(unraisable.exc_value, stop.Interrupted):
      hook(unraisable)
  quiet.__dict__.update(getattr(hook, "__dict__", {}))  # what the hook it wraps quiets
  quiet.quiets_interrupted = True
  return quiet


def settle(command, args, overrides):
  """The command's config (app.settle): a test and a notebook's way to what a command gets."""
  from refinedweb_jax.cli import app
  return app.settle(command, args, overrides)


def parse(argv):
  from refinedweb_jax.cli import parser
  return parser.parse(argv)
