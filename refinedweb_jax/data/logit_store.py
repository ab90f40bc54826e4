"""Teacher logits on disk: sharded array_record files plus an index (index.json).

Examples are numbered globally: the mixture's tasks in config order, each task's
train records 0..n-1, so (task, record index) -> example = offset[task] + index.
Shard s holds the fixed contiguous range [s * shard_examples, (s + 1) * shard_examples),
one record per example in order, so example g is record g % shard_examples of
shard g // shard_examples. A shard appears under its final name only once it is
complete (written to a temporary file, then renamed), so a killed dump leaves
whole shards or none, and a restart skips the finished ones.

Record layout (little endian, no per-field framing): header (uint32 example,
uint16 n target tokens, uint16 m sequence-KD tokens), then log-probabilities
n x k (bfloat16 or float16), token ids n x k (int32), log-sum-exp of the full
logit row n (float32), and m int32 teacher-output tokens. Values are
log-probabilities log p = logit - lse, not raw logits: the large entries sit
near 0 where bfloat16 is precise, and logits are recovered as log p + lse.
"""

import hashlib
import json
import os
import struct
import threading

import ml_dtypes
import numpy as np

INDEX = "index.json"
TOKENIZER = "tokenizer.model"
FORMAT_VERSION = 1
VALUE_DTYPES = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
# One record per chunk keeps a lookup to one small read; zstd shrinks ids and values.
WRITER_OPTIONS = "group_size:1,zstd:3"
READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"  # random access
_HEADER = struct.Struct("<IHH")


def raw_bytes_per_token(top_k: int, value_dtype: str) -> int:
  """Uncompressed bytes per target token: k values, k int32 ids, one float32 lse."""
  return top_k * (np.dtype(VALUE_DTYPES[value_dtype]).itemsize + 4) + 4


def encode_record(example: int, logprobs_NxJ, ids_NxJ, lse_N, sequence_M=None) -> bytes:
  """One example's teacher outputs as compact bytes (see the module docstring)."""
  n = len(lse_N)
  sequence_M = np.zeros((0,), np.int32) if sequence_M is None else sequence_M
  if n > 0xFFFF or len(sequence_M) > 0xFFFF:
    raise ValueError(f"example {example}: {n} target / {len(sequence_M)} sequence tokens; "
                     "at most 65535 fit the record header")
  return b"".join((_HEADER.pack(example, n, len(sequence_M)), logprobs_NxJ.tobytes(),
                   np.asarray(ids_NxJ, "<i4").tobytes(), np.asarray(lse_N, "<f4").tobytes(),
                   np.asarray(sequence_M, "<i4").tobytes()))


def decode_record(raw: bytes, top_k: int, value_dtype: str) -> dict:
  """Bytes -> {example, logprobs (n x k float32), ids (n x k), lse (n), sequence (m)}."""
  example, n, m = _HEADER.unpack_from(raw)
  vtype = np.dtype(VALUE_DTYPES[value_dtype])
  offset, out = _HEADER.size, {"example": example}
  for name, dtype, count in (("logprobs", vtype, n * top_k), ("ids", np.dtype("<i4"), n * top_k),
                             ("lse", np.dtype("<f4"), n), ("sequence", np.dtype("<i4"), m)):
    out[name] = np.frombuffer(raw, dtype, count, offset)
    offset += count * dtype.itemsize
  if offset != len(raw):
    raise ValueError(f"record of example {example} has {len(raw)} bytes, expected {offset}")
  out["logprobs"] = out["logprobs"].astype(np.float32).reshape(n, top_k)
  out["ids"] = out["ids"].astype(np.int32).reshape(n, top_k)
  out["lse"] = out["lse"].astype(np.float32)
  out["sequence"] = out["sequence"].astype(np.int32)
  return out


def shard_name(shard: int, num_shards: int) -> str:
  return f"logits-{shard:05d}-of-{num_shards:05d}.array_record"


def write_shard(directory: str, shard: int, num_shards: int, records) -> str:
  """Writes one shard's records to a temporary file and renames it into place."""
  from array_record.python import array_record_module
  final = os.path.join(directory, shard_name(shard, num_shards))
  tmp = f"{final}.tmp-{os.getpid()}"
  writer = array_record_module.ArrayRecordWriter(tmp, WRITER_OPTIONS)
  for record in records:
    writer.write(record)
  writer.close()
  os.replace(tmp, final)
  return final


def tokenizer_digest(proto: bytes) -> str:
  return hashlib.sha256(proto).hexdigest()[:16]


def write_index(directory: str, index: dict):
  path = os.path.join(directory, INDEX)
  with open(f"{path}.tmp", "w", encoding="utf-8") as f:
    json.dump(index, f, indent=1)
  os.replace(f"{path}.tmp", path)


def read_index(directory: str) -> dict:
  path = os.path.join(directory, INDEX)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no teacher logits in {directory!r} (no {INDEX}); write them with: "
                            f"refinedweb distill dump --teacher WORKDIR --out {directory}")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def missing_shards(directory: str, index: dict) -> list[int]:
  return [s for s in range(index["num_shards"])
          if not os.path.isfile(os.path.join(directory, shard_name(s, index["num_shards"])))]


