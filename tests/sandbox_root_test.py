"""The pass@1 sandbox holds as root: hostile programs scored through metrics.pass_at_1.

Each attack is a program whose attack() returns True when the attack worked. It scores 0 against
`assert attack()` and 100 against `assert attack() is False` (it ran and was refused, rather
than crashed). The programs run only inside the sandbox; the host's settings are read here.
"""

import os

import pytest

from refinedweb_jax.evaluate import metrics
from refinedweb_jax.evaluate import sandbox

LIBC = ("import ctypes, errno, os, resource\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.syscall.restype = ctypes.c_long\n")
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
HOST_SETTINGS = ("/proc/sys/kernel/printk_ratelimit_burst", "/proc/sys/kernel/core_pattern")
MiB = 2**20

ATTACKS = {
    # Writes back the value it reads: a success would change nothing, but shows the way in.
    "write /proc/sys": LIBC + (
        "def attack():\n  path = b'/proc/sys/kernel/printk_ratelimit_burst'\n"
        "  value = open(path, 'rb').read()\n  fd = libc.open(path, os.O_WRONLY)\n"
        "  return fd >= 0 and libc.write(fd, value, len(value)) == len(value)\n"),
    "open core_pattern for writing": LIBC + (
        "def attack():\n  return libc.open(b'/proc/sys/kernel/core_pattern', os.O_WRONLY) >= 0\n"),
    "uid maps to host root": (
        "def attack():\n  lines = open('/proc/self/uid_map').read().split('\\n')\n"
        "  return any(line.split()[1] == '0' for line in lines if line.strip())\n"),
    "gid maps to host root": (
        "def attack():\n  lines = open('/proc/self/gid_map').read().split('\\n')\n"
        "  return any(line.split()[1] == '0' for line in lines if line.strip())\n"),
    # Writable places other than the sized working directory hold host memory.
    "write outside the working directory": LIBC + (
        "def attack():\n  made = 0\n"
        "  for path in (b'/fill', b'/dev/shm/fill', b'/dev/fill', b'/tmp/fill'):\n"
        "    fd = libc.open(path, os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "    made += fd >= 0 and libc.write(fd, b'x' * 4096, 4096) == 4096\n"
        "  return made > 0\n"),
    "fill the working directory beyond its size": (
        "def attack():\n  total = 0\n  chunk = b'x' * 2**20\n"
        f"  for i in range({2 * sandbox.DISK_BYTES // MiB}):\n"
        "    try:\n      with open(f'fill{i}', 'wb') as f:\n        f.write(chunk)\n"
        "    except OSError:\n      break\n    total += len(chunk)\n"
        f"  return total > {sandbox.DISK_BYTES}\n"),
    "40 memfds of 16 MiB": LIBC + (
        "def attack():\n  held = 0\n  for i in range(40):\n"
        "    fd = libc.syscall(319 if os.uname().machine == 'x86_64' else 279, b'm', 0)\n"
        "    if fd < 0 or libc.ftruncate(fd, 2**24) != 0:\n      continue\n"
        "    held += libc.write(fd, b'x' * 2**24, 2**24) > 0\n  return held > 0\n"),
    "SysV shared memory": LIBC + (
        "def attack():\n  return libc.shmget(0, 2**24, 0o1600) >= 0\n"),
    "nested user and mount namespaces, then mount": LIBC + (
        f"def attack():\n  if libc.unshare({CLONE_NEWUSER | CLONE_NEWNS}) != 0:\n"
        "    return False\n"
        "  return libc.mount(b'none', b'/sandbox', b'tmpfs', 0, None) == 0\n"),
    "new network namespace": LIBC + (
        f"def attack():\n  return libc.unshare({CLONE_NEWUSER | CLONE_NEWNET}) == 0\n"),
    "join a namespace": LIBC + (
        "def attack():\n  fd = os.open('/proc/self/ns/net', os.O_RDONLY)\n"
        "  return libc.setns(fd, 0) == 0\n"),
    "ptrace": LIBC + "def attack():\n  return libc.ptrace(0, 0, None, None) == 0\n",
    "keyrings": LIBC + (
        "def attack():\n  nr = 250 if os.uname().machine == 'x86_64' else 219\n"
        "  return libc.syscall(nr, 0, -3, 1) >= 0\n"),  # KEYCTL_GET_KEYRING_ID, session
    "unbounded open files": (
        "import resource\ndef attack():\n  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "  try:\n    resource.setrlimit(resource.RLIMIT_NOFILE, (2**20, 2**20))\n"
        "  except (ValueError, OSError):\n    pass\n  else:\n    return True\n"
        "  return hard > 256\n"),
    "unbounded data segment": (
        "import resource\ndef attack():\n  soft, hard = resource.getrlimit(resource.RLIMIT_DATA)\n"
        "  return hard == resource.RLIM_INFINITY\n"),
}


def host_settings() -> dict:
  return {path: open(path, "rb").read() for path in HOST_SETTINGS if os.path.exists(path)}


def score(program: str, tests: str) -> float:
  return metrics.pass_at_1([""], [program], [tests], timeout_s=20.0)["pass@1"]


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_an_attack_scores_nothing_and_leaves_the_host_alone(name):
  before = host_settings()
  assert score(ATTACKS[name], "assert attack()") == 0.0, name
  assert score(ATTACKS[name], "assert attack() is False") == 100.0, f"{name}: did not run"
  assert host_settings() == before


def test_the_sandboxed_uid_is_nobody_on_the_host_side():
  program = ("def maps():\n  return [open(f'/proc/self/{m}').read().split() for m in "
             "('uid_map', 'gid_map')]\n")
  nobody = str(sandbox.NOBODY)
  assert score(program, f"assert maps() == [[{nobody!r}, {nobody!r}, '1']] * 2") == 100.0


def test_without_setpriv_as_root_pass_at_1_says_so_once_and_runs(monkeypatch, caplog):
  if os.geteuid() != 0:
    pytest.skip("the uid is dropped only when running as root")
  monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
  sandbox._drop_root.cache_clear()
  try:
    for _ in range(2):
      assert sandbox._drop_root() == ()
  finally:
    sandbox._drop_root.cache_clear()
  assert sum("setpriv" in r.message for r in caplog.records) == 1


def test_a_limit_the_machine_cannot_enforce_is_said_once(monkeypatch, caplog):
  monkeypatch.setattr(sandbox.platform, "machine", lambda: "sparc64")
  sandbox._unenforced.cache_clear()
  try:
    for _ in range(2):
      assert "seccomp" in sandbox._unenforced()[0]
  finally:
    sandbox._unenforced.cache_clear()
  assert sum("cannot enforce" in r.message for r in caplog.records) == 1
