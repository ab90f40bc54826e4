"""Limits and guards a sandboxed child sets on itself first (see sandbox.py, layer 3 and 4).

Standard library only: the host prepends this file's source to sandbox_child.py's.
"""

import functools
import os
import resource
import shutil
import subprocess

FILE_SIZE_BYTES = 16 * 2**20
OPEN_FILES = 256  # RLIMIT_NOFILE: also bounds the memory pipes can hold
# Per architecture: seccomp's audit arch, then the syscalls that fail with EPERM: the ones that
# create processes or threads (fork, vfork, clone, clone3, whatever their flags), namespaces and
# mounts (unshare, setns, mount, umount2, pivot_root, chroot, the new mount API), other
# processes' memory (ptrace, process_vm_*, kcmp, pidfd_getfd), the kernel's keyrings, BPF, perf,
# modules, kexec, swap, reboot, acct, syslog, quotactl, file handles, io_uring, and memory that
# no limit counts (memfd_create, memfd_secret, userfaultfd, SysV shm/msg/sem, POSIX mqueues).
_DENIED = {
    "x86_64": (0xC000003E, (
        57, 58, 56, 435, 272, 308, 165, 166, 155, 161, 428, 429, 430, 431, 432, 433, 442,
        101, 310, 311, 312, 438, 250, 248, 249, 321, 298, 175, 313, 176, 246, 320, 167, 168,
        169, 163, 103, 179, 303, 304, 425, 426, 427, 319, 447, 323, 29, 30, 68, 64, 240, 172,
        173)),
    "aarch64": (0xC00000B7, (
        220, 435, 97, 268, 40, 39, 41, 51, 428, 429, 430, 431, 432, 433, 442, 117, 270, 271,
        272, 438, 219, 217, 218, 280, 241, 105, 273, 106, 104, 294, 224, 225, 142, 89, 116, 60,
        264, 265, 425, 426, 427, 279, 447, 282, 194, 196, 186, 190, 180)),
}


def _set_limits(memory_mb: int, cpu_s: int) -> None:
  limits = [(resource.RLIMIT_AS, memory_mb * 2**20), (resource.RLIMIT_DATA, memory_mb * 2**20),
            (resource.RLIMIT_FSIZE, FILE_SIZE_BYTES), (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_NOFILE, OPEN_FILES),
            (resource.RLIMIT_MEMLOCK, 0), (resource.RLIMIT_MSGQUEUE, 0)]
  for kind, value in limits:
    resource.setrlimit(kind, (value, value))
  # Hard above soft, so that SIGXCPU (a clean "timeout" exit) comes before SIGKILL.
  resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def _forbid_new_processes() -> None:
  """A seccomp filter: the _DENIED syscalls (fork, clone, unshare, mount, ...) fail with EPERM."""
  import ctypes
  import errno
  import platform
  import struct
  if platform.machine() not in _DENIED:
    return  # RLIMIT_NPROC alone, on another architecture
  arch, forks = _DENIED[platform.machine()]
  load, equal, at_least, ret = 0x20, 0x15, 0x35, 0x06  # classic BPF opcodes
  program = [(load, 0, 0, 4), (equal, 0, len(forks) + 3, arch), (load, 0, 0, 0),
             (at_least, len(forks) + 1, 0, 0x40000000)]  # x32 system calls
  program += [(equal, len(forks) - i, 0, nr) for i, nr in enumerate(forks)]
  program += [(ret, 0, 0, 0x7FFF0000), (ret, 0, 0, 0x00050000 | errno.EPERM)]  # allow; fail
  code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in program))

  class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

  libc = ctypes.CDLL(None, use_errno=True)
  libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
  filter_ = Program(len(program), ctypes.addressof(code))
  if (libc.prctl(38, 1, 0, 0, 0) != 0  # PR_SET_NO_NEW_PRIVS
      or libc.prctl(22, 2, ctypes.addressof(filter_), 0, 0) != 0):  # PR_SET_SECCOMP, filter
    raise OSError(ctypes.get_errno(), "seccomp filter not installed")


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
