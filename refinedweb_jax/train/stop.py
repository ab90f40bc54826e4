"""Why a run stops early: a signal or preemption (after a save), or a loss that is not finite.

SIGTERM (how preemption arrives on Cloud TPU VMs and most schedulers) and SIGINT
(Ctrl-C) ask the loop to finish its step, save a checkpoint and exit; a second
signal exits at once, leaving the last committed checkpoint as it was (Orbax writes
a step to a temporary directory and commits it by renaming). On a pod, JAX's
preemption service sees SIGTERM on every host and picks one step for all of them
(CheckpointManager.reached_preemption); SIGTERM is then left to it.
"""

import os
import signal
import threading


class Stopped(Exception):
  """The run saved a checkpoint at `step` and stopped: a signal or a preemption notice."""

  def __init__(self, reason: str, step: int, directory: str, exit_code: int):
    super().__init__(f"stopped by {reason} at step {step}; checkpoint saved in {directory}; "
                     "run the same command to resume")
    self.reason, self.step, self.exit_code = reason, step, exit_code


class Interrupted(Exception):
  """A signal that came before training could save anything (while starting)."""

  def __init__(self, signum: int):
    self.name, self.exit_code = signal.Signals(signum).name, 128 + signum
    super().__init__(f"stopped by {self.name} while starting, before any step: nothing was "
                     "changed; run the same command to start again")


PENDING = []  # signals raise_interrupted saw: a raise inside a GC callback is swallowed


def raise_interrupted(signum, frame):
  """A signal handler for the time before training installs StopSignals. Where Python
  discards the exception (the handler ran inside a GC or weakref callback), the next
  check_pending() raises it again."""
  del frame
  PENDING.append(signum)
  raise Interrupted(signum)


def check_pending():
  """Raises Interrupted for a signal raise_interrupted saw but that did not stop the start."""
  if PENDING:
    raise Interrupted(PENDING[0])


class NonFiniteLoss(Exception):
  """The loss or gradient norm was not finite where train.on_nonfinite asks to halt."""


class StopSignals:
  """Records SIGTERM / SIGINT while training instead of dying; a second one exits at once.

  A context manager (signal handlers can only be set in the main thread; elsewhere it
  does nothing). `requested` is the first signal's name, or None.
  """

  def __init__(self):
    self.requested, self._previous = None, {}

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      return self
    check_pending()
    import jax  # not at import time: the command line reads this module before JAX loads
    signums = [signal.SIGINT]
    # With JAX's preemption service (multi-host), its own handler watches SIGTERM.
    if jax.process_count() == 1:
      signums.append(signal.SIGTERM)
    for signum in signums:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self.requested is not None:  # a second signal: stop now, mid-save or not
      os.write(2, f"refinedweb: second signal ({name}): stopped at once; the newest committed "
                  "checkpoint is intact, run the same command to resume\n".encode())
      os._exit(128 + signum)
    self.requested = name

  @property
  def exit_code(self) -> int:
    return 130 if self.requested == "SIGINT" else 0