def describe_shard(index: dict, shard: int) -> str:
  """'logits-00003-of-00010 (examples 300-399: qa 12-111)' for error messages."""
  start = shard * index["shard_examples"]
  stop = min(start + index["shard_examples"], index["num_examples"])
  parts = []
  for task in index["tasks"]:
    lo, hi = max(start, task["offset"]), min(stop, task["offset"] + task["count"])
    if lo < hi:
      parts.append(f"{task['name']} {lo - task['offset']}-{hi - task['offset'] - 1}")
  return (f"{shard_name(shard, index['num_shards']).split('.')[0]} (examples {start}-{stop - 1}: "
          f"{', '.join(parts)})")


class LogitStore:
  """Random-access reader of a complete logits directory: store[example] -> record dict."""

  def __init__(self, directory: str):
    self.directory = directory
    self.index = read_index(directory)
    missing = missing_shards(directory, self.index)
    if missing:
      listed = "; ".join(describe_shard(self.index, s) for s in missing[:4])
      more = f"; and {len(missing) - 4} more" if len(missing) > 4 else ""
      raise FileNotFoundError(
          f"teacher logits in {directory!r} are incomplete: {len(missing)} of "
          f"{self.index['num_shards']} shards missing: {listed}{more}; finish them by re-running "
          f"the same refinedweb distill dump command (it skips finished shards)")
    self.offsets = {t["name"]: (t["offset"], t["count"]) for t in self.index["tasks"]}
    self._readers, self._lock = {}, threading.Lock()

  def __len__(self) -> int:
    return self.index["num_examples"]

  def example_id(self, task: str, record: int) -> int:
    """The global example number of a task's train record."""
    if task not in self.offsets:
      raise ValueError(f"task {task!r} has no teacher logits in {self.directory!r}; it holds: "
                       f"{', '.join(self.offsets)}")
    offset, count = self.offsets[task]
    if not 0 <= record < count:
      raise ValueError(f"record {record} out of range for task {task!r} ({count} examples)")
    return offset + record

  def raw(self, example: int) -> bytes:
    from array_record.python import array_record_module
    shard, position = divmod(int(example), self.index["shard_examples"])
    with self._lock:  # Grain maps in threads; one reader per shard, used one at a time
      if shard not in self._readers:
        path = os.path.join(self.directory, shard_name(shard, self.index["num_shards"]))
        self._readers[shard] = array_record_module.ArrayRecordReader(path, READER_OPTIONS)
      return self._readers[shard].read([position])[0]

  def __getitem__(self, example: int) -> dict:
    record = decode_record(self.raw(example), self.index["top_k"], self.index["value_dtype"])
    if record["example"] != example:
      raise ValueError(f"{self.directory!r}: record for example {example} holds example "
                       f"{record['example']}; the directory is corrupt, dump it again")
    return record

  def tokenizer_proto(self) -> bytes:
    with open(os.path.join(self.directory, TOKENIZER), "rb") as f:
      return f.read()


def check_same_vocabulary(config, tokenizer, where: str, model_vocab: int | None = None):
  """The student config must describe the teacher's vocabulary (one tokenizer for both).

  model_vocab: the width of the teacher's logits when it exceeds its tokenizer's pieces
  (a T5's extra ids); the student's model.vocab_size must then be the same.
  """
  vocab = tokenizer.vocab_size
  model_vocab = model_vocab or vocab
  # data.vocab_size sizes a trained one: builtin, mixture or auto (not a *.model file)
  trained = not str(config.data.tokenizer).endswith(".model")
  if trained and config.data.vocab_size not in (None, vocab):
    raise ValueError(f"tokenizer mismatch: the student config has data.vocab_size="
                     f"{config.data.vocab_size} but the teacher's tokenizer ({where}) has {vocab} "
                     f"pieces; distillation needs one vocabulary: set "
                     f"--config.data.vocab_size={vocab}")
  student = vocab if config.model.vocab_size is None else config.model.vocab_size
  if student != model_vocab:
    raise ValueError(f"vocabulary mismatch: the student's model.vocab_size is {student} but the "
                     f"teacher's logits ({where}) cover {model_vocab} ids; set "
                     f"--config.model.vocab_size={model_vocab}")
  if not 0 < config.distill.top_k <= model_vocab:
    raise ValueError(f"config.distill.top_k={config.distill.top_k} must be in [1, {model_vocab}], "
                     f"the teacher's vocabulary size ({where})")


def check_same_tokenizer(tokenizer, proto: bytes, where: str):
  """The tokenizer the student config prepares must be the teacher's, piece for piece."""
  if tokenizer.serialized_model_proto() != proto:
    raise ValueError(f"tokenizer mismatch: the student config's tokenizer "
                     f"({tokenizer.model_path or 'built from the config'}) differs from the "
                     f"teacher's ({where}) although both have {tokenizer.vocab_size} pieces; "
                     f"use the teacher's data settings (config.data) for the student")
