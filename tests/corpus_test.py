"""Synthetic corpus: determinism, task prefixes, exact verbalization and checkable targets."""

import collections
import datetime
import random
import re

import pytest

from refinedweb_jax.data import corpus, tasks
from refinedweb_jax.data.corpus import verbalize

NUMBERS = {
    "en": {0: "zero", 7: "seven", 13: "thirteen", 42: "forty-two", 80: "eighty", 100: "one hundred",
           105: "one hundred five", 999: "nine hundred ninety-nine", 1001: "one thousand one",
           21000: "twenty-one thousand", 1_200_000: "one million two hundred thousand",
           999_999_999: "nine hundred ninety-nine million nine hundred ninety-nine thousand "
                        "nine hundred ninety-nine"},
    "de": {0: "null", 1: "eins", 16: "sechzehn", 17: "siebzehn", 21: "einundzwanzig",
           30: "dreißig", 42: "zweiundvierzig", 100: "hundert", 101: "hunderteins",
           121: "hunderteinundzwanzig", 1000: "tausend", 1001: "tausendeins",
           1100: "tausendeinhundert", 21000: "einundzwanzigtausend", 101000: "hunderteintausend",
           1_000_000: "eine Million", 1_000_001: "eine Million eins",
           1_200_000: "eine Million zweihunderttausend", 2_000_000: "zwei Millionen",
           21_000_000: "einundzwanzig Millionen"},
    "fr": {0: "zéro", 17: "dix-sept", 21: "vingt et un", 22: "vingt-deux", 61: "soixante et un",
           70: "soixante-dix", 71: "soixante et onze", 77: "soixante-dix-sept", 80: "quatre-vingts",
           81: "quatre-vingt-un", 91: "quatre-vingt-onze", 99: "quatre-vingt-dix-neuf", 100: "cent",
           101: "cent un", 200: "deux cents", 201: "deux cent un", 280: "deux cent quatre-vingts",
           1000: "mille", 2000: "deux mille", 80_000: "quatre-vingt mille",
           200_000: "deux cent mille", 1_000_000: "un million", 2_000_000: "deux millions",
           200_000_000: "deux cents millions", 1_200_000: "un million deux cent mille"},
    "zh": {0: "零", 10: "十", 12: "十二", 20: "二十", 42: "四十二", 105: "一百零五", 110: "一百一十",
           1001: "一千零一", 1010: "一千零一十", 1100: "一千一百", 2000: "二千", 10_000: "一万",
           10_001: "一万零一", 100_000: "十万", 100_010: "十万零一十", 120_000: "十二万",
           1_020_000: "一百零二万", 100_000_001: "一亿零一", 101_000_000: "一亿零一百万"},
}
PREFIXES = {"summarize": "summarize: ", "qa": "question: ", "code": "write python: ",
            "chat": "chat: "}
EVENT = re.compile(r"On day (\d+), (\w+) ([^.]+?) in (\w+)\.")


def _noun(english):
  return next(n for n in verbalize._NOUNS if n[0] == english)


def _adjective(english):
  return next(a for a in verbalize._ADJECTIVES if a[0] == english)


def test_same_seed_gives_identical_examples():
  first = list(corpus.generate_split("train", 300, seed=4))
  assert first == list(corpus.generate_split("train", 300, seed=4))
  assert first[:50] == list(corpus.generate_split("train", 50, seed=4))
  assert [e["id"] for e in first] == [f"train-{i}" for i in range(300)]
  assert first != list(corpus.generate_split("train", 300, seed=5))


def test_splits_differ():
  inputs = {s: [e["inputs"] for e in corpus.generate_split(s, 100, seed=0)] for s in corpus.SPLITS}
  assert inputs["train"] != inputs["validation"] != inputs["test"] != inputs["train"]
  assert len(set(inputs["train"]) & set(inputs["test"])) < 10


def test_weights_cover_tasks_and_favour_english_pairs():
  assert set(corpus.TASK_WEIGHTS) == set(tasks.BUILTIN)
  assert len(tasks.BUILTIN) == 16
  assert sum(corpus.TASK_WEIGHTS.values()) == pytest.approx(1.0)
  assert corpus.TASK_WEIGHTS["translate_en_de"] > corpus.TASK_WEIGHTS["translate_de_fr"]
  assert corpus.TASK_WEIGHTS["translate_zh_en"] > corpus.TASK_WEIGHTS["translate_zh_fr"]


