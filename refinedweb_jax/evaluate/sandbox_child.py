"""What runs inside the sandbox (see sandbox.py): the program's server C, the test driver T.

Standard library only: the host runs this file's source with `python -I -B -c`, so the child
needs no access to the package. C and T talk over two pipes the host gives them.
"""

import collections
import functools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys

MESSAGE_BYTES = 4 * 2**20  # one call or answer between T and C
FILE_SIZE_BYTES = 16 * 2**20
SETUP_EXIT = 120  # the child could not set up its limits or guards
CPU_EXIT = 121  # the child ran out of CPU time
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


class _Lost(BaseException):
  """C closed its end (it exited or crashed); BaseException, so tests cannot catch it."""


class _Broken(BaseException):
  """C answered what the protocol does not allow (a garbled message, a non-builtin result)."""


def _child_main(argv: list[str]) -> None:
  """Sets limits and guards, then serves the program (C) or runs the tests (T)."""
  import traceback
  exit_now = os._exit
  try:
    role, memory_mb, cpu_s, inbox, outbox = argv[1], *map(int, argv[2:6])
    payload = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
    os.close(0)
    _set_limits(memory_mb, cpu_s)
    # As pid 1 of a pid namespace the child would ignore a default-action SIGXCPU.
    signal.signal(signal.SIGXCPU, lambda *_: exit_now(CPU_EXIT))
    _forbid_new_processes()
    if role == "tests":
      verdict = os.dup(1)
      os.dup2(2, 1)  # what the tests print is not the verdict
    _install_guards(os.path.realpath(os.getcwd()))
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    exit_now(SETUP_EXIT)
  link = _Link(inbox, outbox)
  if role == "candidate":
    _serve(payload, link)
  else:
    result = _drive(json.loads(payload), link)
    sys.stdout.flush()
    os.write(verdict, json.dumps(result).encode() + b"\n")
  exit_now(0)


def _serve(code: str, link) -> None:
  """C: runs the program, lists its names, then answers requests until T closes its end."""
  import builtins
  import types
  main = types.ModuleType("__main__")
  main.__builtins__ = builtins
  sys.modules["__main__"] = main
  try:
    exec(compile(code, "main.py", "exec"), main.__dict__)  # pylint: disable=exec-used
    names = [name for name in main.__dict__ if not name.startswith("__")]
    link.send({"names": [n for n in names if callable(main.__dict__[n])],
               "values": [n for n in names if not callable(main.__dict__[n])
                          and not isinstance(main.__dict__[n], types.ModuleType)]})
  except BaseException as e:  # SystemExit too: a program that exits early has not run
    link.send({"error": _describe(e)})
    return
  shared, iterators = _Shared(1), {}
  while True:
    try:
      request = link.receive()
    except (_Lost, _Broken):
      return
    answer = {}
    try:
      if "classes" in request:  # the tests' own classes, for their instances to arrive as such
        exec(request["classes"], _CLASSES)  # pylint: disable=exec-used
        # As in one interpreter, where the tests' definitions follow the program's.
        main.__dict__.update({k: v for k, v in _CLASSES.items() if isinstance(v, type)})
        value = None
      else:
        shared.apply(request["sync"])
        if "next" in request:
          value = next(iterators[request["next"]])
        elif "get" in request:
          value = main.__dict__[request["get"]]
        else:
          function = main.__dict__.get(request["call"])
          if function is None:
            raise NameError(f"name {request['call']!r} is not defined")
          value = function(*map(shared.resolve, request["args"]),
                           **{k: shared.resolve(v) for k, v in request["kwargs"].items()})
    except StopIteration as e:
      if "next" not in request:
        answer = {"raise": "StopIteration", "message": _describe(e, with_type=False)}
      else:
        answer = {"stop": True}
    except BaseException as e:  # pylint: disable=broad-except
      # Named by its first builtin base: `class Bad(ValueError)` arrives as a ValueError.
      kind = next(k for k in type(e).__mro__ if getattr(builtins, k.__name__, None) is k)
      answer = {"raise": kind.__name__, "message": _describe(e, with_type=False)}
    try:
      if not answer and _is_iterator(value):  # a generator, map(...): T pulls its items
        iterators[len(iterators)] = value
        answer = {"iter": len(iterators) - 1}
      elif not answer:
        answer = {"value": shared.ref(value)}
      answer["sync"] = shared.changes()
      link.send(answer)
    except Exception as e:  # pylint: disable=broad-except
      # A type of its own, a cycle, larger than MESSAGE_BYTES, ...
      link.send({"refused": _describe(e)})


