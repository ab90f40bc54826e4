"""Means with Student-t confidence intervals, and Welch's interval for a difference; no scipy.

The t quantile inverts the t CDF, P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2), by bisection;
the regularized incomplete beta I_x(a, b) is Lentz's continued fraction (Numerical
Recipes' betacf) with math.lgamma. Accurate to ~1e-10 for any df > 0, fractional too
(Welch-Satterthwaite degrees of freedom are).
"""

import math

LEVEL = 0.95


def _betacf(a: float, b: float, x: float) -> float:
  """The continued fraction of I_x(a, b) (modified Lentz), for x < (a + 1) / (a + b + 2)."""
  tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 500):
    for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                      -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
      d = 1.0 + numerator * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + numerator / c
      c = c if abs(c) > tiny else tiny
      h *= d * c
    if abs(d * c - 1.0) < 1e-15:
      break
  return h


def incomplete_beta(a: float, b: float, x: float) -> float:
  """The regularized incomplete beta function I_x(a, b) for a, b > 0, x in [0, 1]."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
               + b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _betacf(a, b, x) / a
  return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
  """P(T <= t) for Student's t with df degrees of freedom."""
  tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
  return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
  """The t with P(T <= t) = p (e.g. p=0.975, df=1 -> 12.706)."""
  if not 0.0 < p < 1.0 or not df > 0:
    raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
  if p < 0.5:
    return -t_quantile(1.0 - p, df)
  low, high = 0.0, 1.0
  while t_cdf(high, df) < p:
    low, high = high, high * 2.0
  for _ in range(200):
    mid = 0.5 * (low + high)
    if t_cdf(mid, df) < p:
      low = mid
    else:
      high = mid
    if high - low < 1e-12 * max(1.0, high):
      break
  return 0.5 * (low + high)


def _mean_var(values) -> tuple:
  n = len(values)
  mean = sum(values) / n
  var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else float("nan")
  return mean, var, n


def mean_ci(values, level: float = LEVEL) -> tuple:
  """(mean, half-width of its `level` Student-t interval, n); n=1 or none: half-width nan."""
  values = [float(v) for v in values if not math.isnan(float(v))]
  if not values:
    return float("nan"), float("nan"), 0
  mean, var, n = _mean_var(values)
  if n < 2:
    return mean, float("nan"), n
  return mean, t_quantile(0.5 + level / 2.0, n - 1) * math.sqrt(var / n), n


def welch_diff(a, b, level: float = LEVEL) -> tuple:
  """(mean(a) - mean(b), half-width of its `level` interval, df): Welch's unpaired t.

  df is Welch-Satterthwaite's; fewer than 2 values on a side: half-width nan. Both sides
  without spread: the difference is exact (half-width 0, df inf).
  """
  a = [float(v) for v in a if not math.isnan(float(v))]
  b = [float(v) for v in b if not math.isnan(float(v))]
  if not a or not b:
    return float("nan"), float("nan"), float("nan")
  (mean_a, var_a, n_a), (mean_b, var_b, n_b) = _mean_var(a), _mean_var(b)
  diff = mean_a - mean_b
  if n_a < 2 or n_b < 2:
    return diff, float("nan"), float("nan")
  sa, sb = var_a / n_a, var_b / n_b
  if sa + sb == 0.0:
    return diff, 0.0, float("inf")
  df = (sa + sb) ** 2 / (sa ** 2 / (n_a - 1) + sb ** 2 / (n_b - 1))
  return diff, t_quantile(0.5 + level / 2.0, df) * math.sqrt(sa + sb), df


def significant(diff: float, half: float) -> bool | None:
  """Whether diff ± half excludes 0 (None when the interval is unknown)."""
  if math.isnan(diff) or math.isnan(half):
    return None
  return abs(diff) > half
