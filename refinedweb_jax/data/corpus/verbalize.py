"""Exact verbalization of numbers, dates, times, quantities and simple sentences in 4 languages.

Conventions, each applied consistently:
  en: no "and" after hundred ("one hundred five"), hyphenated tens ("forty-two").
  de: "eins" alone or at the end, "ein" inside compounds; "ein" is dropped before
      hundert/tausend at the start of a word ("hunderteins", "tausendeinhundert",
      "eine Million hunderttausend").
  fr: traditional spelling (hyphens only below one hundred, "vingt et un"), plural
      "quatre-vingts"/"deux cents" only at the end or before "millions".
  zh: "二" throughout (also "二千"), "十二" at the start but "一十" inside ("一百一十"),
      one "零" per gap ("一千零一", "十万零一十").
"""

from __future__ import annotations

import datetime
import random

from refinedweb_jax.data.tasks import LANGUAGES

MAX_NUMBER = 999_999_999

_EN_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
             "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_EN_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

_DE_UNITS = ("", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun")
_DE_TEENS = ("zehn elf zwölf dreizehn vierzehn fünfzehn sechzehn siebzehn achtzehn "
             "neunzehn").split()
_DE_TENS = ("", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig",
            "neunzig")

_FR_SMALL = ("zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze "
             "quinze seize").split()
_FR_TENS = ("", "", "vingt", "trente", "quarante", "cinquante", "soixante")

_ZH_DIGITS = "零一二三四五六七八九"


def _en_below_1000(n: int) -> str:
  hundreds, rest = divmod(n, 100)
  words = [_EN_SMALL[hundreds] + " hundred"] if hundreds else []
  if rest >= 20:
    words.append(_EN_TENS[rest // 10] + (f"-{_EN_SMALL[rest % 10]}" if rest % 10 else ""))
  elif rest:
    words.append(_EN_SMALL[rest])
  return " ".join(words)


def _en(n: int) -> str:
  if n == 0:
    return "zero"
  parts = []
  for scale, name in ((10**6, " million"), (1000, " thousand"), (1, "")):
    group = n // scale % 1000
    if group:
      parts.append(_en_below_1000(group) + name)
  return " ".join(parts)


def _de_below_100(n: int) -> str:
  if n < 10:
    return _DE_UNITS[n]
  if n < 20:
    return _DE_TEENS[n - 10]
  tens, units = divmod(n, 10)
  return (_DE_UNITS[units] + "und" if units else "") + _DE_TENS[tens]


def _de_below_1000(n: int, word_start: bool) -> str:
  hundreds, rest = divmod(n, 100)
  head = ""
  if hundreds:
    head = ("" if hundreds == 1 and word_start else _DE_UNITS[hundreds]) + "hundert"
  return head + _de_below_100(rest)


def _de(n: int) -> str:
  if n == 0:
    return "null"
  millions, thousands, rest = n // 10**6, n // 1000 % 1000, n % 1000
  words = []
  if millions == 1:
    words.append("eine Million")
  elif millions % 100 == 1:
    # Like "tausendundeine Nacht": a final "ein" agrees with a singular noun.
    words.append(_de_below_1000(millions, True) + "e Million")
  elif millions:
    words.append(_de_below_1000(millions, True) + " Millionen")
  compound = ""
  if thousands:
    compound = ("" if thousands == 1 else _de_below_1000(thousands, True)) + "tausend"
  if rest:
    compound += _de_below_1000(rest, not compound)
    if rest % 100 == 1:
      compound += "s"
  if compound:
    words.append(compound)
  return " ".join(words)


def _fr_below_100(n: int, final: bool) -> str:
  if n <= 16:
    return _FR_SMALL[n]
  if n < 20:
    return "dix-" + _FR_SMALL[n - 10]
  tens, units = divmod(n, 10)
  if tens == 7:
    return "soixante et onze" if n == 71 else "soixante-" + _fr_below_100(n - 60, final)
  if tens == 8:
    if units == 0:
      return "quatre-vingts" if final else "quatre-vingt"
    return "quatre-vingt-" + _FR_SMALL[units]
  if tens == 9:
    return "quatre-vingt-" + _fr_below_100(n - 80, final)
  if units == 0:
    return _FR_TENS[tens]
  return _FR_TENS[tens] + (" et un" if units == 1 else "-" + _FR_SMALL[units])


def _fr_below_1000(n: int, final: bool) -> str:
  hundreds, rest = divmod(n, 100)
  if not hundreds:
    return _fr_below_100(rest, final)
  head = "cent" if hundreds == 1 else _FR_SMALL[hundreds] + " cent"
  if not rest:
    return head + ("s" if hundreds > 1 and final else "")
  return head + " " + _fr_below_100(rest, final)


def _fr(n: int) -> str:
  if n == 0:
    return "zéro"
  millions, thousands, rest = n // 10**6, n // 1000 % 1000, n % 1000
  words = []
  if millions:
    # "million" is a noun, so "deux cents millions" keeps its plural s.
    words.append("un million" if millions == 1 else _fr_below_1000(millions, True) + " millions")
  if thousands:
    # "mille" is not a noun: "deux cent mille", "quatre-vingt mille".
    words.append("mille" if thousands == 1 else _fr_below_1000(thousands, False) + " mille")
  if rest:
    words.append(_fr_below_1000(rest, True))
  return " ".join(words)


def _zh_below_10000(n: int) -> str:
  out, gap = "", False
  for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
    digit = n // value % 10
    if digit:
      out += ("零" if gap else "") + _ZH_DIGITS[digit] + unit
      gap = False
    elif out:
      gap = True
  return out


def _zh(n: int) -> str:
  if n == 0:
    return "零"
  out, gap = "", False
  for value, unit in ((10**8, "亿"), (10**4, "万"), (1, "")):
    group = n // value % 10**4
    if not group:
      gap = bool(out)
      continue
    if out and (gap or group < 1000):
      out += "零"
    out += _zh_below_10000(group) + unit
    gap = False
  return out[1:] if out.startswith("一十") else out


_NUMBER_WORDS = {"en": _en, "de": _de, "fr": _fr, "zh": _zh}


def _check_lang(lang: str) -> None:
  if lang not in LANGUAGES:
    raise ValueError(f"unknown language {lang!r}; expected one of: {', '.join(LANGUAGES)}")


def number_words(n: int, lang: str) -> str:
  """Cardinal number 0..999,999,999 written out in words."""
  _check_lang(lang)
  if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_NUMBER:
    raise ValueError(f"number must be an int in 0..{MAX_NUMBER}, got {n!r}")
  return _NUMBER_WORDS[lang](n)


def french_feminine(words: str) -> str:
  """French number words agreeing with a feminine noun ("vingt et une", "quatre-vingt-une")."""
  if words == "un" or words.endswith((" un", "-un")):
    return words + "e"
  return words


def format_digits(n: int, lang: str) -> str:
  """Digits with the language's thousands separator from 10,000 up (four digits stay plain)."""
  _check_lang(lang)
  if n < 10_000:
    return str(n)
  sep = {"en": ",", "de": ".", "fr": " ", "zh": ","}[lang]
  return f"{n:,}".replace(",", sep)


_MONTHS = {
    "en": "January February March April May June July August September October November "
          "December".split(),
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November "
          "Dezember".split(),
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre "
          "décembre".split(),
}
_WEEKDAYS = {  # Monday first, as datetime.date.weekday() counts.
    "en": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
    "de": "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag".split(),
    "fr": "lundi mardi mercredi jeudi vendredi samedi dimanche".split(),
    "zh": "星期一 星期二 星期三 星期四 星期五 星期六 星期日".split(),
}


def date_text(date: datetime.date, lang: str, weekday: bool = False) -> str:
  """A date as written in running text, e.g. "Friday, March 5, 2021" / "2021年3月5日星期五"."""
  _check_lang(lang)
  y, m, d, day_name = date.year, date.month, date.day, _WEEKDAYS[lang][date.weekday()]
  if lang == "en":
    text = f"{_MONTHS['en'][m - 1]} {d}, {y}"
    return f"{day_name}, {text}" if weekday else text
  if lang == "de":
    text = f"{d}. {_MONTHS['de'][m - 1]} {y}"
    return f"{day_name}, {text}" if weekday else text
  if lang == "fr":
    text = f"{'1er' if d == 1 else d} {_MONTHS['fr'][m - 1]} {y}"
    return f"{day_name} {text}" if weekday else text
  return f"{y}年{m}月{d}日" + (day_name if weekday else "")


def _zh_period(hour: int) -> str:
  if hour < 6:
    return "凌晨"
  if hour < 12:
    return "上午"
  if hour == 12:
    return "中午"
  return "下午" if hour < 18 else "晚上"


def time_text(hour: int, minute: int, lang: str) -> str:
  """A clock time: "7:30 pm" / "19:30 Uhr" / "19 h 30" / "晚上7点30分"; full hours drop the minutes."""
  _check_lang(lang)
  if not (0 <= hour <= 23 and 0 <= minute <= 59):
    raise ValueError(f"time must have hour 0..23 and minute 0..59, got {hour}:{minute}")
  if lang == "en":
    clock = hour % 12 or 12
    return (f"{clock}:{minute:02d}" if minute else f"{clock}") + (" am" if hour < 12 else " pm")
  if lang == "de":
    return f"{hour}:{minute:02d} Uhr" if minute else f"{hour} Uhr"
  if lang == "fr":
    return f"{hour} h {minute:02d}" if minute else f"{hour} h"
  clock = hour if hour <= 12 else hour - 12
  return f"{_zh_period(hour)}{clock}点" + (f"{minute:02d}分" if minute else "")


# unit -> (en singular, en plural, de gender, de singular, de plural, fr gender, fr singular,
# fr plural, zh unit incl. measure word)
UNITS = {
    "km": ("kilometre", "kilometres", "m", "Kilometer", "Kilometer", "m", "kilomètre",
           "kilomètres", "公里"),
    "kg": ("kilogram", "kilograms", "n", "Kilogramm", "Kilogramm", "m", "kilogramme",
           "kilogrammes", "公斤"),
    "l": ("litre", "litres", "m", "Liter", "Liter", "m", "litre", "litres", "升"),
    "min": ("minute", "minutes", "f", "Minute", "Minuten", "f", "minute", "minutes", "分钟"),
    "h": ("hour", "hours", "f", "Stunde", "Stunden", "f", "heure", "heures", "个小时"),
    "day": ("day", "days", "m", "Tag", "Tage", "m", "jour", "jours", "天"),
}
_DE_INDEF = {"nom": {"m": "ein", "f": "eine", "n": "ein"},
             "acc": {"m": "einen", "f": "eine", "n": "ein"}}


def quantity_text(n: int, unit: str, lang: str, words: bool = True) -> str:
  """n units with plural agreement, the number in words or digits ("einundzwanzig Stunden")."""
  _check_lang(lang)
  if unit not in UNITS:
    raise ValueError(f"unknown unit {unit!r}; expected one of: {', '.join(UNITS)}")
  if not 1 <= n <= 999 or (n > 100 and n % 100 == 1):
    # German usage for "hundert(und)ein Kilometer" is unsettled, so such amounts are left out.
    raise ValueError(f"quantity must be in 1..999 and not end in 01 above 100, got {n!r}")
  en_sg, en_pl, de_gender, de_sg, de_pl, fr_gender, fr_sg, fr_pl, zh_unit = UNITS[unit]
  if lang == "zh":
    return (str(n) if not words else "两" if n == 2 else number_words(n, "zh")) + zh_unit
  if not words:
    number = format_digits(n, lang)
  elif lang == "de" and n == 1:
    number = _DE_INDEF["nom"][de_gender]
  elif lang == "fr" and fr_gender == "f":
    number = french_feminine(number_words(n, "fr"))
  else:
    number = number_words(n, lang)
  noun = {"en": (en_sg, en_pl), "de": (de_sg, de_pl), "fr": (fr_sg, fr_pl)}[lang][n != 1]
  return f"{number} {noun}"


# ---------------------------------------------------------------------------------------------
# Templated sentences over a small lexicon.

# The first _ANIMATE entries are animals: only they act as sentence subjects.
_ANIMATE = 11
# en singular|en plural|de gender|de singular|de plural|fr gender|fr singular|fr plural|zh|measure
_NOUNS = [line.split("|") for line in """\
cat|cats|f|Katze|Katzen|m|chat|chats|猫|只
dog|dogs|m|Hund|Hunde|m|chien|chiens|狗|只
horse|horses|n|Pferd|Pferde|m|cheval|chevaux|马|匹
bird|birds|m|Vogel|Vögel|m|oiseau|oiseaux|鸟|只
cow|cows|f|Kuh|Kühe|f|vache|vaches|牛|头
mouse|mice|f|Maus|Mäuse|f|souris|souris|老鼠|只
fish|fish|m|Fisch|Fische|m|poisson|poissons|鱼|条
rabbit|rabbits|n|Kaninchen|Kaninchen|m|lapin|lapins|兔子|只
sheep|sheep|n|Schaf|Schafe|m|mouton|moutons|羊|只
duck|ducks|f|Ente|Enten|m|canard|canards|鸭子|只
pig|pigs|n|Schwein|Schweine|m|cochon|cochons|猪|头
car|cars|n|Auto|Autos|f|voiture|voitures|车|辆
bicycle|bicycles|n|Fahrrad|Fahrräder|m|vélo|vélos|自行车|辆
boat|boats|n|Boot|Boote|m|bateau|bateaux|船|艘
book|books|n|Buch|Bücher|m|livre|livres|书|本
house|houses|n|Haus|Häuser|f|maison|maisons|房子|座
ball|balls|m|Ball|Bälle|m|ballon|ballons|球|个
apple|apples|m|Apfel|Äpfel|f|pomme|pommes|苹果|个
chair|chairs|m|Stuhl|Stühle|f|chaise|chaises|椅子|把
table|tables|m|Tisch|Tische|f|table|tables|桌子|张
flower|flowers|f|Blume|Blumen|f|fleur|fleurs|花|朵
cup|cups|f|Tasse|Tassen|f|tasse|tasses|杯子|个
key|keys|m|Schlüssel|Schlüssel|f|clé|clés|钥匙|把
letter|letters|m|Brief|Briefe|f|lettre|lettres|信|封
bag|bags|f|Tasche|Taschen|m|sac|sacs|包|个
tree|trees|m|Baum|Bäume|m|arbre|arbres|树|棵
hat|hats|m|Hut|Hüte|m|chapeau|chapeaux|帽子|顶
pencil|pencils|m|Bleistift|Bleistifte|m|crayon|crayons|铅笔|支
egg|eggs|n|Ei|Eier|m|œuf|œufs|鸡蛋|个
bottle|bottles|f|Flasche|Flaschen|f|bouteille|bouteilles|瓶子|个
lamp|lamps|f|Lampe|Lampen|f|lampe|lampes|灯|盏""".splitlines()]

# en|de stem|fr m sg|fr f sg|fr m pl|fr f pl|before the noun in French|zh attributive|zh predicate
_ADJECTIVES = [line.split("|") for line in """\
red|rot|rouge|rouge|rouges|rouges|0|红色的|是红色的
black|schwarz|noir|noire|noirs|noires|0|黑色的|是黑色的
white|weiß|blanc|blanche|blancs|blanches|0|白色的|是白色的
green|grün|vert|verte|verts|vertes|0|绿色的|是绿色的
blue|blau|bleu|bleue|bleus|bleues|0|蓝色的|是蓝色的
yellow|gelb|jaune|jaune|jaunes|jaunes|0|黄色的|是黄色的
grey|grau|gris|grise|gris|grises|0|灰色的|是灰色的
small|klein|petit|petite|petits|petites|1|小|很小
big|groß|grand|grande|grands|grandes|1|大|很大""".splitlines()]

# en 3rd person|en 1st|de 3rd|de 1st|fr 3rd|fr 1st|zh
_VERBS = [line.split("|") for line in """\
sees|see|sieht|sehe|voit|vois|看见
has|have|hat|habe|a|ai|有
likes|like|mag|mag|aime|aime|喜欢
finds|find|findet|finde|trouve|trouve|找到
draws|draw|zeichnet|zeichne|dessine|dessine|画
buys|buy|kauft|kaufe|achète|achète|买""".splitlines()]

_PLACES = [line.split("|") for line in """\
in the garden|im Garten|dans le jardin|在花园里
in the park|im Park|dans le parc|在公园里
at the station|am Bahnhof|à la gare|在车站
in the kitchen|in der Küche|dans la cuisine|在厨房里
at school|in der Schule|à l'école|在学校
in the forest|im Wald|dans la forêt|在森林里
at the market|auf dem Markt|au marché|在市场上""".splitlines()]

_TIMES = [("today", "heute", "aujourd'hui", "今天"),
          ("every day", "jeden Tag", "tous les jours", "每天")]
_NAMES = [("Anna", "安娜"), ("Tom", "汤姆"), ("Maria", "玛丽亚"), ("Paul", "保罗"), ("Emma", "艾玛"),
          ("Lucas", "卢卡斯"), ("Sophie", "索菲"), ("David", "大卫")]
_DE_DEF = {"m": "der", "f": "die", "n": "das"}
_DE_MIXED_ACC = {"m": "en", "f": "e", "n": "es"}
_VOWELS = "aeiouéèêœ"


def _fr_article(article: str, phrase: str) -> str:
  return "l'" + phrase if phrase[0] in _VOWELS else f"{article} {phrase}"


def _fr_noun_phrase(noun: list[str], adj: list[str] | None, plural: bool) -> str:
  gender, word = noun[5], noun[7 if plural else 6]
  if adj is None:
    return word
  form = adj[2 + (gender == "f") + 2 * plural]
  return f"{form} {word}" if adj[6] == "1" else f"{word} {form}"


def _definite(noun: list[str], adj: list[str] | None) -> dict[str, str]:
  """Singular definite subject phrase ("the red cat") in every language."""
  en_adj = f"{adj[0]} " if adj else ""
  de_adj = f"{adj[1]}e " if adj else ""
  return {
      "en": f"the {en_adj}{noun[0]}",
      "de": f"{_DE_DEF[noun[2]]} {de_adj}{noun[3]}",
      "fr": _fr_article("le" if noun[5] == "m" else "la", _fr_noun_phrase(noun, adj, False)),
      "zh": (adj[7] if adj else "") + noun[8],
  }


def _counted(n: int, noun: list[str], adj: list[str] | None) -> dict[str, str]:
  """Accusative object phrase with a count ("two red cats"), n in 1..99."""
  en_words = " ".join(filter(None, [adj[0] if adj else "", noun[0 if n == 1 else 1]]))
  if n == 1:
    en = ("an " if en_words[0] in "aeiou" else "a ") + en_words
    de = _DE_INDEF["acc"][noun[2]] + (f" {adj[1]}{_DE_MIXED_ACC[noun[2]]}" if adj else "")
    de += f" {noun[3]}"
  else:
    en = f"{number_words(n, 'en')} {en_words}"
    de = number_words(n, "de") + (f" {adj[1]}e" if adj else "") + f" {noun[4]}"
  fr_number = number_words(n, "fr")
  if noun[5] == "f":
    fr_number = french_feminine(fr_number)
  zh_number = "两" if n == 2 else number_words(n, "zh")
  return {"en": en, "de": de, "fr": f"{fr_number} {_fr_noun_phrase(noun, adj, n > 1)}",
          "zh": zh_number + noun[9] + (adj[7] if adj else "") + noun[8]}


def _capitalize(text: str) -> str:
  return text[0].upper() + text[1:]


def sentence(rng: random.Random) -> dict[str, str]:
  """One random templated sentence, as {language: text}, each an exact translation of the others."""
  noun = rng.choice(_NOUNS)
  adj = rng.choice(_ADJECTIVES) if rng.random() < 0.6 else None
  kind = rng.choices(("svo", "where", "is"), weights=(6, 1, 1))[0]
  if kind == "where":
    subject = _definite(noun, adj)
    return {"en": f"Where is {subject['en']}?", "de": f"Wo ist {subject['de']}?",
            "fr": f"Où est {subject['fr']} ?", "zh": f"{subject['zh']}在哪里？"}
  if kind == "is":
    adj = adj or rng.choice(_ADJECTIVES)
    subject = _definite(noun, None)
    fr_adj = adj[2 + (noun[5] == "f")]
    return {"en": _capitalize(f"{subject['en']} is {adj[0]}."),
            "de": _capitalize(f"{subject['de']} ist {adj[1]}."),
            "fr": _capitalize(f"{subject['fr']} est {fr_adj}."), "zh": f"{subject['zh']}{adj[8]}。"}
  verb = rng.choice(_VERBS)
  who = rng.random()
  if who < 0.25:
    subject, first = {"en": "I", "de": "ich", "fr": "je", "zh": "我"}, True
  elif who < 0.5:
    name = rng.choice(_NAMES)
    subject, first = {"en": name[0], "de": name[0], "fr": name[0], "zh": name[1]}, False
  else:
    actor = rng.choice(_NOUNS[:_ANIMATE])
    actor_adj = rng.choice(_ADJECTIVES) if rng.random() < 0.5 else None
    subject, first = _definite(actor, actor_adj), False
  obj = _counted(rng.randint(1, 20), noun, adj)
  place = rng.choice(_PLACES) if rng.random() < 0.4 else ("", "", "", "")
  when = rng.choice(_TIMES) if rng.random() < 0.3 else ("", "", "", "")
  en_verb, de_verb, fr_verb = (verb[1], verb[3], verb[5]) if first else (verb[0], verb[2], verb[4])
  fr_subject = "j'" if first and fr_verb[0] in _VOWELS else subject["fr"] + " "
  tail_en = "".join(f" {x}" for x in (place[0], when[0]) if x)
  tail_fr = "".join(f" {x}" for x in (place[2], when[2]) if x)
  mid_de = "".join(f" {x}" for x in (when[1], place[1]) if x)  # German: time before place.
  return {
      "en": _capitalize(f"{subject['en']} {en_verb} {obj['en']}{tail_en}."),
      "de": _capitalize(f"{subject['de']} {de_verb}{mid_de} {obj['de']}."),
      "fr": _capitalize(f"{fr_subject}{fr_verb} {obj['fr']}{tail_fr}."),
      "zh": f"{subject['zh']}{when[3]}{place[3]}{verb[6]}{obj['zh']}。",
  }
