"""Metrics against their reference libraries, and SQuAD normalisation (pass@1: sandbox_test)."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from refinedweb_jax.evaluate import metrics
from refinedweb_jax.evaluate import sandbox

EN_TARGETS = ["The cat sat on the mat.", "A man is riding a bicycle down the street.",
              "Two dogs are playing in the snow.", "She reads the newspaper every morning."]
EN_PREDICTIONS = ["The cat is sitting on the mat.", "A man rides a bike down the street.",
                  "Two dogs play in snow.", "Every morning she reads a newspaper."]
DE_TARGETS = ["Ein Mann fährt mit dem Fahrrad die Straße entlang.",
              "Zwei Hunde spielen im Schnee.", "Die Katze sitzt auf der Matte."]
DE_PREDICTIONS = ["Ein Mann fährt ein Fahrrad die Straße hinunter.",
                  "Zwei Hunde spielen im Schnee.", "Die Katze saß auf einer Matte."]
ZH_TARGETS = ["我每天早上都喝咖啡。", "他们在公园里踢足球。", "这本书非常有意思。"]
ZH_PREDICTIONS = ["我每天早上喝咖啡。", "他们在公园踢足球。", "这本书很有意思。"]


def test_bleu_matches_sacrebleu():
  for targets, predictions in [(EN_TARGETS, EN_PREDICTIONS), (DE_TARGETS, DE_PREDICTIONS)]:
    expected = sacrebleu.corpus_bleu(predictions, [targets]).score
    assert 0 < expected < 100
    assert metrics.bleu(targets, predictions) == {"bleu": pytest.approx(expected)}
    assert metrics.bleu(targets, predictions, language="de")["bleu"] == pytest.approx(expected)


def test_bleu_chinese_uses_zh_tokenizer():
  expected = sacrebleu.corpus_bleu(ZH_PREDICTIONS, [ZH_TARGETS], tokenize="zh").score
  got = metrics.bleu(ZH_TARGETS, ZH_PREDICTIONS, language="zh")["bleu"]
  assert got == pytest.approx(expected)
  # Without it each unspaced sentence is one or two tokens and nearly nothing matches.
  assert got > metrics.bleu(ZH_TARGETS, ZH_PREDICTIONS, language="en")["bleu"] + 20


def test_chrf_matches_sacrebleu():
  for targets, predictions in [(EN_TARGETS, EN_PREDICTIONS), (DE_TARGETS, DE_PREDICTIONS),
                               (ZH_TARGETS, ZH_PREDICTIONS)]:
    expected = sacrebleu.corpus_chrf(predictions, [targets]).score
    assert metrics.chrf(targets, predictions) == {"chrf": pytest.approx(expected)}


def test_rouge_matches_rouge_score():
  targets = EN_TARGETS + ["Running runners ran quickly; the runner's shoes were running-shoes."]
  predictions = EN_PREDICTIONS + ["The runners were running quick with shoes on."]
  scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
  scores = [scorer.score(t, p) for t, p in zip(targets, predictions)]
  got = metrics.rouge(targets, predictions)
  assert set(got) == {"rouge1", "rouge2", "rougeL"}
  for name in got:
    expected = 100 * sum(s[name].fmeasure for s in scores) / len(scores)
    assert got[name] == pytest.approx(expected)


def test_rouge_chinese_counts_characters():
  # 3 of 4 characters shared: unigram P = R = 3/4; bigrams 我喜, 喜欢 of 3; LCS 3.
  got = metrics.rouge(["我喜欢猫"], ["我喜欢狗"])
  assert got == {"rouge1": pytest.approx(75.0), "rouge2": pytest.approx(200 / 3),
                 "rougeL": pytest.approx(75.0)}
  assert metrics.CJKTokenizer().tokenize("我用Python running") == ["我", "用", "python", "run"]


@pytest.mark.parametrize("target, prediction", [
    ("cat", "The Cat!"), ("an apple", "apple"), ("a dog", "the   dog."),
    ("Paris, France", "paris france"), ("New\tYork", " new york "), ("1,000", "1000"),
    ("北京大学", "北京 大学。"),
])
def test_squad_normalisation_exact_match(target, prediction):
  assert metrics.squad([target], [prediction]) == {"exact_match": 100.0, "f1": 100.0}


def test_squad_partial_overlap_and_multiple_answers():
  # Prediction tokens {denver, broncos, won} vs {broncos}: P = 1/3, R = 1, F1 = 0.5.
  assert metrics.squad(["Broncos"], ["Denver Broncos won"]) == {"exact_match": 0.0, "f1": 50.0}
  # Best of the answers: "Denver Broncos" has P = 2/3, R = 1, F1 = 0.8.
  got = metrics.squad([["Broncos", "the Denver Broncos"]], ["Denver Broncos won"])
  assert got == {"exact_match": 0.0, "f1": pytest.approx(80.0)}
  # Two examples averaged: one exact, one with no overlap.
  assert metrics.squad(["a cat", ["dog"]], ["cat", "bird"]) == {"exact_match": 50.0, "f1": 50.0}
  # Chinese: characters are tokens; 2 of 3 predicted, 2 of 4 expected: F1 = 2 * 2/3 * 1/2 / (7/6).
  got = metrics.squad(["北京大学"], ["北京市"])
  assert got["exact_match"] == 0.0 and got["f1"] == pytest.approx(100 * 4 / 7)


def test_mismatched_lengths_raise():
  with pytest.raises(ValueError, match="2 targets and 1 predictions"):
    metrics.bleu(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="1 tests for 2 predictions"):
    metrics.pass_at_1(["a", "b"], ["a", "b"], tests=["assert True"])
  with pytest.raises(ValueError, match="no acceptable answers"):
    metrics.squad([[]], ["x"])
  with pytest.raises(ValueError, match="timeout_s must be > 0, got 0"):
    sandbox.run_python("pass", timeout_s=0)
