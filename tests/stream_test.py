"""The global batch stream: the same global batches for any split of rows over processes,
every example once, positions restored exactly from one small record."""

import numpy as np
import pytest

from refinedweb_jax.data import pipeline, stream


class CharTokenizer:
  """One id per character (a stand-in with the Tokenizer interface the pipeline reads)."""
  eos_id = 1

  def encode(self, text):
    return [3 + ord(c) % 500 for c in text]


def _sources():
  rng = np.random.default_rng(0)
  make = lambda n, low, high, name: [
      {"inputs": name + "x" * int(rng.integers(low, high)), "targets": "y" * int(
          rng.integers(1, 12))} for _ in range(n)]
  return [make(37, 1, 30, "a"), make(23, 5, 60, "b"), make(11, 1, 8, "c")]


def _stream(batch=6, pack=True, alignment=(1, 1), seed=3):
  sources = _sources()
  transform = pipeline.Tokenize(CharTokenizer(), 48, 16)
  spec = stream.Spec(sizes=tuple(map(len, sources)), rates=(0.5, 0.3, 0.2), seed=seed,
                     batch_size=batch, input_length=48, target_length=16, pack=pack,
                     alignment=alignment)
  lengths = [stream.length_table(s, transform) for s in sources]
  return spec, stream.Planner(spec, lengths), stream.Rows(spec, sources, transform)


def _batches(spec, planner, builder, rows, steps, state=None):
  it = stream.GlobalBatches(spec, planner, builder, rows, workers=2, prefetch=3)
  if state is not None:
    it.set_state(state)
  out = [next(it) for _ in range(steps)]
  record = it.get_state()
  it.close()
  return out, record


@pytest.mark.parametrize("pack", [True, False])
def test_global_batches_do_not_depend_on_how_rows_are_split_over_processes(pack):
  spec, planner, builder = _stream(pack=pack)
  whole, _ = _batches(spec, planner, builder, range(6), 7)
  for processes in (2, 3):
    parts = [_batches(spec, planner, builder, range(p * 6 // processes,
                                                    (p + 1) * 6 // processes), 7)[0]
             for p in range(processes)]
    for step in range(7):
      for key in pipeline.FEATURES:
        np.testing.assert_array_equal(np.concatenate([part[step][key] for part in parts]),
                                      whole[step][key], err_msg=f"{processes} {step} {key}")


def test_a_restored_position_continues_the_same_batches():
  spec, planner, builder = _stream()
  straight, _ = _batches(spec, planner, builder, range(6), 9)
  first, record = _batches(spec, planner, builder, range(6), 4)
  assert record["step"] == 4 and set(record) == {"format", "fingerprint", "step", "cursor",
                                                   "waiting"}
  rest, _ = _batches(spec, planner, builder, range(3, 6), 5, state=record)
  for got, want in zip(rest, straight[4:]):
    for key in pipeline.FEATURES:
      np.testing.assert_array_equal(got[key], want[key][3:])
  # Plans alone (nothing read) reach the same position.
  assert stream.replay(planner, stream.State(), 4) == stream.State(
      record["step"], record["cursor"], tuple(record["waiting"]))


def test_every_example_of_the_sequence_is_packed_once_in_order_of_arrival():
  spec, planner, _ = _stream(alignment=(4, 2))
  state, seen = stream.State(), []
  for _ in range(20):
    rows, state = planner.plan(state)
    for row in rows:
      used_in = used_out = 0
      for g, at_in, at_out in sorted(row, key=lambda x: x[1]):
        n_in, n_out = planner.length(g)
        assert at_in % 4 == 0 and at_out % 2 == 0 and at_in >= used_in and at_out >= used_out
        assert at_in + n_in <= 48 and at_out + n_out <= 16
        used_in, used_out = at_in + n_in, at_out + n_out
        seen.append(g)
  assert len(seen) == len(set(seen))
  assert sorted(seen + list(state.waiting)) == list(range(state.cursor))
  assert len(state.waiting) <= spec.batch_size


def test_the_sequence_mixes_sources_at_their_rates_and_reshuffles_each_epoch():
  spec, planner, _ = _stream()
  picks = [planner.sequence[g] for g in range(4000)]
  share = np.bincount([j for j, _ in picks], minlength=3) / len(picks)
  np.testing.assert_allclose(share, spec.rates, atol=0.03)
  firsts = [i for j, i in picks if j == 2]
  assert sorted(firsts[:11]) == list(range(11)) and firsts[:11] != firsts[11:22]


def test_a_position_of_another_stream_or_format_is_refused_in_one_line():
  spec, planner, builder = _stream()
  _, record = _batches(spec, planner, builder, range(6), 2)
  other, _, _ = _stream(seed=4)
  with pytest.raises(ValueError, match="another data stream"):
    stream.check_state(record, other, "checkpoint 2")
  with pytest.raises(ValueError, match="another format"):
    stream.check_state({"format": 1}, spec, "checkpoint 2")
  with pytest.raises(ValueError, match="bad data position cursor"):
    stream.check_state(dict(record, cursor=-1), spec, "checkpoint 2")
