"""One training process per run directory: a lock file naming its holder, kept fresh.

<workdir>/run.lock holds the holder's host, pid, start time and a token. A second start
is refused in one line naming the holder. A holder that died leaves the lock stale: on
its own host a pid that no longer runs, anywhere (its own host too: pids are reused) a
heartbeat (the file's time, renewed every HEARTBEAT_S by a thread) older than STALE_S; a
lock file that is empty, not a record or names an impossible pid, once older than EMPTY_S
(a start that crashed between creating and writing it); each is taken over, saying so.
Local folders are created with O_EXCL, so two starts cannot both win; on a bucket
(gs://) creating an object is not exclusive through epath: two starts in the same
second could both take it, and the later heartbeat wins; one of them then stops at its
next heartbeat, when it finds the other's token.
"""

import datetime
import json
import os
import platform
import secrets
import sys
import threading
import time

from etils import epath

NAME = "run.lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0
EMPTY_S = 5.0  # a lock file still empty or unreadable after this long is a crashed start's
PID_MAX = 2**22  # Linux's PID_MAX_LIMIT: no process anywhere has a larger id


class Busy(ValueError):
  """The run directory is held by another live process."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process: alive
    return True
  return True


class Lock:
  """Holds <workdir>/run.lock from acquire() to release() (a context manager)."""

  def __init__(self, workdir: str):
    self.path = epath.Path(workdir) / NAME
    self.token = secrets.token_hex(8)
    self.record = {"host": platform.node(), "pid": os.getpid(), "token": self.token,
                   "since": datetime.datetime.now().isoformat(timespec="seconds")}
    self._stop = threading.Event()
    self._thread = None
    self.took_over = None  # the stale holder's record, when there was one

  def _write(self, exclusive: bool) -> bool:
    text = json.dumps(self.record)
    if "://" in str(self.path):
      if exclusive and self.path.exists():
        return False
      self.path.write_text(text)
      return True
    try:
      fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else 0)
                   | os.O_TRUNC, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(text)
    return True

  def holder(self) -> dict | None:
    """The lock's record, or None when there is none or it is not a record."""
    try:
      record = json.loads(self.path.read_text())
    except (FileNotFoundError, ValueError, OSError):
      return None
    return record if isinstance(record, dict) else None

  def _age(self) -> float | None:
    """Seconds since the lock was last written (its heartbeat); None: it is gone."""
    try:  # os.stat locally: epath's mtime is whole seconds
      mtime = (self.path.stat().mtime if "://" in str(self.path)
               else os.stat(self.path).st_mtime)
      return max(time.time() - mtime, 0.0)
    except (FileNotFoundError, OSError):
      return None

  def _read(self) -> tuple[dict | None, str | None]:
    """(the holder's record, None), or (None, why the lock file cannot be a live holder's
    record); (None, None): it is gone."""
    try:
      text = self.path.read_text()
    except (FileNotFoundError, OSError):
      return None, None
    if not text.strip():
      return None, "it is empty"
    try:
      record = json.loads(text)
    except ValueError:
      return None, f"it is not JSON ({text[:40]!r})"
    if not isinstance(record, dict):
      return None, f"it holds a JSON {type(record).__name__}, not a lock record"
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_MAX:
      return None, f"it names pid {pid!r}, which no process can have"
    return record, None

  def _stale(self, holder: dict) -> str | None:
    """Why a holder counts as gone: a pid that no longer runs here, or a heartbeat older
    than STALE_S (on this host too: a pid is reused); None while it lives."""
    age = self._age()
    if age is None:
      return "gone"
    if holder.get("host") == platform.node() and not _alive(holder["pid"]):
      return "gone"
    if age > STALE_S:
      return f"its heartbeat stopped {age:.0f}s ago (over {STALE_S:.0f}s)"
    return None

  def acquire(self):
    """Takes the lock or raises Busy naming the holder."""
    deadline = time.time() + EMPTY_S + 5
    while True:
      if self._write(exclusive=True):
        break
      if time.time() > deadline:
        raise Busy(f"could not take {self.path}: it keeps changing; is another start running?")
      (holder, damage), age = self._read(), self._age()
      if age is None or (holder is None and damage is None):
        continue  # removed meanwhile: try again
      if damage and age < EMPTY_S:  # perhaps a start between creating and writing it
        time.sleep(0.2)
        continue
      why = damage or self._stale(holder)
      if why is None:
        raise Busy(f"{self.path.parent} is in use by pid {holder.get('pid')} on host "
                   f"{holder.get('host')} (since {holder.get('since')}); wait for it to finish, "
                   f"or remove {self.path} if that process is gone")
      if why == "gone":
        self.took_over = holder  # the caller says so, naming the holder
      else:
        who = "" if damage else f" of pid {holder.get('pid')} on host {holder.get('host')}"
        print(f"refinedweb: took over the lock{who} ({self.path}): {why}", file=sys.stderr,
              flush=True)
      self._write(exclusive=False)
      if (self.holder() or {}).get("token") == self.token:
        break
    self._thread = threading.Thread(target=self._beat, daemon=True, name="run.lock")
    self._thread.start()
    return self

  def _beat(self):
    while not self._stop.wait(HEARTBEAT_S):
      if (self.holder() or {}).get("token") != self.token:
        return  # taken over: the other start holds it now
      self._write(exclusive=False)

  def release(self):
    self._stop.set()
    if (self.holder() or {}).get("token") == self.token:
      try:
        self.path.unlink()
      except FileNotFoundError:
        pass

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
