"""Code generation: a Python function from an English or Chinese description, with asserts."""

from __future__ import annotations

import math
import random
from typing import Callable

# A family returns (name, English, Chinese, code, reference, argument sampler).
_CodeSpec = tuple[str, str, str, str, Callable, Callable[[random.Random], tuple]]
_WORDS = ("apple", "banana", "level", "kayak", "robot", "python", "garden", "noon", "data",
          "radar", "river", "stats", "table", "moon", "bread", "civic")


def _an_int(rng: random.Random) -> tuple:
  return (rng.randint(-30, 30),)


def _two_ints(rng: random.Random) -> tuple:
  return (rng.randint(-30, 30), rng.randint(-30, 30))


def _small_int(rng: random.Random) -> tuple:
  return (rng.randint(0, 10),)


def _signed_int(rng: random.Random) -> tuple:
  return (rng.choice((rng.randint(-30, -1), 0, rng.randint(1, 30))),)


def _a_list(rng: random.Random) -> tuple:
  return ([rng.randint(-9, 30) for _ in range(rng.randint(3, 7))],)


def _digit_list(rng: random.Random) -> tuple:
  return ([rng.randint(0, 5) for _ in range(rng.randint(3, 8))],)


def _a_word(rng: random.Random) -> tuple:
  return (rng.choice(_WORDS),)


def _mixed_case_word(rng: random.Random) -> tuple:
  return ("".join(c.upper() if rng.random() < 0.4 else c for c in rng.choice(_WORDS)),)


def _word_list(rng: random.Random) -> tuple:
  return (rng.sample(_WORDS, rng.randint(2, 5)),)


def _lines(*lines: str) -> str:
  """Function source from its lines; body lines carry their own 4-space indents."""
  return "\n".join(lines)


def _code_arith(rng: random.Random) -> _CodeSpec:
  k = rng.randint(1, 50)
  op, en_op, zh, stem, ref = rng.choice((
      ("+", "plus", f"x 加 {k}", "add", lambda x: x + k),
      ("-", "minus", f"x 减 {k}", "subtract", lambda x: x - k),
      ("*", "times", f"x 乘以 {k}", "multiply_by", lambda x: x * k)))
  if rng.random() < 0.25:
    k = rng.randint(2, 4)
    op, en_op, zh, stem, ref = "**", "to the power of", f"x 的 {k} 次方", "power", lambda x: x**k
  name = f"{stem}_{k}"
  return (name, f"returns x {en_op} {k}", f"返回 {zh}",
          _lines(f"def {name}(x):", f"    return x {op} {k}"), ref, _an_int)


def _code_divisible(rng: random.Random) -> _CodeSpec:
  k = rng.randint(2, 12)
  name = f"is_divisible_by_{k}"
  return (name, f"returns True if x is divisible by {k} and False otherwise",
          f"如果 x 能被 {k} 整除就返回 True，否则返回 False",
          _lines(f"def {name}(x):", f"    return x % {k} == 0"), lambda x: x % k == 0, _an_int)


def _code_filter(rng: random.Random) -> _CodeSpec:
  k = rng.randint(0, 20)
  greater = rng.random() < 0.5
  word, en, zh, op = ("greater", "greater than", "大于", ">") if greater else (
      "less", "less than", "小于", "<")
  name = f"{word}_than_{k}"
  return (name, f"takes a list nums and returns the numbers in nums {en} {k}",
          f"接收列表 nums，返回 nums 中{zh} {k} 的数",
          _lines(f"def {name}(nums):", f"    return [n for n in nums if n {op} {k}]"),
          lambda nums: [n for n in nums if (n > k if greater else n < k)], _a_list)


def _code_parity(rng: random.Random) -> _CodeSpec:
  even = rng.random() < 0.5
  word, zh, rest = ("even", "偶数", 0) if even else ("odd", "奇数", 1)
  name = f"keep_{word}"
  return (name, f"returns the {word} numbers in the list nums", f"返回列表 nums 中的{zh}",
          _lines(f"def {name}(nums):", f"    return [n for n in nums if n % 2 == {rest}]"),
          lambda nums: [n for n in nums if n % 2 == rest], _a_list)


def _code_map(rng: random.Random) -> _CodeSpec:
  k = rng.randint(2, 20)
  choice = rng.randrange(3)
  if choice == 0:
    name = f"multiply_each_by_{k}"
    return (name, f"returns a list with each number in nums multiplied by {k}",
            f"返回一个列表，把 nums 中的每个数乘以 {k}",
            _lines(f"def {name}(nums):", f"    return [n * {k} for n in nums]"),
            lambda nums: [n * k for n in nums], _a_list)
  if choice == 1:
    name = f"add_{k}_to_each"
    return (name, f"returns a list with {k} added to each number in nums",
            f"返回一个列表，把 nums 中的每个数加上 {k}",
            _lines(f"def {name}(nums):", f"    return [n + {k} for n in nums]"),
            lambda nums: [n + k for n in nums], _a_list)
  return ("square_list", "returns the square of each number in the list nums",
          "返回列表 nums 中每个数的平方",
          _lines("def square_list(nums):", "    return [n * n for n in nums]"),
          lambda nums: [n * n for n in nums], _a_list)


