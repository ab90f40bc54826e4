"""The wire between the test driver T and the program's server C (see sandbox.py).

Standard library only: the host prepends this file's source to sandbox_child.py's.
"""

import collections
import json
import os
import re

MESSAGE_BYTES = 4 * 2**20  # one call or answer between T and C


class _Lost(BaseException):
  """C closed its end (it exited or crashed); BaseException, so tests cannot catch it."""


class _Broken(BaseException):
  """C answered what the protocol does not allow (a garbled message, a non-builtin result)."""


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
