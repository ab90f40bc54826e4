"""Mixture rates, empirical mixing frequencies and exact resumption of the mixed stream."""

import collections

import numpy as np
import pytest

from refinedweb_jax.data import pipeline as data
from refinedweb_jax.data import stream, tasks
from refinedweb_jax.data.tokenizer import Tokenizer


def test_proportional_rates_follow_sizes_and_cap():
  sizes = {"a": 100, "b": 300, "c": 600}
  assert tasks.mixture_rates(sizes) == pytest.approx({"a": 0.1, "b": 0.3, "c": 0.6})
  # T5's cap K=200: min(n, K) -> 100, 200, 200.
  assert tasks.mixture_rates(sizes, cap=200) == pytest.approx({"a": 0.2, "b": 0.4, "c": 0.4})


def test_temperature_rates():
  sizes = {"a": 100, "b": 400}
  # T=2: r ∝ n^(1/2) -> 10 : 20.
  assert tasks.mixture_rates(sizes, method="temperature", temperature=2.0) == pytest.approx(
      {"a": 1 / 3, "b": 2 / 3})
  # Cap first, then temperature: min(n, 100)^(1/2) -> equal.
  assert tasks.mixture_rates(sizes, method="temperature", temperature=2.0, cap=100) == (
      pytest.approx({"a": 0.5, "b": 0.5}))


def test_explicit_rates_and_errors():
  assert tasks.mixture_rates({"a": 1, "b": 1}, method="explicit",
                             weights=tasks.parse_weights("a=3,b=1")) == pytest.approx(
                                 {"a": 0.75, "b": 0.25})
  with pytest.raises(ValueError, match="explicit mixture weights missing for tasks"):
    tasks.mixture_rates({"a": 1, "b": 1}, method="explicit", weights={"a": 1})
  with pytest.raises(ValueError, match="unknown mixture rate 'uniformish'"):
    tasks.mixture_rates({"a": 1}, method="uniformish")
  with pytest.raises(ValueError, match="temperature must be > 0"):
    tasks.mixture_rates({"a": 1}, method="temperature", temperature=0)
  with pytest.raises(ValueError, match="bad config.mixture.weights entry 'a:3'"):
    tasks.parse_weights("a:3")


def _sources(sizes):
  return [[{"task": name, "inputs": f"{name} {i}", "targets": str(i)} for i in range(n)]
          for name, n in sizes.items()]


@pytest.mark.parametrize("method, kwargs", [("proportional", {}), ("proportional", {"cap": 500}),
                                            ("temperature", {"temperature": 3.0})])
def test_empirical_frequencies_match_rates(method, kwargs):
  sizes = {"a": 50, "b": 700, "c": 2000}
  rates = tasks.mixture_rates(sizes, method=method, **kwargs)
  sequence = stream.mixture([len(s) for s in _sources(sizes)], [rates[n] for n in sizes], 1)
  names = list(sizes)
  counts = collections.Counter(names[sequence[i][0]] for i in range(10_000))
  for name, rate in rates.items():
    assert abs(counts[name] / 10_000 - rate) < 0.02, (name, counts[name], rate)


def test_resuming_mid_mixture_reproduces_the_example_sequence(tiny_data_dir):
  import glob
  tokenizer = Tokenizer(glob.glob(f"{tiny_data_dir}/**/spm_600.model", recursive=True)[0])
  sizes = {"a": 30, "b": 90}
  rates = tasks.mixture_rates(sizes)

  def batches():
    return stream.batches(_sources(sizes), [rates[n] for n in sizes],
                          data.Tokenize(tokenizer, 16, 8), batch_size=4, input_length=16,
                          target_length=8, pack=True, seed=5)

  it = batches()
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(10)]
  resumed = batches()
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_packing_aligns_example_starts_for_sparse_kinds(tiny_data_dir):
  import glob
  tokenizer = Tokenizer(glob.glob(f"{tiny_data_dir}/**/spm_600.model", recursive=True)[0])
  sizes = {"a": 40, "b": 40}
  rates = tasks.mixture_rates(sizes)
  it = stream.batches(_sources(sizes), [rates[n] for n in sizes],
                      data.Tokenize(tokenizer, 32, 16), batch_size=4, input_length=32,
                      target_length=16, pack=True, seed=3, alignment=(8, 4))
  packed_more_than_one = False
  for _ in range(5):
    batch = next(it)
    for key, align in (("encoder", 8), ("decoder", 4)):
      seg = batch[f"{key}_segment_ids"]
      starts = (seg > 0) & np.concatenate([np.ones_like(seg[:, :1], bool),
                                           seg[:, 1:] != seg[:, :-1]], axis=1)
      rows, columns = np.nonzero(starts)
      assert (columns % align == 0).all(), (key, columns)
      # Positions restart at every example: its own positions 0, 1, ...
      np.testing.assert_array_equal(batch[f"{key}_positions"][rows, columns], 0)
      packed_more_than_one |= int(seg.max()) > 1
  assert packed_more_than_one


def test_every_builtin_task_resolves_to_exactly_one_family_row():
  from refinedweb_jax.data import corpus
  for name in tasks.BUILTIN:
    rows = [f for f in tasks.FAMILIES.values() if name in f.tasks()]
    assert rows == [tasks.family(name)], name
    row = rows[0]
    assert tasks.metrics(name) == row.metrics and row.main_metric == tasks.main_metric(name)
    assert tasks.prefix(name) == row.prefix.format(**tasks.fields(name))
    assert tasks.language(name) in tasks.LANGUAGES
  assert len(set(tasks.BUILTIN)) == sum(len(f.tasks()) for f in tasks.FAMILIES.values()) == 16
  assert set(corpus.GENERATORS) == set(tasks.FAMILIES)  # each family's generator
  # The rows say what the helpers used to spell out per family.
  assert tasks.prefix("translate_en_de") == tasks.translation_prefix("en", "de") == (
      "translate English to German: ")
  assert (tasks.language("translate_fr_zh"), tasks.main_metric("summarize")) == ("zh", "rougeL")
  assert tasks.inputs("summarize", "text") == "summarize: text"
  assert tasks.inputs("qa", ("who?", "Bo.")) == tasks.qa_input("who?", "Bo.")
  assert tasks.inputs("chat", ["hi"]) == tasks.chat_prompt("hi") == "chat: hi"
  # Other names belong to no row; a row naming an unknown metric fails where it is declared.
  assert tasks.main_metric("xsum") is None
  with pytest.raises(ValueError, match="unknown built-in task 'xsum'; allowed: translate_en_de"):
    tasks.prefix("xsum")
  with pytest.raises(ValueError, match="'bleurt'; allowed: bleu"):
    tasks.Family("paraphrase", "paraphrase", "paraphrase: ", ("bleurt",), "bleurt", 0.1)
