"""Runs generated Python programs against their tests in an OS-level sandbox (for pass@1).

Verdicts come from code the program cannot reach. Each program gets two sandboxed processes
(sandbox_child.py, with sandbox_wire.py and sandbox_guard.py): the candidate C runs the program
only; the test driver T runs the tests, with each function the tests take from the program bound
to a proxy. A proxy call goes to C over a pipe; C runs the function and answers with its result in a strict encoding of exact
builtin types only (None, bool, int, float, complex, str, bytes, range, list, tuple, dict,
set, frozenset, nested; `type(x) is int`, not isinstance), so T compares values it built. A
result of any other type (a class whose __eq__ is always True, an int subclass) fails the
program; three stdlib types are rebuilt in T from their contents: Counter and OrderedDict
(defaultdict arrives as a dict) and re.Match (a stand-in with its groups and spans). An
exception in C is raised in T as its first builtin base type (StopIteration and other
non-Exceptions as RuntimeError). Only T writes the verdict the host reads; C's output never
reaches it, and C (its own pid namespace) cannot reach T's memory: C can forge only its answers
and the contents of shared objects, which are what is tested. (The tests do not run in C's
interpreter: whatever a driver there could do to report a pass, through a descriptor, a nonce or
its exit, the program could do too, by frames, gc or ctypes.) Messages are at most
sandbox_wire.MESSAGE_BYTES.
What one interpreter gives, the two give too (a plain `python program+tests` verdict):
  - a mutable value (list, dict, set, bytearray, an instance of a class the tests define) that
    crosses over is one shared object: a handle each side, its changes sent with the next call
    or answer and applied in place, and it comes back as the same object, so argument
    mutation, aliasing (`[row] * 2`, a returned module-level list) and identity (`b is a`) are
    what the tests see; an iterator the program returns (a generator) is pulled item by item;
    the tests read the program's module-level values; the tests' own classes are defined in C
    too, and their instances are rebuilt from their attributes (with the tests' __eq__).
Semantic differences that remain:
  - the tests see the program's functions and values, not its modules; a function named
    like a builtin is used only if it is the entry point or the reference solution defines it
    (MBPP's `sum`), so that a redefined set() or abs() cannot satisfy `set(f(x)) == set(y)`;
    a stdlib module the tests use (`math.isclose`) is imported in T, whoever imported it;
  - instances of the program's own classes fail (they are not builtin values); a shared object
    is synced whole (nested aliasing inside a change, or identity between objects inside two
    different values, is not kept); a module-level value the program rebinds later is stale;
  - the program's top-level code runs once, when C starts; if it fails, so does the program;
  - the program cannot start threads (as under RLIMIT_NPROC=0, see below).
run_python(code) has no tests: its verdict is the program's own (whether its top-level code ran
to the end), which suits checks of the sandbox, not scoring.

Isolation of each process, strongest layer first:
  1. bubblewrap (`bwrap`, Debian's package bubblewrap): new user, pid, network, ipc, uts and
     cgroup namespaces, running as uid 65534 that is uid 65534 on the host too: run by root,
     bwrap itself is started as 65534 (setpriv), so no uid or gid maps to host root and /proc/sys
     is read-only to the program (a root-started bwrap maps it to host root). Of the
     interpreter's installation only the executable, libpython and the standard library are
     bound read-only (through a root bwrap's view when they live under a closed /root),
     site-packages masked by an empty read-only tmpfs (no third-party imports, no .pth files);
     / is read-only, /dev holds null, zero, full, random and urandom only (no /dev/shm); the
     only writable path is a fresh tmpfs of DISK_BYTES (the working directory); it dies with
     its parent. Without bwrap, pass@1 refuses to run unless REFINEDWEB_UNSAFE_SANDBOX=1 is set,
     which runs plain processes (still with 2-4): UNSAFE, not least because C may then read T's
     memory.
  2. Separate processes (`python -I -B`), never the calling (training) process, with a minimal
     environment, each in its own session so that a timeout kills the whole group.
  3. Limits set first thing in each child: hard rlimits (address space and data, CPU seconds,
     file size, 256 open files, no core dumps, processes, locked memory or message queues) and a
     seccomp filter (x86_64 and aarch64) under which fork, clone, unshare, setns, mount,
     ptrace, bpf, keyctl, memfd_create, SysV shm and the like fail (sandbox_guard._DENIED).
     Memory is bounded without a cgroup: the address-space limit, the sized tmpfs, and no
     memfd, shm, /dev/shm or writable / that would hold pages outside it.
  4. A best-effort prelude that makes sockets, processes, signals and writes outside the
     working directory raise PermissionError (ctypes reaches the C functions; it is no boundary).
"""

