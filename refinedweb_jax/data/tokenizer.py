"""SentencePiece unigram tokenizer with exact round trips: decode(encode(text)) == text.

Ids follow the T5 convention: pad 0, eos 1, unk 2, no bos. Unseen characters
fall back to UTF-8 byte pieces and normalization is the identity, so code
indentation, newlines and non-ASCII text come back unchanged. The one exception
is U+2581 itself, sentencepiece's stand-in for a space, which decodes as " ".
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import logging
import os
import re
import tempfile
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

log = logging.getLogger(__name__)

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
EXTRA_IDS = 100  # T5 vocabularies: sentinels <extra_id_0..99> after the pieces
# config.data.tokenizer values that train one (sized by data.vocab_size); else a *.model file.
TRAINED = ("builtin", "mixture")
MAX_SENTENCE_CHARS = 2000

# Pieces matched before the unigram model runs. The trainer does not reliably
# learn runs of spaces (a 4-space indent came out as four pieces), so code
# layout gets fixed pieces; "\u2581" is how sentencepiece writes a space.
_LAYOUT_SYMBOLS = ("\n", "\t", "\r", "\u2581" * 8, "\u2581" * 4, "\u2581" * 2)


def _training_sentences(texts: Iterable[str], max_sentences: int) -> Iterator[str]:
  for text in itertools.islice(texts, max_sentences):
    if not isinstance(text, str):
      raise TypeError(f"training texts must be str, got {type(text).__name__}: {text!r:.80}")
    if text:
      # Long documents are cut rather than dropped: sentencepiece skips any
      # sentence over max_sentence_length bytes.
      yield text[:MAX_SENTENCE_CHARS]


def _vocab_path(model_path: str) -> str:
  root, ext = os.path.splitext(model_path)
  return (root if ext == ".model" else model_path) + ".vocab"


def _write_atomic(path: str, data: bytes) -> None:
  # Write beside the target, then rename: readers never see a partial file.
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=os.path.dirname(os.path.abspath(path)))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def _vocab_text(model_proto: bytes) -> str:
  """One "piece<TAB>score" line per id, like sentencepiece's .vocab, with \\n \\t \\r escaped."""
  proto = sentencepiece_model_pb2.ModelProto.FromString(model_proto)
  escape = str.maketrans({"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"})
  return "".join(f"{p.piece.translate(escape)}\t{p.score:g}\n" for p in proto.pieces)


class VocabTooLarge(ValueError):
  """The training text holds fewer pieces than asked for."""

  def __init__(self, requested: int, largest: int):
    super().__init__(f"vocab_size={requested} does not fit this training text: it holds at "
                     f"most {largest} pieces")
    self.requested, self.largest = requested, largest


def _frequent_chars_only(sentences, keep: int) -> list:
  """The sentences without all but their `keep` most frequent characters (sentencepiece's
  coverage cannot go below 0.98; the dropped ones are spelled in bytes when encoded)."""
  counts = collections.Counter(c for s in sentences for c in s)
  kept = {c for c, _ in counts.most_common(keep)}
  drop = {ord(c): None for c in counts if c not in kept}
  return [t for t in (s.translate(drop) for s in sentences) if t]


