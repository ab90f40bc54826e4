"""Model features from examples: tokenize, pad or pack (Grain's first-fit packer), batch.

Training batches come from the global batch stream (stream.py); evaluation and the
distillation dump pack a fixed list of examples here (packed_batches).

Batches are dicts of int32 NumPy arrays with the model's feature names:
encoder_input_tokens, encoder_segment_ids, encoder_positions (B x S) and
decoder_input_tokens, decoder_target_tokens, decoder_loss_weights,
decoder_segment_ids, decoder_positions (B x T).
"""

import dataclasses

import grain
import numpy as np

FEATURES = ("encoder_input_tokens", "encoder_segment_ids", "encoder_positions",
            "decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
            "decoder_segment_ids", "decoder_positions")


@dataclasses.dataclass
class Tokenize(grain.transforms.Map):
  """Text example -> {'inputs','targets'} int32 ids, each truncated and ended by EOS."""
  tokenizer: object
  input_length: int
  target_length: int

  def map(self, example):
    eos = self.tokenizer.eos_id
    inputs = self.tokenizer.encode(example["inputs"])[: self.input_length - 1] + [eos]
    targets = self.tokenizer.encode(example["targets"])[: self.target_length - 1] + [eos]
    return {"inputs": np.asarray(inputs, np.int32), "targets": np.asarray(targets, np.int32)}


def _pad(ids, length):
  out = np.zeros((length,), np.int32)
  out[: len(ids)] = ids
  return out


@dataclasses.dataclass
class PadOne(grain.transforms.Map):
  """Unpacked example -> fixed-length arrays with segment ids (1 = real, 0 = padding).

  `target_features` are arrays with one row per target token, padded like the targets.
  """
  input_length: int
  target_length: int
  target_features: tuple = ()

  def map(self, ex):
    out = {}
    for key, length in (("inputs", self.input_length), ("targets", self.target_length)):
      n = len(ex[key])
      out[key] = _pad(ex[key], length)
      out[f"{key}_segment_ids"] = _pad(np.ones((n,), np.int32), length)
      out[f"{key}_positions"] = _pad(np.arange(n, dtype=np.int32), length)
    for key in self.target_features:
      padded = np.zeros((self.target_length,) + ex[key].shape[1:], ex[key].dtype)
      padded[: len(ex[key])] = ex[key]
      out[key] = padded
    return out


def to_model_features(batch, target_features: tuple = ()):
  """Packed/padded {inputs,targets,*_segment_ids,*_positions} -> model feature dict.

  `target_features` (arrays aligned with the targets) are passed through unchanged.
  """
  targets = batch["targets"]
  segments = batch["targets_segment_ids"]
  # Shift right within each segment: every example's decoder starts from 0.
  shifted = np.zeros_like(targets)
  shifted[:, 1:] = targets[:, :-1]
  starts = np.ones_like(segments, bool)
  starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
  shifted[starts] = 0
  return {
      "encoder_input_tokens": batch["inputs"],
      "encoder_segment_ids": batch["inputs_segment_ids"],
      "encoder_positions": batch["inputs_positions"],
      "decoder_input_tokens": shifted,
      "decoder_target_tokens": targets,
      "decoder_loss_weights": (segments > 0).astype(np.int32),
      # Padding positions of the decoder get segment 0 so they attend nowhere.
      "decoder_segment_ids": segments,
      "decoder_positions": batch["targets_positions"],
      **{key: batch[key] for key in target_features},
  }


def pack_rows(it, *, batch_size: int, input_length: int, target_length: int, seed: int,
         target_features: tuple = (), alignment: tuple = (1, 1), shuffle_bins: bool = True):
  """First-fit packing of tokenized examples into rows (the one packer of the project).

  Examples go, in order, into the first of `batch_size` rows that holds them; each
  starts on a multiple of `alignment` (inputs, targets), as sparse kinds whose pattern
  follows an example's block grid need (ModelConfig.packing_alignment).
  `target_features`: arrays with one row per target token, packed with the targets.
  """
  align_inputs, align_targets = alignment
  return grain.experimental.FirstFitPackIterDataset(
      it, length_struct={"inputs": input_length, "targets": target_length,
                         **{key: target_length for key in target_features}},
      meta_features=target_features, num_packing_bins=batch_size, seed=seed,
      shuffle_bins=shuffle_bins, pack_alignment_struct={
          "inputs": align_inputs, "targets": align_targets,
          **{key: align_targets for key in target_features}})


def packed_batches(examples, *, batch_size: int, input_length: int, target_length: int,
                   alignment: tuple = (1, 1)):
  """One pass over tokenized examples, packed: yields (features, example_BxT) per batch.

  example_BxT numbers each target token's example (its index in `examples`; -1 for
  padding). The last batch is padded with empty rows, so shapes stay fixed.
  """
  numbered = [{**ex, "example": np.full(len(ex["targets"]), i, np.int32)}
              for i, ex in enumerate(examples)]
  it = pack_rows(grain.MapDataset.source(numbered).to_iter_dataset(), batch_size=batch_size,
            input_length=input_length, target_length=target_length, seed=0,
            target_features=("example",), alignment=alignment, shuffle_bins=False)
  for batch in it.batch(batch_size, drop_remainder=False):
    rows = len(batch["targets"])
    batch = {k: np.pad(v, [(0, batch_size - rows)] + [(0, 0)] * (v.ndim - 1))
             for k, v in batch.items()}
    example = np.where(batch["targets_segment_ids"] > 0, batch.pop("example"), -1)
    yield to_model_features(batch), example


def eval_batches(source, tokenizer, *, batch_size: int, input_length: int, target_length: int,
                 max_examples: int | None = None, shard_index: int = 0, shard_count: int = 1):
  """Yields (features, texts) for a fixed, unshuffled, unpacked pass over the source.

  The last batch is padded with empty rows (zero loss weight) so shapes stay
  fixed and the step compiles once; texts lists only the real examples.
  """
  indices = list(range(len(source)))[:max_examples][shard_index::shard_count]
  tok = Tokenize(tokenizer, input_length, target_length)
  pad = PadOne(input_length, target_length)
  for start in range(0, len(indices), batch_size):
    chunk = [source[i] for i in indices[start: start + batch_size]]
    rows = [pad.map(tok.map(ex)) for ex in chunk]
    empty = {k: np.zeros_like(v) for k, v in rows[0].items()}
    rows += [empty] * (batch_size - len(rows))
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    yield to_model_features(batch), [dict(ex) for ex in chunk]