def test_every_task_has_its_prefix_and_fields():
  rng = random.Random(0)
  for task in tasks.BUILTIN:
    if task in tasks.TRANSLATION_TASKS:
      src, tgt = task.split("_")[1:]
      prefix = f"translate {tasks.LANGUAGE_NAMES[src]} to {tasks.LANGUAGE_NAMES[tgt]}: "
    else:
      prefix = PREFIXES[task]
    for _ in range(20):
      example = corpus.generate_example(task, rng)
      assert set(example) == {"inputs", "targets", "task", "tests", "kind"}
      assert example["task"] == task
      assert example["kind"] in (corpus.TRANSLATION_KINDS if task in tasks.TRANSLATION_TASKS
                                 else (task,))
      assert example["inputs"].startswith(prefix), (task, example["inputs"])
      assert example["targets"]
      assert bool(example["tests"]) == (task == "code")


def test_split_restricted_to_tasks():
  tasks = {e["task"] for e in corpus.generate_split("test", 100, tasks=["chat", "translate_fr_zh"])}
  assert tasks == {"chat", "translate_fr_zh"}


@pytest.mark.parametrize("lang", verbalize.LANGUAGES)
def test_number_words(lang):
  assert len(NUMBERS[lang]) >= 10
  for n, words in NUMBERS[lang].items():
    assert verbalize.number_words(n, lang) == words, n


def test_number_words_rejects_out_of_range():
  with pytest.raises(ValueError, match="1000000000"):
    verbalize.number_words(1_000_000_000, "en")
  with pytest.raises(ValueError, match="'es'"):
    verbalize.number_words(3, "es")


def test_quantities_agree_in_number_and_gender():
  expected = {
      (1, "h"): ("one hour", "eine Stunde", "une heure", "一个小时"),
      (2, "h"): ("two hours", "zwei Stunden", "deux heures", "两个小时"),
      (21, "min"): ("twenty-one minutes", "einundzwanzig Minuten", "vingt et une minutes", "二十一分钟"),
      (81, "day"): ("eighty-one days", "einundachtzig Tage", "quatre-vingt-un jours", "八十一天"),
      (1, "km"): ("one kilometre", "ein Kilometer", "un kilomètre", "一公里"),
      (80, "kg"): ("eighty kilograms", "achtzig Kilogramm", "quatre-vingts kilogrammes", "八十公斤"),
      (200, "l"): ("two hundred litres", "zweihundert Liter", "deux cents litres", "二百升"),
  }
  for (n, unit), texts in expected.items():
    assert tuple(verbalize.quantity_text(n, unit, lang) for lang in verbalize.LANGUAGES) == texts
  assert verbalize.quantity_text(42, "km", "de", words=False) == "42 Kilometer"


def test_dates_and_times():
  date = datetime.date(2021, 3, 5)
  assert [verbalize.date_text(date, lang) for lang in verbalize.LANGUAGES] == [
      "March 5, 2021", "5. März 2021", "5 mars 2021", "2021年3月5日"]
  assert verbalize.date_text(datetime.date(2021, 3, 1), "fr", weekday=True) == "lundi 1er mars 2021"
  assert verbalize.date_text(date, "de", weekday=True) == "Freitag, 5. März 2021"
  assert [verbalize.time_text(19, 30, lang) for lang in verbalize.LANGUAGES] == [
      "7:30 pm", "19:30 Uhr", "19 h 30", "晚上7点30分"]
  assert verbalize.time_text(0, 5, "en") == "12:05 am"
  assert verbalize.time_text(12, 0, "en") == "12 pm"
  assert verbalize.format_digits(1_200_000, "de") == "1.200.000"


