"""One training process per run directory: a lock file naming its holder, kept fresh.

<workdir>/run.lock holds the holder's host, pid, start time and a token. A second start
is refused in one line naming the holder. A holder that died leaves the lock stale: on
its own host a pid that no longer runs, anywhere a heartbeat (the file's time, renewed
every HEARTBEAT_S by a thread) older than STALE_S; a stale lock is taken over, saying so.
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
import threading
import time

from etils import epath

NAME = "run.lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0


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
    try:
      return json.loads(self.path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
      return None

  def _stale(self, holder: dict) -> bool:
    if holder.get("host") == platform.node():
      return not _alive(int(holder.get("pid", -1)))
    try:
      age = time.time() - self.path.stat().mtime
    except (FileNotFoundError, OSError):
      return True
    return age > STALE_S

  def acquire(self):
    """Takes the lock or raises Busy naming the holder."""
    for _ in range(3):
      if self._write(exclusive=True):
        break
      holder = self.holder()
      if holder is None:
        continue  # removed (or half written) meanwhile: try again
      if not self._stale(holder):
        raise Busy(f"{self.path.parent} is in use by pid {holder.get('pid')} on host "
                   f"{holder.get('host')} (since {holder.get('since')}); wait for it to finish, "
                   f"or remove {self.path} if that process is gone")
      self.took_over = holder
      self._write(exclusive=False)
      if (self.holder() or {}).get("token") == self.token:
        break
    else:
      raise Busy(f"could not take {self.path}: it keeps changing; is another start running?")
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