import functools
import json
import logging
import math
import os
import platform
import shutil
import signal
import site
import stat
import subprocess
import sys
import sysconfig
import tempfile

from refinedweb_jax.evaluate import sandbox_child
from refinedweb_jax.evaluate import sandbox_guard
from refinedweb_jax.evaluate import sandbox_wire
from refinedweb_jax.evaluate.sandbox_child import CPU_EXIT, SETUP_EXIT

STATUSES = ("passed", "failed", "timeout", "error")
PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
NOBODY = 65534
DISK_BYTES = 64 * 2**20  # the sandbox's writable tmpfs
UNSAFE = "REFINEDWEB_UNSAFE_SANDBOX"  # =1: run without bwrap (plain, rlimited processes)
_WORK = "/sandbox"

log = logging.getLogger(__name__)


class SandboxUnavailable(ValueError):
  """bubblewrap cannot run here and the unsafe fallback was not asked for."""


def check_available():
  """Raises SandboxUnavailable (one line: how to install bwrap) unless code can run safely."""
  _launcher()


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 512) -> tuple[bool, str]:
  """Runs a program alone; passed iff its top-level code ran to the end (its own verdict)."""
  return run_tests(code, "", timeout_s=timeout_s, memory_mb=memory_mb)


def run_tests(code: str, tests: str, *, setup: str = "", entry_point: str | None = None,
              names: tuple = (), timeout_s: float = 5.0,
              memory_mb: int = 512) -> tuple[bool, str]:
  """Runs a program against tests; (passed, status), status one of STATUSES.

  `setup` runs in T before the tests and its definitions win over the program's (but the entry
  point's); `entry_point`: the function passed to the tests' check(candidate) when they define
  one and do not call it; `names`: program functions the tests may use though named like builtins.
  """
  if not timeout_s > 0:
    raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
  if memory_mb < 64:
    raise ValueError(f"memory_mb must be >= 64 (the interpreter needs ~30 MB), got {memory_mb!r}")
  launcher = _launcher()
  job = json.dumps({"tests": tests, "setup": setup, "entry_point": entry_point,
                    "names": list(names)})
  limits = [str(memory_mb), str(max(1, math.ceil(timeout_s)))]
  with tempfile.TemporaryDirectory(prefix="sandbox-", ignore_cleanup_errors=True) as host:
    calls, answers = os.pipe(), os.pipe()  # (read, write): T -> C, C -> T
    procs = []
    try:
      for role, fds, payload in (("candidate", (calls[0], answers[1]), code),
                                 ("tests", (answers[0], calls[1]), job)):
        procs.append(_start(launcher, host, role, fds, limits))
        procs[-1].stdin.write(payload.encode("utf-8", "surrogatepass"))
        procs[-1].stdin.close()
    except OSError as e:
      _stop(procs)
      log.warning("sandbox could not start %s: %s", PYTHON, e)
      return False, "error"
    finally:
      for fd in calls + answers:
        os.close(fd)  # else T would never see C's end
    candidate, driver = procs
    try:
      returncode = driver.wait(timeout=timeout_s + 2)
    except subprocess.TimeoutExpired:
      returncode = None
    _stop([driver])
    verdict = _verdict(os.path.join(host, "tests.out")) if returncode == 0 else {}
    try:  # when C ended mid-run, its exit says why
      ended = candidate.wait(timeout=1 if verdict.get("status") == "lost" else 0)
    except subprocess.TimeoutExpired:
      ended = None
    _stop([candidate])
    status = _outcome(returncode, verdict, ended)
    if status != "passed":
      log.debug("sandbox %s: %s; tests: %s; program: %s", status, verdict.get("error"),
                _tail(os.path.join(host, "tests.err")), _tail(os.path.join(host, "candidate.err")))
  return status == "passed", status