def _code_aggregate(rng: random.Random) -> _CodeSpec:
  name, en, zh, fn = rng.choice((
      ("list_sum", "the sum of the numbers", "所有数的和", sum),
      ("list_max", "the largest number", "最大的数", max),
      ("list_min", "the smallest number", "最小的数", min),
      ("list_length", "the number of items", "元素的个数", len)))
  return (name, f"returns {en} in the list nums", f"返回列表 nums 中{zh}",
          _lines(f"def {name}(nums):", f"    return {fn.__name__}(nums)"), fn, _a_list)


def _code_count(rng: random.Random) -> _CodeSpec:
  if rng.random() < 0.5:
    k = rng.randint(0, 5)
    return (f"count_{k}", f"returns how many times {k} appears in the list nums",
            f"返回 {k} 在列表 nums 中出现的次数",
            _lines(f"def count_{k}(nums):", f"    return nums.count({k})"),
            lambda nums: nums.count(k), _digit_list)
  k = rng.randint(0, 15)
  return (f"count_above_{k}", f"returns how many numbers in the list nums are greater than {k}",
          f"返回列表 nums 中大于 {k} 的数的个数",
          _lines(f"def count_above_{k}(nums):", "    count = 0", "    for n in nums:",
                 f"        if n > {k}:", "            count += 1", "    return count"),
          lambda nums: sum(1 for n in nums if n > k), _a_list)


def _code_strings(rng: random.Random) -> _CodeSpec:
  choice = rng.randrange(6)
  if choice == 0:
    return ("reverse_string", "returns the string s reversed", "返回字符串 s 反转后的结果",
            _lines("def reverse_string(s):", "    return s[::-1]"), lambda s: s[::-1], _a_word)
  if choice == 1:
    return ("is_palindrome", "returns True if the string s reads the same backwards",
            "如果字符串 s 正读和反读都一样就返回 True",
            _lines("def is_palindrome(s):", "    return s == s[::-1]"), lambda s: s == s[::-1],
            _a_word)
  if choice == 2:
    k = rng.randint(2, 5)
    return (f"repeat_{k}", f"returns the string s repeated {k} times",
            f"返回把字符串 s 重复 {k} 次的结果",
            _lines(f"def repeat_{k}(s):", f"    return s * {k}"), lambda s: s * k, _a_word)
  if choice == 3:
    upper = rng.random() < 0.5
    case, zh = ("upper", "大写") if upper else ("lower", "小写")
    return (f"to_{case}", f"returns the string s in {case} case", f"返回字符串 s 的{zh}形式",
            _lines(f"def to_{case}(s):", f"    return s.{case}()"),
            lambda s: s.upper() if upper else s.lower(), _mixed_case_word)
  if choice == 4:
    return ("count_vowels", "returns the number of vowels in the string s",
            "返回字符串 s 中元音字母的个数",
            _lines("def count_vowels(s):", "    count = 0", "    for c in s:",
                   '        if c in "aeiou":', "            count += 1", "    return count"),
            lambda s: sum(c in "aeiou" for c in s), _a_word)
  letter = rng.choice("abenrt")
  return (f"count_letter_{letter}", f"returns how many times the letter '{letter}' appears in s",
          f"返回字母 '{letter}' 在字符串 s 中出现的次数",
          _lines(f"def count_letter_{letter}(s):", f'    return s.count("{letter}")'),
          lambda s: s.count(letter), _a_word)


def _code_fizzbuzz(rng: random.Random) -> _CodeSpec:
  a, b = sorted(rng.sample(range(2, 8), 2))
  name = f"fizzbuzz_{a}_{b}"
  code = _lines(f"def {name}(n):", f"    if n % {a} == 0 and n % {b} == 0:",
                '        return "FizzBuzz"', f"    if n % {a} == 0:", '        return "Fizz"',
                f"    if n % {b} == 0:", '        return "Buzz"', "    return str(n)")

  def ref(n):
    return ("Fizz" if n % a == 0 else "") + ("Buzz" if n % b == 0 else "") or str(n)

  return (name, f"returns 'FizzBuzz' if n is divisible by {a} and {b}, 'Fizz' if only by {a}, "
          f"'Buzz' if only by {b}, otherwise n as a string",
          f"如果 n 能同时被 {a} 和 {b} 整除返回 'FizzBuzz'，只能被 {a} 整除返回 'Fizz'，"
          f"只能被 {b} 整除返回 'Buzz'，否则返回 n 的字符串", code, ref,
          lambda r: (r.randint(1, 60),))


