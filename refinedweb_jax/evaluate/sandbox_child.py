"""What runs inside the sandbox (see sandbox.py): the program's server C, the test driver T.

Standard library only: the host runs sandbox_guard.py's, sandbox_wire.py's and this file's
source with `python -I -B -c`, so the child needs no access to the package. C and T talk over
two pipes the host gives them.
"""

import json
import os
import signal
import sys

try:  # imported as a module; in the sandbox these names come from the prepended source
  from refinedweb_jax.evaluate.sandbox_guard import (_forbid_new_processes, _install_guards,
                                                     _set_limits)
  from refinedweb_jax.evaluate.sandbox_wire import (MESSAGE_BYTES, _CLASSES, _Broken, _Link,
                                                    _Lost, _Shared, _describe)
except ImportError:
  pass

SETUP_EXIT = 120  # the child could not set up its limits or guards
CPU_EXIT = 121  # the child ran out of CPU time


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


if __name__ == "__main__":
  _child_main(sys.argv)