def isolation() -> str:
  """A one-line description of the isolation this machine gives (for logs and reports)."""
  guards = ("rlimits + seccomp (no fork, namespaces, mounts, ptrace, memfd) + prelude guard; "
            "tests in their own process")
  if _bwrap_works():
    host = "host root" if os.geteuid() == 0 and not _drop_root() else "not root"
    return (f"bwrap (user/pid/net namespaces, uid 65534 ({host} on the host), read-only root, "
            f"interpreter and stdlib, sized tmpfs cwd) + {guards}")
  return f"plain processes + {guards} (UNSAFE)"


def _start(launcher, host: str, role: str, fds: tuple, limits: list) -> subprocess.Popen:
  """Starts one sandboxed child (its payload comes on stdin)."""
  prefix, cwd, home = launcher(os.path.join(host, role))
  command = prefix + [PYTHON, "-I", "-B", "-c", _child_source(), role, *limits, *map(str, fds)]
  with open(os.path.join(host, f"{role}.out"), "wb") as out, \
       open(os.path.join(host, f"{role}.err"), "wb") as err:
    return subprocess.Popen(command, cwd=cwd, env=_child_env(home), stdin=subprocess.PIPE,
                            stdout=out if role == "tests" else subprocess.DEVNULL, stderr=err,
                            pass_fds=fds, start_new_session=True)


def _stop(procs) -> None:
  # Also after a normal exit: nothing a child started may outlive it.
  for proc in procs:
    _kill_group(proc.pid)
    proc.wait()


def _outcome(returncode: int | None, verdict: dict, candidate: int | None) -> str:
  """The status of a run from T's exit status and verdict, and C's exit status (None: running)."""
  if returncode is None:
    return "timeout"
  if returncode != 0:
    return "timeout" if _status(returncode) == "timeout" else "error"
  if verdict.get("status") == "lost":  # C ended before the tests did
    return "timeout" if candidate is not None and _status(candidate) == "timeout" else "failed"
  return verdict["status"] if verdict.get("status") in ("passed", "failed") else "error"


def _verdict(path: str) -> dict:
  """T's verdict, the one line it writes to its stdout."""
  try:
    verdict = json.loads(_tail(path, 4096).strip().splitlines()[-1])
  except (IndexError, ValueError):
    return {}
  return verdict if isinstance(verdict, dict) else {}


def _status(returncode: int) -> str:
  """Maps a child's exit status to one of STATUSES."""
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
  """The child's source, run with `-c`: it needs no read access to the package."""
  sources = []
  for module in (sandbox_guard, sandbox_wire, sandbox_child):  # the child last: it runs main
    with open(module.__file__, encoding="utf-8") as f:
      sources.append(f.read())
  return "\n\n".join(sources)


@functools.lru_cache(maxsize=None)
def _interpreter_paths() -> tuple:
  """(dest, source) pairs: the interpreter, its libpython and stdlib; site-packages dirs."""
  base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
          "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix}
  paths = sysconfig.get_paths(vars=base)  # the base interpreter's, not a virtualenv's
  binds = {PYTHON: PYTHON}
  for key in ("stdlib", "platstdlib"):
    binds[os.path.realpath(paths[key])] = os.path.realpath(paths[key])
  if sysconfig.get_config_var("Py_ENABLE_SHARED"):
    lib = os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME"))
    if os.path.exists(lib):
      binds[lib] = os.path.realpath(lib)  # at the name the loader looks for
  site_dirs = site.getsitepackages([sys.base_prefix]) + [paths["purelib"], paths["platlib"]]
  masked = sorted({os.path.realpath(p) for p in site_dirs if os.path.isdir(p)})
  return tuple(binds.items()), tuple(masked)


def _interpreter_binds() -> list:
  """bwrap arguments: the interpreter, its libpython and stdlib read-only, site-packages empty."""
  binds, masked = _interpreter_paths()
  args = []
  for dest, source in binds:
    if not dest.startswith("/usr/"):  # /usr is bound whole
      args += ["--ro-bind", source, dest]
  for path in masked:
    args += ["--tmpfs", path, "--remount-ro", path]
  return args


