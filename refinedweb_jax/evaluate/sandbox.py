"""Runs generated Python programs in an OS-level sandbox (for pass@1).

Isolation, strongest layer first:
  1. bubblewrap (`bwrap`, Debian's package bubblewrap): new user, pid, network, ipc, uts and
     cgroup namespaces, running as uid 65534; the interpreter and its standard library are
     bound read-only, the only writable path is a fresh size-limited tmpfs (the working
     directory), and nothing else of the host's file system is visible; it dies with its
     parent. Without bwrap, pass@1 refuses to run unless REFINEDWEB_UNSAFE_SANDBOX=1 is set,
     which runs the program as a plain process (still with 2-4).
  2. A separate process (`python -I -B`), never the calling (training) process, with a minimal
     environment, in its own session so that a timeout kills the whole group.
  3. Resource limits set first thing in the child, as hard limits so the program cannot lift
     them: address space (memory_mb), CPU seconds, file size, no core dumps, no new processes.
  4. A best-effort prelude that makes sockets, processes, signals and writes outside the
     working directory raise PermissionError (code can reach the C functions through ctypes;
     the sandbox, not the prelude, is the boundary).
A program passes only if it exits 0 *and* prints a nonce that the harness writes after the
program and its tests have run; a program that ends the process early (os._exit(0),
ctypes' _exit) therefore fails. The nonce lives in the harness's memory, so this guards
model outputs that end early, not code written to search its own process for it.
"""

import functools
import logging
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile

STATUSES = ("passed", "failed", "timeout", "error")
PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
NOBODY = 65534
FILE_SIZE_BYTES = 16 * 2**20
DISK_BYTES = 64 * 2**20  # the sandbox's writable tmpfs
SETUP_EXIT = 120  # the child could not set up its limits or guards
CPU_EXIT = 121  # the child ran out of CPU time
UNSAFE = "REFINEDWEB_UNSAFE_SANDBOX"  # =1: run without bwrap (a plain, rlimited process)
_WORK = "/sandbox"

log = logging.getLogger(__name__)


class SandboxUnavailable(ValueError):
  """bubblewrap cannot run here and the unsafe fallback was not asked for."""


def check_available():
  """Raises SandboxUnavailable (one line: how to install bwrap) unless code can run safely."""
  _launcher()


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 512) -> tuple[bool, str]:
  """Runs a Python program in the sandbox; (passed, status), status one of STATUSES."""
  if not timeout_s > 0:
    raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
  if memory_mb < 64:
    raise ValueError(f"memory_mb must be >= 64 (the interpreter needs ~30 MB), got {memory_mb!r}")
  launcher = _launcher()
  cpu_s = max(1, math.ceil(timeout_s))
  nonce = secrets.token_hex(16)
  with tempfile.TemporaryDirectory(prefix="sandbox-", ignore_cleanup_errors=True) as host:
    program = os.path.join(host, "main.py")
    with open(program, "w", encoding="utf-8") as f:
      f.write(code)
    out_path, err_path = os.path.join(host, ".stdout"), os.path.join(host, ".stderr")
    prefix, cwd, program_arg, home = launcher(host, program)
    command = prefix + [PYTHON, "-I", "-B", "-c", _child_source(), program_arg, str(memory_mb),
                        str(cpu_s)]
    try:
      with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(command, cwd=cwd, env=_child_env(home), stdin=subprocess.PIPE,
                                stdout=out, stderr=err, start_new_session=True)
        proc.stdin.write(nonce.encode() + b"\n")
        proc.stdin.close()
    except OSError as e:
      log.warning("sandbox could not start %s: %s", PYTHON, e)
      return False, "error"
    try:
      returncode = proc.wait(timeout=timeout_s + 2)
    except subprocess.TimeoutExpired:
      returncode = None
    finally:
      # Also on a normal exit: nothing the program started may outlive it.
      _kill_group(proc.pid)
      proc.wait()
    status = "timeout" if returncode is None else _status(returncode)
    if status == "passed" and _tail(out_path, 200).rstrip().splitlines()[-1:] != [nonce]:
      status = "failed"  # exited 0 without getting to the end: os._exit(0) and the like
    if status != "passed":
      log.debug("sandbox %s (exit %s): %s", status, returncode, _tail(err_path))
  return status == "passed", status


def isolation() -> str:
  """A one-line description of the isolation this machine gives (for logs and reports)."""
  if _bwrap_works():
    return ("bwrap (user/pid/net namespaces, uid 65534, read-only interpreter, tmpfs cwd) + "
            "rlimits + prelude guard + nonce")
  return "plain process + rlimits + prelude guard + nonce (UNSAFE)"


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
  return {"PATH": "/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8"), "HOME": root,
          "TMPDIR": root}


@functools.lru_cache(maxsize=None)
def _child_source() -> str:
  """This file's source: the child runs it with `-c`, so it needs no read access to the package."""
  with open(__file__, encoding="utf-8") as f:
    return f.read()


def _bwrap_prefix(program: str) -> list[str]:
  """The bwrap command line: read-only system and interpreter, a tmpfs cwd, the program."""
  prefix = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--uid", str(NOBODY), "--gid", str(NOBODY)]
  for path in ("/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/localtime"):
    prefix += ["--ro-bind-try", path, path]
  base = os.path.realpath(sys.base_prefix)
  if not base.startswith("/usr/"):
    prefix += ["--ro-bind", base, base]
  prefix += ["--proc", "/proc", "--dev", "/dev", "--size", str(DISK_BYTES), "--tmpfs", _WORK,
             "--ro-bind", program, "/code/main.py", "--chdir", _WORK]
  return prefix


@functools.lru_cache(maxsize=None)
def _bwrap_works() -> bool:
  """Whether bwrap starts the interpreter here (probed once)."""
  if shutil.which("bwrap") is None:
    return False
  with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as host:
    program = os.path.join(host, "main.py")
    with open(program, "w", encoding="utf-8") as f:
      f.write("pass\n")
    try:
      done = subprocess.run(_bwrap_prefix(program) + [PYTHON, "-I", "-B", "/code/main.py"],
                            env=_child_env(_WORK), stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=30)
    except (OSError, subprocess.TimeoutExpired):
      return False
  if done.returncode != 0:
    log.info("sandbox: bwrap unavailable: %s", done.stderr.decode("utf-8", "replace")[-300:])
  return done.returncode == 0


def _launcher():
  """f(host dir, program path) -> (command prefix, cwd, program path for the child)."""
  if _bwrap_works():
    return lambda host, program: (_bwrap_prefix(program), "/", "/code/main.py", _WORK)
  if os.environ.get(UNSAFE) == "1":
    log.warning("sandbox: bwrap unavailable; %s=1: running generated code as a plain process",
                UNSAFE)
    return lambda host, program: ([], host, program, host)
  raise SandboxUnavailable(
      "pass@1 runs generated code only inside bubblewrap, which cannot run here: install it "
      f"(apt-get install -y bubblewrap), or set {UNSAFE}=1 to run it as a plain process")


# Everything below runs in the child only.


def _child_main(argv: list[str]) -> None:
  """Sets limits and guards, then runs the program; exits 0 iff it ran to the end."""
  import builtins
  import traceback
  import types
  exit_now, write = os._exit, os.write
  try:
    nonce = sys.stdin.buffer.readline().strip()
    os.close(0)
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
  write(1, b"\n" + nonce + b"\n")  # the program and its tests ran to the end
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
