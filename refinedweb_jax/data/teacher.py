"""A student's examples joined to their teacher's records in a logit store (distill dump).

Each example carries its global example number ("key"); AttachTeacher tokenizes it and
adds the teacher's top-k arrays, aligned with the target tokens (or the teacher's decoded
output as the targets, for sequence-level KD), so packing moves them with the targets.
"""

import dataclasses

import grain

from refinedweb_jax.data import logit_store, pipeline

TEACHER_FEATURES = ("teacher_logprobs", "teacher_ids")


class KeyedSource:
  """A task's train source whose examples carry their global example number as 'key'."""

  def __init__(self, source, offset: int):
    self.source, self.offset = source, offset

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    return {**self.source[i], "key": self.offset + int(i)}


@dataclasses.dataclass
class AttachTeacher(grain.transforms.Map):
  """Tokenizes an example and joins its teacher record: top-k arrays, or decoded targets."""
  store: logit_store.LogitStore
  tokenizer: object
  input_length: int
  target_length: int
  sequence_kd: bool = False

  def map(self, example):
    out = pipeline.Tokenize(self.tokenizer, self.input_length, self.target_length).map(example)
    record = self.store[example["key"]]
    if self.sequence_kd:
      return {"inputs": out["inputs"], "targets": record["sequence"][: self.target_length]}
    if len(record["lse"]) != len(out["targets"]):
      raise ValueError(f"example {example['key']} ({example['task']}) has "
                       f"{len(out['targets'])} target tokens but its teacher record "
                       f"{len(record['lse'])}: the logits were dumped with other data settings")
    return {**out, "teacher_logprobs": record["logprobs"], "teacher_ids": record["ids"]}
