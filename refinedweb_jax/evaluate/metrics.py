"""Metrics of decoded outputs, T5/SeqIO style: fn(targets, predictions, **kw) -> {name: score}.

Scores are on a 0-100 scale (as sacrebleu reports BLEU). Token accuracy and perplexity are computed
in the jitted eval step, not here.
"""

import ast
import collections
import concurrent.futures
import functools
import logging
import re
import string
import unicodedata

import sacrebleu
from nltk.stem import porter
from rouge_score import rouge_scorer
from rouge_score import tokenize as rouge_tokenize
from rouge_score import tokenizers

from refinedweb_jax.evaluate import sandbox

# Ideographs (CJK unified, extension A, compatibility) and Japanese kana: scripts written without
# spaces between words, so each character is a token.
CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff])")
# Official SQuAD punctuation plus CJK and full-width punctuation (，。？「」), which never occurs
# in English answers, so English scores are exactly the official ones.
PUNCTUATION = frozenset(string.punctuation) | frozenset(
    ch for ch in map(chr, [*range(0x3000, 0x3040), *range(0xFF00, 0xFFF0)])
    if unicodedata.category(ch).startswith("P"))
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

log = logging.getLogger(__name__)


def bleu(targets: list[str], predictions: list[str], language: str = "en") -> dict[str, float]:
  """sacrebleu corpus BLEU; Chinese ("zh") targets use sacrebleu's character-level zh tokenizer."""
  _check_lengths(targets, predictions)
  tokenize = "zh" if language == "zh" else "13a"
  return {"bleu": sacrebleu.corpus_bleu(predictions, [targets], tokenize=tokenize).score}


def chrf(targets: list[str], predictions: list[str]) -> dict[str, float]:
  """sacrebleu corpus chrF."""
  _check_lengths(targets, predictions)
  return {"chrf": sacrebleu.corpus_chrf(predictions, [targets]).score}


def rouge(targets: list[str], predictions: list[str]) -> dict[str, float]:
  """ROUGE-1/2/L F-measure (Porter stemming), averaged over examples."""
  _check_lengths(targets, predictions)
  scorer = _rouge_scorer()
  totals = collections.Counter()
  for target, prediction in zip(targets, predictions):
    for name, score in scorer.score(target, prediction).items():
      totals[name] += score.fmeasure
  return {name: 100.0 * totals[name] / len(targets) for name in ROUGE_TYPES}


class CJKTokenizer(tokenizers.Tokenizer):
  """rouge-score's default tokenizer, but each CJK character is kept as a token.

  The default replaces everything outside [a-z0-9] with spaces, so Chinese text has no tokens and
  scores 0. Text without CJK characters is tokenized exactly as the default does.
  """

  def __init__(self):
    self._stemmer = porter.PorterStemmer()

  def tokenize(self, text):
    tokens = []
    for piece in CJK.split(text):
      tokens += [piece] if CJK.fullmatch(piece) else rouge_tokenize.tokenize(piece, self._stemmer)
    return tokens


@functools.lru_cache(maxsize=None)
def _rouge_scorer() -> rouge_scorer.RougeScorer:
  return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True, tokenizer=CJKTokenizer())


def squad(targets: list, predictions: list[str]) -> dict[str, float]:
  """SQuAD v1.1 exact match and F1, best over each example's answers (a string or a list)."""
  _check_lengths(targets, predictions)
  exact, f1 = 0.0, 0.0
  for i, (answers, prediction) in enumerate(zip(targets, predictions)):
    answers = [answers] if isinstance(answers, str) else list(answers)
    if not answers:
      raise ValueError(f"example {i} has no acceptable answers; "
                       "expected a string or a non-empty list")
    exact += max(float(_answer_tokens(prediction) == _answer_tokens(a)) for a in answers)
    f1 += max(_f1(prediction, a) for a in answers)
  return {"exact_match": 100.0 * exact / len(targets), "f1": 100.0 * f1 / len(targets)}


