"""Layer stacks scanned with nn.scan (or unrolled), and the two parameter layouts.

A stack's layers fall into groups whose attention kinds repeat with a period p: p = 1
for a uniform stack, p = k with `*_dense_every` = k (k - 1 sparse layers, then a dense
one), plus a shorter last group when k does not divide the depth. Group g runs one
cycle of p layers `repeats` times under nn.scan, so the program holds each distinct
layer once and compiling does not grow with depth. A scanned layer's index is traced
(BigBird draws its random blocks with seed + index).

Parameter (and decoding cache) layouts:
  scanned   {stack}_group_{g}/layer_{j}/...  with a leading "layers" axis of size repeats
  unrolled  {stack}_{i}/...                  (model.scan_layers=False; every run saved
                                              before layers were scanned)
Layer i of group g is cycle r = (i - first) // p, position j = (i - first) % p;
to_scanned / to_unrolled convert flat parameter dicts between the two.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

STACKS = ("encoder", "decoder")


@dataclasses.dataclass(frozen=True)
class Group:
  """A run of `repeats` cycles of layers with attention `kinds`, from layer `first` on."""
  kinds: tuple
  repeats: int
  first: int

  def layer(self, cycle: int, position: int) -> int:
    return self.first + cycle * len(self.kinds) + position


def groups(cfg, stack: str) -> tuple:
  """The stack's groups: the shortest repeating cycle of its layers' kinds, and the rest."""
  n = getattr(cfg, f"num_{stack}_layers")
  kinds = [cfg.attention_kind(stack, i) for i in range(n)]
  period = next(p for p in range(1, n + 1) if all(kinds[i] == kinds[i % p] for i in range(n)))
  out = [Group(tuple(kinds[:period]), n // period, 0)]
  if n % period:
    out.append(Group(tuple(kinds[:n % period]), 1, n - n % period))
  return tuple(out)


class Cycle(nn.Module):
  """One scan step: the layers of a group's cycle, in order (layer_{j})."""
  layer_cls: Any  # transformer.EncoderLayer or DecoderLayer
  cfg: Any
  kinds: tuple

  @nn.compact
  def __call__(self, x, first_layer, *args):
    for j, kind in enumerate(self.kinds):
      x = self.layer_cls(self.cfg, kind, scanned=True, name=f"layer_{j}")(
          x, first_layer + j, *args)
    return x, None


def build(cfg, stack: str, layer_cls, num_args: int) -> list:
  """The stack's modules (call them with `run`): scanned groups, or one per layer.

  num_args: how many arguments a layer takes after its input and index (broadcast
  to every layer of a scan).
  """
  if not cfg.scan_layers:
    return [layer_cls(cfg, cfg.attention_kind(stack, i), name=f"{stack}_{i}")
            for i in range(getattr(cfg, f"num_{stack}_layers"))]
  modules = []
  for g, group in enumerate(groups(cfg, stack)):
    scanned = nn.scan(Cycle, variable_axes={"params": 0, "cache": 0},
                      split_rngs={"params": True, "dropout": True},
                      in_axes=(0,) + (nn.broadcast,) * num_args, length=group.repeats,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    modules.append(scanned(layer_cls, cfg, group.kinds, name=f"{stack}_group_{g}"))
  return modules


def run(cfg, stack: str, modules: list, x, *args):
  """x through the stack's layers in order; args go to every layer."""
  if not cfg.scan_layers:
    for i, layer in enumerate(modules):
      x = layer(x, i, *args)
    return x
  for group, module in zip(groups(cfg, stack), modules):
    firsts = group.first + len(group.kinds) * jnp.arange(group.repeats, dtype=jnp.int32)
    x, _ = module(x, firsts, *args)
  return x


def _slots(cfg, stack: str):
  """(layer index, group, cycle, position) of every layer of the stack."""
  for g, group in enumerate(groups(cfg, stack)):
    for r in range(group.repeats):
      for j in range(len(group.kinds)):
        yield group.layer(r, j), g, r, j


def to_scanned(flat: dict, cfg) -> dict:
  """{unrolled path: array} -> {scanned path: array}: each layer's arrays stacked per group."""
  out, parts = {}, {}
  layer_of = {f"{stack}_{i}": (stack, i) for stack in STACKS
              for i in range(getattr(cfg, f"num_{stack}_layers"))}
  for path, value in flat.items():
    if path[0] not in layer_of:
      out[path] = value
      continue
    stack, i = layer_of[path[0]]
    parts.setdefault(stack, {}).setdefault(path[1:], {})[i] = value
  for stack, by_rest in parts.items():
    slots = list(_slots(cfg, stack))
    for rest, by_layer in by_rest.items():
      for g, group in enumerate(groups(cfg, stack)):
        for j in range(len(group.kinds)):
          rows = [by_layer[i] for i, g_, _, j_ in slots if (g_, j_) == (g, j)]
          out[(f"{stack}_group_{g}", f"layer_{j}") + rest] = _stack(rows)
  return out


def to_unrolled(flat: dict, cfg) -> dict:
  """{scanned path: array} -> {unrolled path: array}, the inverse of to_scanned."""
  out = {}
  names = {f"{stack}_group_{g}": stack for stack in STACKS
           for g in range(len(groups(cfg, stack)))}
  for path, value in flat.items():
    if path[0] not in names:
      out[path] = value
      continue
    stack = names[path[0]]
    g, j = int(path[0].rsplit("_", 1)[1]), int(path[1].split("_")[1])
    for i, g_, r, j_ in _slots(cfg, stack):
      if (g_, j_) == (g, j):
        out[(f"{stack}_{i}",) + path[2:]] = _row(value, r)
  return out


def _row(value, r: int):
  """Layer r of a stacked array (or of its shape, for abstract parameters)."""
  if isinstance(value, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(value.shape[1:], value.dtype)
  return value[r]


def _stack(rows):
  if isinstance(rows[0], np.ndarray):
    return np.stack(rows)
  return jnp.stack(rows)


def is_scanned(flat: dict) -> bool:
  """Whether flat parameters (paths -> arrays) have the scanned layout."""
  return any(path[0].split("_group_")[0] in STACKS and "_group_" in path[0] for path in flat)
