"""A tokenizer trained for a mixture of tasks sees every task's text, in proportion."""

import json
import os
import random

from refinedweb_jax.data import tokenizer as tokenizer_lib

GERMAN = ("Eine Gruppe von Männern lädt Kisten auf einen Lastwagen . Zwei Mädchen spielen "
          "fröhlich im Schnee . Ein älterer Mann überquert die Straße vor dem Geschäft .")
FRENCH = ("Un groupe de personnes marche dans la rue . Une femme âgée lit un journal près "
          "de la fenêtre . Deux garçons jouent au ballon à côté du lac .")
CHINESE = "一群男人在街上走路。两个女孩在雪地里玩耍。一位老人正在看报纸。"


def _task(text: str, size: int, seed: int) -> list:
  """`size` records whose targets are shuffled words of `text` and inputs English-like."""
  words, rng = text.split(), random.Random(seed)
  return [dict(inputs=f"translate sentence {i}: a group of people",
               targets=" ".join(rng.sample(words, 8))) for i in range(size)]


def _chinese_task(size: int, seed: int) -> list:
  rng = random.Random(seed)
  return [dict(inputs=f"translate sentence {i}", targets="".join(rng.sample(CHINESE, 12)))
          for i in range(size)]


def test_every_task_of_a_mixture_is_in_the_tokenizer(tmp_path):
  sources = [_task(GERMAN, 300, 0), _task(FRENCH, 200, 1), _chinese_task(150, 2)]
  path = tokenizer_lib.prepare_for_sources(str(tmp_path), "mix", sources, vocab_size=600,
                                           names=["de", "fr", "zh"])
  tok = tokenizer_lib.Tokenizer(path)
  pieces = {tok.id_to_piece(i) for i in range(tok.vocab_size)}
  for word in ("▁Männern", "▁Gruppe", "▁Straße", "▁personnes", "▁femme", "▁côté"):
    assert word in pieces, word
  for text in (GERMAN, FRENCH, CHINESE):  # each language's characters: no byte pieces
    measured = tokenizer_lib.coverage(tok, [text])
    assert measured.byte_fallback == 0 and measured.unknown == 0, (text, measured)
  with open(path + tokenizer_lib.SOURCES_SUFFIX) as f:
    record = json.load(f)["sources"]
  assert [(r["task"], r["size"], r["records"]) for r in record] == [
      ("de", 300, 300), ("fr", 200, 200), ("zh", 150, 150)]


def test_large_mixtures_give_each_task_a_share_in_proportion():
  assert tokenizer_lib.mixture_counts([300, 200], 1000) == [300, 200]
  assert tokenizer_lib.mixture_counts([9000, 1000, 0], 1000) == [900, 100, 0]
  assert tokenizer_lib.mixture_counts([100_000, 3], 1000) == [999, 1]


def test_a_tokenizer_of_the_earlier_version_is_trained_again(tmp_path, caplog):
  """One trained before the sources were recorded read only the last task: retrained."""
  sources = [_task(GERMAN, 200, 0), _task(FRENCH, 200, 1)]
  stale = tokenizer_lib.train_tokenizer(
      (r[field] for r in sources[1] for field in ("inputs", "targets")),
      os.path.join(tmp_path, "tokenizers", "mix_spm_500.model"), vocab_size=500, fit=True)
  path = tokenizer_lib.prepare_for_sources(str(tmp_path), "mix", sources, vocab_size=500,
                                           fit=True)
  assert path == stale and "earlier version" in caplog.text
  tok = tokenizer_lib.Tokenizer(path)
  assert "▁Männern" in {tok.id_to_piece(i) for i in range(tok.vocab_size)}
  mtime = os.stat(path).st_mtime_ns  # recorded now: used as it is from here on
  assert tokenizer_lib.prepare_for_sources(str(tmp_path), "mix", sources, vocab_size=500,
                                         fit=True) == path
  assert os.stat(path).st_mtime_ns == mtime