def _is_iterator(value) -> bool:
  if type(value) in (list, tuple, dict, set, str, bytes, range) or value is None:
    return False
  try:
    return hasattr(type(value), "__next__") and iter(value) is value
  except Exception:  # pylint: disable=broad-except
    return False


def _drive(job: dict, link) -> dict:
  """T: binds the program's names to proxies, runs setup and tests; returns the verdict."""
  import ast
  import builtins
  import importlib
  try:
    hello = link.receive()
    if "names" not in hello:
      return {"status": "failed", "error": f"the program failed: {hello.get('error')}"}
    trees = [ast.parse(job["setup"]), ast.parse(job["tests"])]
    nodes = [node for tree in trees for node in ast.walk(tree)]
    used = {node.id for node in nodes if isinstance(node, ast.Name)}
    # `math.isclose(...)`: a module the tests use as the program's (or forgot to import).
    modules = {node.value.id for node in nodes
               if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)}
    entry, program = job["entry_point"], set(hello["names"]) | set(hello["values"])
    allowed = set(job["names"]) | {entry}
    scope = {"__name__": "__main__", "__builtins__": builtins}
    classes = [node for tree in trees for node in tree.body if isinstance(node, ast.ClassDef)]
    shared = _Shared(0)
    if classes:  # C builds their instances from the tests' source, T from the tests' classes
      _CLASSES.update(__builtins__=builtins, __name__="__tests__")
      link.ask({"classes": "\n".join(ast.unparse(node) for node in classes)})
      _CLASSES.clear()
    _CLASSES["__scope__"], _CLASSES["__names__"] = scope, {node.name for node in classes}
    exec(compile(trees[0], "<setup>", "exec"), scope)  # pylint: disable=exec-used
    for name in sorted(used - set(scope) | {entry} - {None}):
      if name == entry or name in program and (name in allowed or not hasattr(builtins, name)):
        if name in hello["values"]:  # a module constant, a shared object if mutable
          scope[name] = _remote(link, shared, {"get": name, "sync": {}}, name)
        else:
          scope[name] = _proxy(name, link, shared)
      elif name in modules and name in sys.stdlib_module_names:
        scope[name] = importlib.import_module(name)
    exec(compile(trees[1], "<tests>", "exec"), scope)  # pylint: disable=exec-used
    called = any(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                 and getattr(s.value.func, "id", None) == "check" for s in trees[1].body)
    if entry and callable(scope.get("check")) and not called:
      scope["check"](scope[entry])
    if link.failure is not None:  # caught by the tests (a bare except), it still counts
      raise link.failure
  except BaseException as e:  # pylint: disable=broad-except
    if isinstance(e, _Lost) or isinstance(link.failure, _Lost):
      return {"status": "lost"}  # the host tells a crash from a timeout by C's exit
    return {"status": "failed", "error": _describe(e)}
  return {"status": "passed"}


def _proxy(name: str, link, shared):
  """A stand-in for the program's function `name`: the call runs in C."""

  def call(*args, **kwargs):
    if link.failure is not None:  # once C has ended or broken the protocol
      raise link.failure
    sync = shared.changes()  # what the tests changed in shared objects since the last call
    request = {"call": name, "args": [shared.ref(a) for a in args],
               "kwargs": {k: shared.ref(v) for k, v in kwargs.items()}, "sync": sync}
    return _remote(link, shared, request, name)

  call.__name__ = call.__qualname__ = name
  return call


class _RemoteIterator:
  """What T sees of an iterator the program returned (a generator): next() runs in C."""

  def __init__(self, handle: int, link, shared):
    self.handle, self.link, self.shared = handle, link, shared

  def __iter__(self):
    return self

  def __next__(self):
    if self.link.failure is not None:
      raise self.link.failure
    return _remote(self.link, self.shared, {"next": self.handle, "sync": self.shared.changes()},
                   "next")