def _code_loop(rng: random.Random) -> _CodeSpec:
  choice = rng.randrange(3)
  if choice == 0:
    return ("factorial", "returns the factorial of n", "返回 n 的阶乘",
            _lines("def factorial(n):", "    result = 1", "    for i in range(2, n + 1):",
                   "        result *= i", "    return result"),
            math.factorial, _small_int)
  if choice == 1:
    return ("sum_to_n", "returns the sum of the numbers from 1 to n", "返回从 1 到 n 的所有整数的和",
            _lines("def sum_to_n(n):", "    total = 0", "    for i in range(1, n + 1):",
                   "        total += i", "    return total"),
            lambda n: n * (n + 1) // 2, _small_int)
  return ("sum_of_squares", "returns the sum of the squares of the numbers from 1 to n",
          "返回从 1 到 n 的所有整数的平方和",
          _lines("def sum_of_squares(n):", "    total = 0", "    for i in range(1, n + 1):",
                 "        total += i * i", "    return total"),
          lambda n: n * (n + 1) * (2 * n + 1) // 6, _small_int)


def _code_branch(rng: random.Random) -> _CodeSpec:
  choice = rng.randrange(4)
  if choice == 0:
    lo = rng.randint(-20, 20)
    hi = lo + rng.randint(5, 30)
    name = f"clamp_{lo}_{hi}".replace("-", "minus_")
    return (name, f"returns x limited to the range from {lo} to {hi}",
            f"把 x 限制在 {lo} 到 {hi} 之间并返回",
            _lines(f"def {name}(x):", f"    if x < {lo}:", f"        return {lo}",
                   f"    if x > {hi}:", f"        return {hi}", "    return x"),
            lambda x: min(max(x, lo), hi), _an_int)
  if choice == 1:
    larger = rng.random() < 0.5
    name, zh, op = ("larger", "较大", ">") if larger else ("smaller", "较小", "<")
    return (name, f"returns the {name} of a and b", f"返回 a 和 b 中{zh}的那个数",
            _lines(f"def {name}(a, b):", f"    if a {op} b:", "        return a", "    return b"),
            max if larger else min, _two_ints)
  if choice == 2:
    return ("abs_diff", "returns the absolute difference between a and b",
            "返回 a 和 b 之差的绝对值", _lines("def abs_diff(a, b):", "    return abs(a - b)"),
            lambda a, b: abs(a - b), _two_ints)
  return ("sign", "returns 1 if x is positive, -1 if x is negative and 0 otherwise",
          "x 为正数返回 1，为负数返回 -1，否则返回 0",
          _lines("def sign(x):", "    if x > 0:", "        return 1", "    if x < 0:",
                 "        return -1", "    return 0"),
          lambda x: (x > 0) - (x < 0), _signed_int)


def _code_lists(rng: random.Random) -> _CodeSpec:
  choice = rng.randrange(5)
  if choice == 0:
    return ("reverse_list", "returns the list items in reverse order", "返回把列表 items 倒序后的结果",
            _lines("def reverse_list(items):", "    return items[::-1]"),
            lambda items: items[::-1], _a_list)
  if choice == 1:
    first = rng.random() < 0.5
    word, zh, index = ("first", "第一个", 0) if first else ("last", "最后一个", -1)
    return (f"{word}_item", f"returns the {word} item of the list items", f"返回列表 items 的{zh}元素",
            _lines(f"def {word}_item(items):", f"    return items[{index}]"),
            lambda items: items[index], _a_list)
  if choice == 2:
    return ("average", "returns the average of the numbers in the list nums",
            "返回列表 nums 中所有数的平均值",
            _lines("def average(nums):", "    return sum(nums) / len(nums)"),
            lambda nums: sum(nums) / len(nums), _a_list)
  if choice == 3:
    sep, word = rng.choice(((" ", "space"), ("-", "dash"), ("_", "underscore"), (",", "comma")))
    return (f"join_with_{word}", f"returns the strings in the list words joined by '{sep}'",
            f"返回用 '{sep}' 连接列表 words 中所有字符串的结果",
            _lines(f"def join_with_{word}(words):", f'    return "{sep}".join(words)'),
            lambda words: sep.join(words), _word_list)
  k = rng.randint(2, 6)
  return (f"longer_than_{k}", f"returns the words in the list words with more than {k} letters",
          f"返回列表 words 中字母数多于 {k} 的单词",
          _lines(f"def longer_than_{k}(words):", f"    return [w for w in words if len(w) > {k}]"),
          lambda words: [w for w in words if len(w) > k], _word_list)


_CODE_FAMILIES = (_code_arith, _code_divisible, _code_filter, _code_parity, _code_map,
                  _code_aggregate, _code_count, _code_strings, _code_fizzbuzz, _code_loop,
                  _code_branch, _code_lists)


def code(rng: random.Random) -> tuple[str, str, str]:
  """(description, reference code, asserts) from a randomly chosen task family."""
  name, en, zh, code, ref, sample = rng.choice(_CODE_FAMILIES)(rng)
  description = f"写一个函数 {name}，{zh}" if rng.random() < 0.3 else f"a function {name} that {en}"
  calls: list[tuple] = []
  for _ in range(30):  # distinct calls where the argument space allows
    args = sample(rng)
    if args not in calls:
      calls.append(args)
    if len(calls) == 3:
      break
  while len(calls) < 3:
    calls.append(calls[-1])
  tests = "\n".join(f"assert {name}({', '.join(map(repr, args))}) == {ref(*args)!r}"
                    for args in calls)
  return description, code, tests