def normalize_answer(text: str) -> str:
  """SQuAD v1.1: lowercase, drop punctuation, drop articles a/an/the, collapse whitespace."""
  text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def _answer_tokens(text: str) -> list[str]:
  """Normalized whitespace tokens, each CJK character a token (as MLQA scores Chinese)."""
  return [token for piece in CJK.split(normalize_answer(text)) for token in piece.split()]


def _f1(prediction: str, answer: str) -> float:
  """Token-overlap F1 of the official SQuAD v1.1 script (0 when nothing overlaps)."""
  predicted, expected = _answer_tokens(prediction), _answer_tokens(answer)
  same = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(predicted), same / len(expected)
  return 2 * precision * recall / (precision + recall)


def exact_match(targets: list[str], predictions: list[str]) -> dict[str, float]:
  """The share of predictions equal to their target, surrounding whitespace aside."""
  _check_lengths(targets, predictions)
  same = [p.strip() == t.strip() for p, t in zip(predictions, targets)]
  return {"exact_match": 100.0 * sum(same) / len(same)}


def pass_at_1(targets: list[str], predictions: list[str], tests: list[str], timeout_s: float = 5.0,
              memory_mb: int = 512, setups: list[str] | None = None,
              entry_points: list[str | None] | None = None) -> dict[str, float]:
  """Percent of predictions (Python source) that pass their tests, each run in the sandbox.

  Each prediction runs in a sandboxed process and its tests (assert lines, or a check(...)
  call) in another, which calls the prediction's functions (sandbox.run_tests), never in this
  process; the verdict is a plain interpreter's (arguments the prediction mutates, objects it
  aliases or returns, generators are seen as in one interpreter); tests with no assert
  statement score 0 (with one warning). setups: code each example's tests run first, its definitions used over the
  prediction's (MBPP's test_setup_code; HumanEval's prompt, so that helpers like its poly() stay
  the task's); entry_points: the function passed to tests that define check(candidate) without
  calling it (HumanEval).
  targets (the reference solutions) are not run: they name the functions a prediction may
  define under a builtin's name (MBPP's `sum`).
  """
  _check_lengths(targets, predictions)
  for name, given in (("tests", tests), ("setups", setups), ("entry_points", entry_points)):
    if given is not None and len(given) != len(predictions):
      raise ValueError(
          f"got {len(given)} {name} for {len(predictions)} predictions; expected one each")
  setups = setups or [""] * len(predictions)
  entry_points = entry_points or [None] * len(predictions)
  # Tests that assert nothing would pass any program, the empty one included.
  silent = {i for i, test in enumerate(tests) if not _asserts(test)}
  if silent:
    log.warning("pass@1: %d of %d examples have tests with no assert statement (example %d "
                "first): they score 0", len(silent), len(tests), min(silent))

  def run(i):
    if i in silent:
      return False, "error"
    return sandbox.run_tests(predictions[i], tests[i], setup=setups[i] or "",
                             entry_point=entry_points[i], names=_defined_functions(targets[i]),
                             timeout_s=timeout_s, memory_mb=memory_mb)

  # Two workers: a run is mostly interpreter start-up and waiting, and training needs the cores.
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    results = list(pool.map(run, range(len(predictions))))
  return {"pass@1": 100.0 * sum(passed for passed, _ in results) / len(results)}


def _asserts(tests) -> bool:
  """Whether tests (Python source) hold an assert statement."""
  try:
    return any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(tests)))
  except (SyntaxError, TypeError, ValueError):
    return False


def _defined_functions(source: str) -> tuple[str, ...]:
  """The functions and classes a reference solution defines at top level (none if unparsable)."""
  try:
    tree = ast.parse(source)
  except (SyntaxError, TypeError, ValueError):
    return ()
  return tuple(node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))


def _check_lengths(targets, predictions) -> None:
  if len(targets) != len(predictions):
    raise ValueError(
        f"got {len(targets)} targets and {len(predictions)} predictions; expected equal")
  if not targets:
    raise ValueError("got 0 examples; expected at least one")