def _remote(link, shared, request: dict, name: str):
  """Sends a request to C; its value, its exception, or a failure of the protocol."""
  import builtins
  answer = link.ask(request)
  try:
    if "sync" in answer:
      shared.apply(answer["sync"])
    if "value" in answer:
      return shared.resolve(answer["value"])
    if "iter" in answer and type(answer["iter"]) is int:
      return _RemoteIterator(answer["iter"], link, shared)
    if answer.get("stop") is True and "next" in request:
      raise StopIteration
    if "raise" not in answer:
      raise _Broken(f"{name}() gave no builtin value: {answer.get('refused')}")
  except _Broken as e:
    raise link.fail(e) from None
  kind, message = str(answer["raise"]), str(answer.get("message"))
  error = getattr(builtins, kind, None)
  if not (isinstance(error, type) and issubclass(error, Exception)) or issubclass(
      error, (StopIteration, StopAsyncIteration)):  # these would end the tests' loops
    raise RuntimeError(f"{name}() raised {kind}: {message}")
  try:
    exception = error(message)
  except TypeError:  # the type needs other arguments (UnicodeDecodeError)
    exception = RuntimeError(f"{name}() raised {kind}: {message}")
  raise exception


_CLASSES = {}  # T: "__scope__" (the tests' globals), "__names__" (their classes); C: the classes


def _test_class(kind):
  """kind if it is a class the tests define (in T: theirs; in C: built from their source)."""
  if not isinstance(kind, type):
    return None
  if "__scope__" in _CLASSES:
    found = _CLASSES["__scope__"].get(kind.__name__) if kind.__name__ in _CLASSES[
        "__names__"] else None
  else:
    found = _CLASSES.get(kind.__name__)
  return kind if found is kind else None


_MUTABLE = (list, dict, set, bytearray)


class _Shared:
  """Mutable values both processes hold, a handle each (T's even, C's odd), as one object.

  A list the tests pass, or one the program returns, is the same object in both processes:
  changes either makes are sent at the next call or answer and applied in place, and it is
  sent back as a reference, so mutation, aliasing and identity are what one interpreter gives.
  """

  def __init__(self, first: int):
    self.objects, self.ids, self.sent, self.next = {}, {}, {}, first

  def ref(self, value):
    """An encoding of value; a mutable one gets (or is) a handle."""
    if not (type(value) in _MUTABLE or _test_class(type(value))):
      return _encode(value)
    if id(value) in self.ids:
      return ["ref", self.ids[id(value)]]
    handle, self.next = self.next, self.next + 2
    tree = self._register(handle, value)
    return ["new", handle, tree]

  def resolve(self, tree):
    """The value of a ref() encoding from the other process."""
    if type(tree) is list and len(tree) == 3 and tree[0] == "new" and type(tree[1]) is int:
      if tree[1] in self.objects or tree[1] % 2 == self.next % 2:
        raise _Broken(f"garbled handle {tree[1]}")
      value = _decode(tree[2])
      if not (type(value) in _MUTABLE or _test_class(type(value))):
        raise _Broken(f"a handle for a {type(value).__name__}")
      self._register(tree[1], value, tree[2])
      return value
    if type(tree) is list and len(tree) == 2 and tree[0] == "ref":
      if tree[1] not in self.objects:
        raise _Broken(f"garbled handle {tree[1]!r}")
      return self.objects[tree[1]]
    return _decode(tree)

  def changes(self) -> dict:
    """{handle: encoding} of the shared objects that changed since they were last sent."""
    changed = {}
    for handle, value in self.objects.items():
      try:
        tree = _encode(value)
      except (TypeError, RecursionError):
        continue  # no longer encodable here: the other side keeps what it has
      if tree != self.sent[handle]:
        changed[str(handle)] = self.sent[handle] = tree
    return changed

  def apply(self, changes) -> None:
    """Applies the other process's changes in place."""
    if type(changes) is not dict:
      raise _Broken("garbled changes")
    for handle, tree in changes.items():
      if not handle.isdigit() or int(handle) not in self.objects:
        raise _Broken(f"garbled handle {handle!r}")
      _assign(self.objects[int(handle)], _decode(tree))
      self.sent[int(handle)] = tree

  def _register(self, handle: int, value, tree=None):
    self.objects[handle], self.ids[id(value)] = value, handle
    self.sent[handle] = _encode(value) if tree is None else tree
    return self.sent[handle]