def _reachable_view() -> list:
  """Arguments of a root bwrap under which NOBODY can reach the interpreter ([] if it can).

  An interpreter under /root (mode 0700) is out of NOBODY's reach, and an unprivileged bwrap
  opens its bind sources as NOBODY: this view puts an open tmpfs over each closed directory
  and binds only the interpreter's paths into it.
  """
  args, made = [], set()
  for _, source in _interpreter_paths()[0]:
    parts = source.split(os.sep)[1:]
    ancestors = ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
    closed = [a for a in ancestors if not os.stat(a).st_mode & stat.S_IXOTH]
    if not closed:
      continue
    for ancestor in ancestors[ancestors.index(closed[0]):]:
      if ancestor not in made:
        made.add(ancestor)
        args += ["--tmpfs", ancestor] if ancestor == closed[0] else [
            "--perms", "0755", "--dir", ancestor]
    args += ["--ro-bind", source, source]
  return args


@functools.lru_cache(maxsize=None)
def _drop_root() -> tuple:
  """The prefix that starts bwrap as NOBODY when we are root, so that no uid maps to host root.

  Started by root, bwrap maps the sandbox's uid to host uid 0 (a write to /proc/sys reaches the
  host); started by NOBODY, to NOBODY. () when not root or when setpriv is missing (said once).
  """
  if os.geteuid() != 0:
    return ()
  if shutil.which("setpriv") is None:
    log.warning("sandbox: running as root without setpriv (util-linux): the sandboxed uid maps "
                "to host root; install util-linux to run it as uid %d", NOBODY)
    return ()
  drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
  view = _reachable_view()
  if view:
    drop = ["bwrap", "--dev-bind", "/", "/", *view, "--die-with-parent", "--", *drop]
  return tuple(drop)


def _bwrap_prefix() -> list[str]:
  """The bwrap command line: read-only root, system libraries and interpreter, a tmpfs cwd."""
  prefix = [*_drop_root(), "bwrap", "--unshare-all", "--unshare-user", "--die-with-parent",
            "--new-session", "--uid", str(NOBODY), "--gid", str(NOBODY)]
  for path in ("/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/localtime"):
    prefix += ["--ro-bind-try", path, path]
  # A few device nodes, no devpts (which would make bwrap nest a user namespace whose map
  # reads "65534 0 1"), no /dev/shm; the only writable path is the sized tmpfs cwd.
  for device in ("null", "zero", "full", "random", "urandom"):
    prefix += ["--dev-bind", f"/dev/{device}", f"/dev/{device}"]
  return prefix + [*_interpreter_binds(), "--proc", "/proc", "--size", str(DISK_BYTES),
                   "--tmpfs", _WORK, "--remount-ro", "/", "--chdir", _WORK]


@functools.lru_cache(maxsize=None)
def _bwrap_works() -> bool:
  """Whether bwrap starts the interpreter here (probed once)."""
  if shutil.which("bwrap") is None:
    return False
  try:
    done = subprocess.run(_bwrap_prefix() + [PYTHON, "-I", "-B", "-c", "pass"],
                          env=_child_env(_WORK), stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return False
  if done.returncode != 0:
    log.info("sandbox: bwrap unavailable: %s", done.stderr.decode("utf-8", "replace")[-300:])
  return done.returncode == 0


@functools.lru_cache(maxsize=None)
def _unenforced() -> tuple:
  """The limits this machine cannot enforce (each said once, when the first program runs)."""
  missing = []
  if platform.machine() not in sandbox_guard._DENIED:  # pylint: disable=protected-access
    missing.append(f"the seccomp filter (no syscall table for {platform.machine()}): only "
                   "RLIMIT_NPROC stops new processes, which does not bind root")
  for what in missing:
    log.warning("sandbox: cannot enforce %s", what)
  return tuple(missing)


def _launcher():
  """f(host dir of one child) -> (command prefix, cwd, home inside the sandbox)."""
  _unenforced()
  if _bwrap_works():
    return lambda host: (_bwrap_prefix(), "/", _WORK)
  if os.environ.get(UNSAFE) == "1":
    log.warning("sandbox: bwrap unavailable; %s=1: running generated code as a plain process",
                UNSAFE)

    def plain(host):
      os.makedirs(host)
      return [], host, host

    return plain
  raise SandboxUnavailable(
      "pass@1 runs generated code only inside bubblewrap, which cannot run here: install it "
      f"(apt-get install -y bubblewrap), or set {UNSAFE}=1 to run it as a plain process")