def train_tokenizer(texts: Iterable[str], model_path: str, *, vocab_size: int = 8000,
                    max_sentences: int = 200_000, fit: bool = False) -> str:
  """Trains on the first max_sentences texts; writes model_path and .vocab; returns model_path.

  A vocabulary too small for the text's characters keeps the most frequent ones and
  spells the rest in byte pieces (round trips stay exact); one larger than the text
  holds raises VocabTooLarge, or with `fit` takes the largest that fits.
  """
  if vocab_size < 300:
    # 256 byte pieces, 3 special ids and the layout symbols are always present.
    raise ValueError(f"vocab_size must be >= 300 (byte fallback needs 256 ids), got {vocab_size}")
  if max_sentences < 1:
    raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
  model_path = os.fspath(model_path)
  os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
  sentences = list(_training_sentences(texts, max_sentences))
  narrowed = False
  for _ in range(3):  # at most: fewer characters, then fewer pieces, then done
    try:
      model_proto = _train(sentences, vocab_size)
      break
    except RuntimeError as e:
      # Small corpora can't fill a large vocabulary, and with coverage 0.9995 a
      # CJK-heavy corpus has more characters to keep than a small vocabulary holds.
      chars = re.search(r"smaller than required_chars", str(e))
      largest = re.search(r"set it to a value <= (\d+)", str(e))
      if chars and not narrowed:  # half of the ids beyond bytes and symbols for characters
        keep = (vocab_size - 3 - 256 - len(_LAYOUT_SYMBOLS)) // 2
        sentences, narrowed = _frequent_chars_only(sentences, keep), True
      elif largest and fit:
        vocab_size = int(largest.group(1))
      elif largest:
        raise VocabTooLarge(vocab_size, int(largest.group(1))) from None
      else:
        raise ValueError(f"vocab_size={vocab_size} does not fit this training text: {e}") from e
  else:
    raise ValueError(f"vocab_size={vocab_size} does not fit this training text")
  # The .vocab goes first so that an existing .model implies a complete pair.
  _write_atomic(_vocab_path(model_path), _vocab_text(model_proto).encode("utf-8"))
  _write_atomic(model_path, model_proto)
  return model_path


def _train(sentences: list, vocab_size: int) -> bytes:
  """One sentencepiece training run in memory; the serialized model."""
  # Trained in memory, not via model_prefix: the prefix would be stored in the
  # model, so the same data would not give byte-identical models.
  buffer = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences),
      model_writer=buffer,
      model_type="unigram",
      vocab_size=vocab_size,
      character_coverage=0.9995,
      byte_fallback=True,
      split_digits=True,
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True,
      user_defined_symbols=list(_LAYOUT_SYMBOLS),
      # In bytes; a 2,000-char CJK sentence is ~6,000 bytes.
      max_sentence_length=4 * MAX_SENTENCE_CHARS + 16,
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      num_threads=os.cpu_count() or 1,
      minloglevel=1,  # drops per-iteration INFO progress, keeps warnings
  )
  return buffer.getvalue()


class Tokenizer:
  """Encodes text to ids (no eos added) and decodes ids back to the exact text."""

  def __init__(self, model_path: str | None = None, *, model_proto: bytes | None = None):
    if (model_path is None) == (model_proto is None):
      raise ValueError(
          f"pass exactly one of model_path or model_proto, got model_path={model_path!r}"
          f" and model_proto of type {type(model_proto).__name__}")
    self.model_path = None if model_path is None else os.fspath(model_path)
    self._sp = spm.SentencePieceProcessor()
    if model_proto is not None:
      self._sp.LoadFromSerializedProto(model_proto)
    else:
      if not os.path.exists(self.model_path):
        raise FileNotFoundError(f"no sentencepiece model at {self.model_path!r}")
      self._sp.Load(self.model_path)
    self.vocab_size = self._sp.GetPieceSize()
    self.pad_id = self._sp.pad_id()
    self.eos_id = self._sp.eos_id()
    self.unk_id = self._sp.unk_id()
    if (self.pad_id, self.eos_id) != (PAD_ID, EOS_ID):
      raise ValueError(f"model has pad_id={self.pad_id}, eos_id={self.eos_id};"
                       f" expected pad_id={PAD_ID}, eos_id={EOS_ID}")

  def encode(self, text: str) -> list[int]:
    """Token ids of text, without eos."""
    if not isinstance(text, str):
      raise TypeError(f"encode takes str, got {type(text).__name__}")
    try:
      return self._sp.EncodeAsIds(text)
    except (RuntimeError, UnicodeEncodeError):
      try:  # text with unpaired surrogates (undecodable bytes) is no Unicode text
        text.encode("utf-8")
      except UnicodeEncodeError as e:
        raise ValueError(f"text is not valid UTF-8: {text[max(0, e.start - 20):e.start + 20]!r} "
                         f"has an undecodable character at position {e.start}; pass UTF-8 "
                         "text") from None
      raise

  def decode(self, ids) -> str:
    """Text of ids up to the first eos, skipping pad.

    Ids past the pieces are a T5 vocabulary's extra ids: the first 100 above the last
    piece read <extra_id_99> .. <extra_id_0> (T5's sentinels), any others nothing.
    """
    ids = np.asarray(ids).reshape(-1).tolist()
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    text, run = [], []
    for i in ids:
      if i == self.pad_id:
        continue
      if i < self.vocab_size:
        run.append(i)
        continue
      text.append(self._sp.DecodeIds(run))
      run = []
      if i < self.vocab_size + EXTRA_IDS:
        text.append(f"<extra_id_{self.vocab_size + EXTRA_IDS - 1 - i}>")
    return "".join(text) + self._sp.DecodeIds(run)

  def id_to_piece(self, i: int) -> str:
    if i >= self.vocab_size:
      return self.decode([i])
    return self._sp.IdToPiece(int(i))

  def serialized_model_proto(self) -> bytes:
    return self._sp.serialized_model_proto()