def _assign(old, new, done=None) -> None:
  """Makes old equal to new in place, keeping the identity of the mutable values inside."""
  done = set() if done is None else done
  if id(old) in done:
    return
  done.add(id(old))
  if type(old) is not type(new):
    raise _Broken(f"a {type(old).__name__} changed into a {type(new).__name__}")
  if type(old) is list:
    for i in range(min(len(old), len(new))):
      if type(old[i]) is type(new[i]) and type(old[i]) in (list, dict):
        _assign(old[i], new[i], done)
      else:
        old[i] = new[i]
    del old[len(new):]
    old.extend(new[len(old):])
  elif type(old) is dict:
    for key in [key for key in old if key not in new]:
      del old[key]
    for key, value in new.items():
      if key in old and type(old[key]) is type(value) and type(value) in (list, dict):
        _assign(old[key], value, done)
      else:
        old[key] = value
  elif type(old) in (set, bytearray):
    old.clear()
    old.update(new) if type(old) is set else old.extend(new)
  else:  # an instance of the tests' own class
    old.__dict__.clear()
    old.__dict__.update(new.__dict__)


class _Link:
  """Length-prefixed JSON messages over two pipes, each at most MESSAGE_BYTES."""

  def __init__(self, inbox: int, outbox: int):
    self.inbox, self.outbox, self.failure = inbox, outbox, None

  def fail(self, error: BaseException) -> BaseException:
    """Records the first _Lost or _Broken, which fails the tests even if they catch it."""
    self.failure = self.failure or error
    return error

  def ask(self, message: dict) -> dict:
    self.send(message)
    return self.receive()

  def send(self, message: dict) -> None:
    data = json.dumps(message).encode()
    if len(data) > MESSAGE_BYTES:
      raise ValueError(f"message of {len(data)} bytes; at most {MESSAGE_BYTES}")
    data = len(data).to_bytes(4, "big") + data
    try:
      while data:
        data = data[os.write(self.outbox, data):]
    except BrokenPipeError:
      raise self.fail(_Lost()) from None

  def receive(self) -> dict:
    size = int.from_bytes(self._read(4), "big")
    if size > MESSAGE_BYTES:
      raise self.fail(_Broken(f"message of {size} bytes; at most {MESSAGE_BYTES}"))
    try:
      message = json.loads(self._read(size))
    except (ValueError, RecursionError) as e:
      raise self.fail(_Broken(f"garbled message: {e}")) from None
    if not isinstance(message, dict):
      raise self.fail(_Broken(f"garbled message of type {type(message).__name__}"))
    return message

  def _read(self, size: int) -> bytes:
    data = b""
    while len(data) < size:
      chunk = os.read(self.inbox, min(size - len(data), 2**20))
      if not chunk:
        raise self.fail(_Lost())
      data += chunk
    return data


_SEQUENCES = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}


def _encode(value, memo=None):
  """A JSON tree of a value made only of exact builtin types; TypeError for anything else.

  A mutable value met again inside the same tree is ["same", its index in visiting order], so
  aliasing ([row] * 2) and cycles arrive as they are.
  """
  kind = type(value)
  if value is None or kind is bool or kind is str:
    return value
  if kind is int:
    return ["int", hex(value)]  # hex: no digit limit for big ints
  if kind is float:
    return ["float", value.hex()]  # exact, nan and inf included
  if kind is complex:
    return ["complex", [value.real.hex(), value.imag.hex()]]
  memo = {} if memo is None else memo
  if kind in _MUTABLE or kind is collections.defaultdict or _test_class(kind):
    if id(value) in memo:
      return ["same", memo[id(value)]]
    memo[id(value)] = len(memo)
  if kind is bytes or kind is bytearray:
    return [kind.__name__, value.hex()]
  if _test_class(kind):
    return ["obj", [kind.__name__, [[k, _encode(v, memo)] for k, v in vars(value).items()]]]
  if kind is range:
    return ["range", [_encode(value.start), _encode(value.stop), _encode(value.step)]]
  if kind in _SEQUENCES:
    return [_SEQUENCES[kind], [_encode(item, memo) for item in value]]
  if kind in (dict, collections.Counter, collections.OrderedDict, collections.defaultdict):
    tag = kind.__name__ if kind in (collections.Counter, collections.OrderedDict) else "dict"
    return [tag, [[_encode(k, memo), _encode(v, memo)] for k, v in dict.items(value)]]
  if kind is re.Match:  # for tests of its truth (MBPP's), or of its groups and spans
    spans = [list(value.span(i)) for i in range(value.re.groups + 1)]
    groups = [value.group(i) for i in range(value.re.groups + 1)]
    return ["match", [_encode(value.string), _encode(groups), _encode(spans)]]
  raise TypeError(f"a value of type {kind.__module__}.{kind.__qualname__} is not a builtin "
                  "value (None, bool, int, float, complex, str, bytes, range, or containers)")


