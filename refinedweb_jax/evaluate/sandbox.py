"""Runs generated Python programs in a separate, resource-limited process (for pass@1).

Isolation, strongest layer first:
  1. A separate process (`sys.executable -I -B`), never the calling (training) process, in a fresh
     temporary directory as cwd, with a minimal environment (PATH, LANG; HOME and TMPDIR point to
     the temporary directory), in its own session so that a timeout kills the whole group.
  2. Linux namespaces via `unshare`, when it works here (probed once): a new network namespace (no
     interfaces up, so no connections, not even to 127.0.0.1) and a new pid namespace (the program
     cannot see or signal the caller). When the caller is root and the interpreter is readable by
     uid 65534, the program also runs as that unprivileged user.
  3. Resource limits set first thing in the child, as hard limits so the program cannot lift them:
     address space (memory_mb), CPU seconds, file size, no core dumps, no new processes. They are
     not set in a `preexec_fn`, which is unsafe when the caller has threads (JAX always does).
  4. A best-effort prelude in the child that makes socket creation, process creation, signals and
     file deletion, renaming or writing outside the temporary directory raise PermissionError. It
     is a guard against accidents, not a security boundary: code can reach the underlying C
     functions (e.g. `_socket`, `posix`, `ctypes`). Unless the program runs as uid 65534 it has
     the caller's file permissions, and this guard is all that keeps it from deleting their files.
"""

import functools
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

STATUSES = ("passed", "failed", "timeout", "error")
PYTHON = sys.executable
NOBODY = 65534
FILE_SIZE_BYTES = 16 * 2**20
SETUP_EXIT = 120  # the child could not set up its limits or guards
CPU_EXIT = 121  # the child ran out of CPU time
NAMESPACES = ["--net", "--pid", "--fork", "--mount-proc"]