def prepare_builtin(data_dir: str, *, num_train: int, num_validation: int, num_test: int,
                    seed: int = 0, long_fraction: float = 0.05, vocab_size: int = 8000,
                    fit: bool = False):
  """Builds the built-in dataset and a tokenizer trained on its train split, if missing.

  Returns (builder, tokenizer_path); the model lives in the dataset's own
  directory, so each corpus size/seed gets its own tokenizer.
  """
  from refinedweb_jax.data.datasets import builtin  # TFDS import is slow; only pay it here.

  settings = dict(num_train=num_train, num_validation=num_validation, num_test=num_test,
                  seed=seed, long_fraction=long_fraction)
  builder = builtin.build(data_dir, **settings)
  path = os.path.join(os.fspath(builder.data_dir), f"spm_{vocab_size}.model")
  if not os.path.exists(path):
    source = builtin.StrDataSource(builder.as_data_source("train"))

    def texts():
      for record in source:
        yield record["inputs"]
        yield record["targets"]

    train_tokenizer(texts(), path, vocab_size=vocab_size, fit=fit)
  return builder, path


def prepare_for_sources(data_dir: str, name: str, sources, *, vocab_size: int = 8000,
                        fit: bool = False, names=None,
                        max_sentences: int = 200_000) -> str:
  """A tokenizer trained on the inputs and targets of `sources` (train splits), if missing.

  `name` identifies the mixture (its tasks and sizes), so a changed mixture trains a new
  tokenizer instead of reusing a stale one. Each source gives records in proportion to its
  size (evenly spaced when they exceed max_sentences); what each gave is recorded beside
  the model (SOURCES_SUFFIX). A model without that record was trained by an earlier
  version, which read only the last source, and is trained again.
  """
  path = os.path.join(data_dir, "tokenizers", f"{name}_spm_{vocab_size}.model")
  names = list(names) if names is not None else [f"source {i}" for i in range(len(sources))]
  if os.path.exists(path) and os.path.exists(path + SOURCES_SUFFIX):
    return path
  if os.path.exists(path):
    log.warning("tokenizer %s was trained by an earlier version on the last task's text "
                "only; training it again on every task (runs that use it keep their copy)",
                path)
  counts = mixture_counts([len(s) for s in sources], max_sentences // 2)
  picked = [_evenly_spaced(source, n) for source, n in zip(sources, counts)]
  train_tokenizer(_round_robin(picked), path, vocab_size=vocab_size, fit=fit,
                  max_sentences=max_sentences)
  record = [dict(task=n, size=len(s), records=c) for n, s, c in zip(names, sources, counts)]
  _write_atomic(path + SOURCES_SUFFIX, json.dumps(dict(sources=record), indent=1).encode())
  return path


SOURCES_SUFFIX = ".sources.json"  # beside a mixture tokenizer: the records each task gave


def mixture_counts(sizes: list, budget: int) -> list:
  """Records taken from sources of these sizes: all of them, or a share in proportion to
  each size when together they exceed `budget` (at least one from a non-empty source)."""
  total = sum(sizes)
  if total <= budget:
    return list(sizes)
  return [min(size, max(1 if size else 0, size * budget // total)) for size in sizes]


def _evenly_spaced(source, n: int) -> Iterator[dict]:
  """n records of a random-access source, evenly spaced over it."""
  size = len(source)
  for j in range(n):
    yield source[j * size // n]


def _round_robin(record_iterators) -> Iterator[str]:
  """Inputs and targets of the sources' records, one record of each source in turn."""
  iterators = list(record_iterators)
  while iterators:
    for it in list(iterators):
      record = next(it, None)
      if record is None:
        iterators.remove(it)
        continue
      yield record["inputs"]
      yield record["targets"]


# How well a tokenizer covers a task's text (checked by `refinedweb prepare --task`).
COVERAGE_TEXTS = 300  # texts measured at most: a sample, so the check takes well under a second
COVERAGE_THRESHOLD = 0.01


class Coverage(NamedTuple):
  """The fractions of a tokenizer's pieces for some texts that are unk or UTF-8 byte pieces."""
  unknown: float  # pieces that are unk_id: characters the vocabulary cannot spell at all
  byte_fallback: float  # byte pieces <0x..>: characters spelled one UTF-8 byte at a time
  pieces: int  # pieces counted
  example: str | None  # text around the first such character, or None when there is none


def coverage(tokenizer: Tokenizer, texts, *, max_texts: int = COVERAGE_TEXTS) -> Coverage:
  """How `tokenizer` spells `texts`: of a list (or anything with len and indexing), at most
  max_texts evenly spaced; of another iterable, its first max_texts."""
  sp = tokenizer._sp  # pylint: disable=protected-access
  if hasattr(texts, "__len__") and hasattr(texts, "__getitem__"):
    step = max(1, -(-len(texts) // max_texts))
    texts = [texts[i] for i in range(0, len(texts), step)]
  unknown = byte = pieces = 0
  example = None
  for text in itertools.islice(texts, max_texts):
    text = text[:MAX_SENTENCE_CHARS]  # long documents: their start is sample enough
    ids = sp.EncodeAsIds(text)
    bad_unknown = sum(1 for i in ids if sp.IsUnknown(i))
    bad_byte = sum(1 for i in ids if sp.IsByte(i))
    unknown, byte, pieces = unknown + bad_unknown, byte + bad_byte, pieces + len(ids)
    if example is None and (bad_unknown or bad_byte):
      example = _uncovered_context(sp, text)
  if not pieces:
    return Coverage(0.0, 0.0, 0, None)
  return Coverage(unknown / pieces, byte / pieces, pieces, example)


def _uncovered_context(sp, text: str, width: int = 30) -> str:
  """The text around its first character spelled as unk or byte pieces."""
  at = 0
  for at, char in enumerate(text):
    if not char.isspace() and any(sp.IsUnknown(i) or sp.IsByte(i) for i in sp.EncodeAsIds(char)):
      break
  start = max(0, at - width // 2)
  return ("..." if start else "") + text[start:start + width] + (
      "..." if start + width < len(text) else "")


def coverage_warning(task: str, field: str, measured: Coverage, tokenizer_name: str,
                     threshold: float = COVERAGE_THRESHOLD,
                     trained_on_it: bool = False) -> str | None:
  """One line when more than `threshold` of the pieces are unk or byte pieces, else None.

  tokenizer_name: config.data.tokenizer's value ("builtin", "mixture" or a *.model file);
  trained_on_it: the tokenizer was trained on this task's text (then only its size helps).
  """
  parts = [f"{fraction:.1%} of the pieces are {what}"
           for fraction, what in ((measured.unknown, "unknown (unk)"),
                                  (measured.byte_fallback, "UTF-8 byte pieces"))
           if fraction > threshold]
  if not parts or not measured.pieces:
    return None
  if str(tokenizer_name).endswith(".model"):
    advice = ("this tokenizer does not cover these characters; pick one that does, e.g. an "
              "mT5 spiece.model")
  elif trained_on_it:  # a tokenizer that saw this text should spell it in whole pieces
    advice = ("a tokenizer trained on this task's text should not need them, so it saw too "
              "little of it or has too few pieces for its characters: a larger "
              "--config.data.vocab_size (Chinese needs thousands of pieces)")
  else:
    advice = ("train a tokenizer on this data: --config.data.tokenizer=mixture (and a larger "
              "--config.data.vocab_size for Chinese)")
  return (f"warning: task {task!r} {field} with tokenizer {tokenizer_name}: "
          f"{' and '.join(parts)} (e.g. {measured.example!r}); {advice}")