def _decode(tree, seen=None):
  """The value of an _encode tree; _Broken on anything else."""
  if tree is None or type(tree) in (bool, str):
    return tree
  if type(tree) is not list or len(tree) != 2:
    raise _Broken(f"garbled value: {str(tree)[:100]}")
  seen = [] if seen is None else seen
  try:
    kind, body = tree
    if kind == "int":
      return int(body, 16)
    if kind == "float":
      return float.fromhex(body)
    if kind == "complex":
      return complex(float.fromhex(body[0]), float.fromhex(body[1]))
    if kind == "same" and type(body) is int and 0 <= body < len(seen):
      return seen[body]
    if kind == "bytes":
      return bytes.fromhex(body)
    if kind == "bytearray":
      seen.append(bytearray.fromhex(body))
      return seen[-1]
    if kind == "obj":
      name, fields = body
      cls = (_CLASSES["__scope__"] if "__scope__" in _CLASSES else _CLASSES).get(str(name))
      if type(name) is not str or not _test_class(cls):
        raise _Broken(f"an instance of {str(name)[:100]}, not a class of the tests")
      value = cls.__new__(cls)
      seen.append(value)
      for k, v in fields:
        value.__dict__[str(k)] = _decode(v, seen)
      return value
    if kind == "range":
      return range(*map(_decode, body))
    if kind in ("dict", "Counter", "OrderedDict"):
      value = {}
      if kind == "dict":
        seen.append(value)
      for k, v in body:
        key = _decode(k, seen)
        value[key] = _decode(v, seen)
      return value if kind == "dict" else getattr(collections, kind)(value)
    if kind == "match":
      return _Match(*map(_decode, body))
    if kind in ("list", "set") and type(body) is list:
      value = [] if kind == "list" else set()
      seen.append(value)
      for item in body:
        value.append(_decode(item, seen)) if kind == "list" else value.add(_decode(item, seen))
      return value
    if kind in ("tuple", "frozenset") and type(body) is list:
      return {"tuple": tuple, "frozenset": frozenset}[kind](_decode(item, seen) for item in body)
  except (TypeError, ValueError, RecursionError, KeyError) as e:
    raise _Broken(f"garbled value: {e}") from None
  raise _Broken(f"garbled value: {str(tree)[:100]}")


class _Match:
  """What T sees of a re.Match the program returned: true, with the groups and spans."""

  def __init__(self, string, groups: list, spans: list):
    self.string, self._groups, self._spans = string, groups, [tuple(span) for span in spans]

  def group(self, *indices):
    found = tuple(self._groups[i] for i in indices or (0,))
    return found[0] if len(found) == 1 else found

  def groups(self, default=None):
    return tuple(default if group is None else group for group in self._groups[1:])

  def span(self, index=0):
    return self._spans[index]

  def start(self, index=0):
    return self._spans[index][0]

  def end(self, index=0):
    return self._spans[index][1]

  __getitem__ = group


def _describe(error: BaseException, with_type: bool = True) -> str:
  try:
    text = str(error)[:1000]
  except Exception:  # pylint: disable=broad-except
    text = "?"
  return f"{type(error).__name__}: {text}" if with_type else text


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


if __name__ == "__main__":
  _child_main(sys.argv)