def test_noun_phrases_agree():
  assert verbalize._counted(1, _noun("dog"), _adjective("red")) == {
      "en": "a red dog", "de": "einen roten Hund", "fr": "un chien rouge", "zh": "一只红色的狗"}
  assert verbalize._counted(1, _noun("apple"), None)["en"] == "an apple"
  assert verbalize._counted(1, _noun("car"), _adjective("white"))["de"] == "ein weißes Auto"
  assert verbalize._counted(2, _noun("car"), _adjective("small")) == {
      "en": "two small cars", "de": "zwei kleine Autos", "fr": "deux petites voitures",
      "zh": "两辆小车"}
  assert verbalize._definite(_noun("bird"), None)["fr"] == "l'oiseau"
  assert verbalize._definite(_noun("bird"), _adjective("small"))["fr"] == "le petit oiseau"
  assert verbalize._definite(_noun("cat"), _adjective("black"))["de"] == "die schwarze Katze"


def test_sentences_are_punctuated_in_every_language():
  rng = random.Random(3)
  for _ in range(200):
    texts = verbalize.sentence(rng)
    assert texts["en"][0].isupper() and texts["en"][-1] in ".?"
    assert texts["de"][0].isupper() and texts["fr"][0].isupper()
    assert texts["zh"][-1] in "。？"


def test_qa_answer_is_a_span_of_the_context():
  rng = random.Random(1)
  for _ in range(200):
    example = corpus.generate_example("qa", rng, max_context_words=200)
    question, context = example["inputs"].split(" context: ")
    assert example["targets"] in context
    assert example["targets"] not in question
    assert len(context.split()) <= 260 or "。" in context


def test_long_examples_need_thousands_of_words():
  examples = list(corpus.generate_split("train", 6, seed=2, long_fraction=1.0,
                                        tasks=["qa", "summarize"]))
  for example in examples:
    assert len(example["inputs"].split()) >= 1500, example["task"]
    if example["task"] == "qa":
      assert len(example["inputs"].split()) >= 2000
      assert example["targets"] in example["inputs"].split(" context: ")[1]
  short = corpus.generate_split("train", 300, seed=2, long_fraction=0.0, tasks=["qa", "summarize"])
  assert max(len(e["inputs"].split()) for e in short) < 600


def test_summaries_count_and_name_the_right_events():
  for example in corpus.generate_split("validation", 150, tasks=["summarize"], long_fraction=0.05):
    events = EVENT.findall(example["inputs"])
    assert len(events) == example["inputs"].count("On day ")
    tally = collections.Counter(person for _, person, _, _ in events)
    (star, top), *rest = tally.most_common()
    assert not rest or rest[0][1] < top  # no ties
    days = [int(day) for day, _, _, _ in events]
    assert days == sorted(days)
    first, last = events[0], events[-1]
    assert example["targets"] == (f"{len(events)} events. Most often: {star}. "
                                  f"First: {first[1]} {first[2]}. Last: {last[1]} {last[2]}.")


def test_code_targets_pass_their_tests():
  rng = random.Random(7)
  names = set()
  for _ in range(400):
    example = corpus.generate_example("code", rng)
    assert example["tests"].count("assert ") == 3
    assert "    " in example["targets"] and "\t" not in example["targets"]
    namespace = {}
    exec(example["targets"] + "\n" + example["tests"], namespace)  # pylint: disable=exec-used
    names.add(example["targets"].split("(")[0])
  assert len(names) >= 30


def test_chat_arithmetic_is_right():
  rng = random.Random(2)
  checked = 0
  for _ in range(300):
    reply = corpus.generate_example("chat", rng)["targets"]
    match = re.fullmatch(r"(\d+) (plus|minus|times) (\d+) is (\d+)\.", reply)
    if match:
      a, op, b, c = match.groups()
      expected = {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}
      assert expected[op] == int(c)
      checked += 1
  assert checked > 5


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match=r"'poetry'.*translate_en_de.*chat"):
    corpus.generate_example("poetry", random.Random(0))
  with pytest.raises(ValueError, match=r"'dev'.*train, validation, test"):
    corpus.generate_split("dev", 3)
  with pytest.raises(ValueError, match="'poetry'"):
    corpus.generate_split("train", 3, tasks=["qa", "poetry"])
  with pytest.raises(ValueError, match="long_fraction"):
    corpus.generate_split("train", 3, long_fraction=1.5)