log = logging.getLogger(__name__)


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 512) -> tuple[bool, str]:
  """Runs a Python program in the sandbox; (passed, status), status one of STATUSES."""
  if not timeout_s > 0:
    raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
  if memory_mb < 64:
    raise ValueError(f"memory_mb must be >= 64 (the interpreter needs ~30 MB), got {memory_mb!r}")
  prefix, drop_root = _launcher()
  cpu_s = max(1, math.ceil(timeout_s))
  with tempfile.TemporaryDirectory(prefix="sandbox-", ignore_cleanup_errors=True) as root:
    program = os.path.join(root, "main.py")
    with open(program, "w", encoding="utf-8") as f:
      f.write(code)
    stderr_path = os.path.join(root, ".stderr")
    if drop_root:
      os.chown(root, NOBODY, NOBODY)
      os.chown(program, NOBODY, NOBODY)
    command = prefix + [PYTHON, "-I", "-B", "-c", _child_source(),
                        program, str(memory_mb), str(cpu_s)]
    try:
      with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(command, cwd=root, env=_child_env(root), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    except OSError as e:
      log.warning("sandbox could not start %s: %s", PYTHON, e)
      return False, "error"
    try:
      returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
      returncode = None
    finally:
      # Also on a normal exit: nothing the program started may outlive it.
      _kill_group(proc.pid)
      proc.wait()
    status = "timeout" if returncode is None else _status(returncode)
    if status != "passed":
      log.debug("sandbox %s (exit %s): %s", status, returncode, _tail(stderr_path))
  return status == "passed", status


def isolation() -> str:
  """A one-line description of the isolation this machine gives (for logs and reports)."""
  prefix, drop_root = _launcher()
  layers = ["process", "tmp cwd", "rlimits", "prelude guard"]
  if prefix:
    layers.insert(1, "net+pid namespaces")
  if drop_root:
    layers.insert(1, f"uid {NOBODY}")
  return " + ".join(layers)


def _status(returncode: int) -> str:
  """Maps the child's exit status to one of STATUSES."""
  if returncode == 0:
    return "passed"
  if returncode in (CPU_EXIT, -signal.SIGXCPU, -signal.SIGKILL):
    # SIGKILL: the hard CPU limit, a second after the soft one (unshare 2.38 reports it as exit 1).
    return "timeout"
  if returncode < 0 or returncode in (SETUP_EXIT, 126, 127):
    return "error"  # killed by another signal, or the sandbox itself could not run
  return "failed"


def _kill_group(pgid: int) -> None:
  try:
    os.killpg(pgid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def _tail(path: str, size: int = 2000) -> str:
  try:
    with open(path, "rb") as f:
      f.seek(max(0, os.path.getsize(path) - size))
      return f.read().decode("utf-8", "replace")
  except OSError:
    return ""


def _child_env(root: str) -> dict:
  """No inherited variables but PATH and LANG; HOME and TMPDIR inside the sandbox."""
  return {"PATH": os.environ.get("PATH", os.defpath), "LANG": os.environ.get("LANG", "C.UTF-8"),
          "HOME": root, "TMPDIR": root}


@functools.lru_cache(maxsize=None)
def _child_source() -> str:
  """This file's source: the child runs it with `-c`, so it needs no read access to the package."""
  with open(__file__, encoding="utf-8") as f:
    return f.read()


@functools.lru_cache(maxsize=None)
def _launcher() -> tuple[list[str], bool]:
  """The strongest (command prefix, runs as nobody) that works on this machine, probed once."""
  root = os.geteuid() == 0
  namespaces = ["unshare"] + ([] if root else ["--map-root-user"]) + NAMESPACES
  candidates = []
  if root:
    candidates.append((namespaces + ["--setuid", str(NOBODY), "--setgid", str(NOBODY), "--"], True))
  candidates += [(namespaces + ["--"], False), ([], False)]
  for prefix, drop_root in candidates:
    if _probe(prefix, drop_root):
      return prefix, drop_root
  return [], False


def _probe(prefix: list[str], drop_root: bool) -> bool:
  """Whether the interpreter starts under this prefix, in a sandbox-like directory."""
  if prefix and shutil.which(prefix[0]) is None:
    return False
  with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as root:
    if drop_root:
      os.chown(root, NOBODY, NOBODY)
    try:
      done = subprocess.run(prefix + [PYTHON, "-I", "-B", "-c", "pass"], cwd=root,
                            env=_child_env(root), stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
      return False
  if done.returncode != 0:
    log.info("sandbox: launcher %r unavailable: %s", " ".join(prefix) or "plain process",
             done.stderr.decode("utf-8", "replace").strip()[-200:])
  return done.returncode == 0


# Everything below runs in the child only.


def _child_main(argv: list[str]) -> None:
  """Sets limits and guards, then runs the program; exits 0 iff it ran to the end."""
  import builtins
  import traceback
  import types
  exit_now = os._exit
  try:
    program, memory_mb, cpu_s = argv[1], int(argv[2]), int(argv[3])
    with open(program, encoding="utf-8") as f:
      source = f.read()
    _set_limits(memory_mb, cpu_s)
    # As pid 1 of a pid namespace the child would ignore a default-action SIGXCPU.
    signal.signal(signal.SIGXCPU, lambda *_: exit_now(CPU_EXIT))
    _install_guards(os.path.realpath(os.getcwd()))
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    exit_now(SETUP_EXIT)
  main = types.ModuleType("__main__")
  main.__builtins__ = builtins
  sys.modules["__main__"] = main
  try:
    exec(compile(source, program, "exec"), main.__dict__)  # pylint: disable=exec-used
  except BaseException:  # pylint: disable=broad-except
    # SystemExit too: a program that exits early has not run its tests.
    traceback.print_exc()
    sys.stderr.flush()
    exit_now(1)
  sys.stdout.flush()
  exit_now(0)


def _set_limits(memory_mb: int, cpu_s: int) -> None:
  limits = [(resource.RLIMIT_AS, memory_mb * 2**20), (resource.RLIMIT_FSIZE, FILE_SIZE_BYTES),
            (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, 0)]
  for kind, value in limits:
    resource.setrlimit(kind, (value, value))
  # Hard above soft, so that SIGXCPU (a clean "timeout" exit) comes before SIGKILL.
  resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def _refuse(what: str):
  def refuse(*args, **kwargs):
    raise PermissionError(f"sandbox: {what} is disabled")
  return refuse


def _install_guards(root: str) -> None:
  """Best-effort: no sockets, processes or signals; no deleting or writing outside root."""
  import builtins
  import io
  import posix
  import socket

  class NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
      raise PermissionError("sandbox: network access is disabled")

  socket.socket = socket.SocketType = NoSocket
  for name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
    setattr(socket, name, _refuse(f"socket.{name}"))

  class NoPopen(subprocess.Popen):
    def __init__(self, *args, **kwargs):
      raise PermissionError("sandbox: starting processes is disabled")

  subprocess.Popen = NoPopen
  for name in ("system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "kill",
               "killpg", "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp",
               "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve",
               "spawnvp", "spawnvpe", "_exit"):
    for module in (os, posix):
      if hasattr(module, name):
        setattr(module, name, _refuse(f"os.{name}"))

  def inside(path, dir_fd=None) -> bool:
    if isinstance(path, int):
      return True  # an open descriptor: opening it was checked
    path = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(path):
      path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    path = os.path.abspath(path)
    # Resolve the parent only: removing a link must not be judged by where it points.
    path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return path == root or path.startswith(root + os.sep) or path == os.devnull

  def check(what, *paths, dir_fds=()):
    for i, path in enumerate(paths):
      if not inside(path, dir_fds[i] if i < len(dir_fds) else None):
        raise PermissionError(f"sandbox: {what} outside {root} is blocked: {path!r}")

  def guard(module, name, checker):
    original = getattr(module, name, None)
    if original is None:
      return

    @functools.wraps(original)
    def guarded(*args, **kwargs):
      checker(*args, **kwargs)
      return original(*args, **kwargs)

    setattr(module, name, guarded)

  def one_path(name):
    return lambda path, *a, dir_fd=None, **k: check(name, path, dir_fds=(dir_fd,))

  def two_paths(name):
    return lambda src, dst, *a, src_dir_fd=None, dst_dir_fd=None, **k: check(
        name, src, dst, dir_fds=(src_dir_fd, dst_dir_fd))

  def open_mode(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+"):
      check("writing", file)

  writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

  def open_flags(path, flags, *a, dir_fd=None, **k):
    if flags & writes:
      check("writing", path, dir_fds=(dir_fd,))

  for module in (os, posix):
    for name in ("remove", "unlink", "rmdir", "removedirs", "truncate"):
      guard(module, name, one_path(f"os.{name}"))
    for name in ("rename", "replace", "renames"):
      guard(module, name, two_paths(f"os.{name}"))
    guard(module, "open", open_flags)
  guard(shutil, "rmtree", lambda path, *a, **k: check("shutil.rmtree", path))
  guard(io, "open", open_mode)
  builtins.open = io.open


if __name__ == "__main__":
  _child_main(sys.argv)
