"""The small statistics the rules need: a Wilson interval and a Poisson lower tail."""

from __future__ import annotations

import math
from statistics import NormalDist


def wilson_upper(successes: int, n: int, confidence: float) -> float:
    """One-sided upper bound of a proportion (Wilson score interval); 1.0 for n = 0.

    Used instead of the bare ratio so that a segment of five businesses, one of which skipped a
    week, does not look like a 20-point fall.
    """
    if n <= 0:
        return 1.0
    z = NormalDist().inv_cdf(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + margin) / denominator)


def poisson_cdf(k: int, mean: float) -> float:
    """P(X <= k) for X ~ Poisson(mean): exact below a mean of 500, normal approximation above."""
    if mean <= 0:
        return 1.0
    if k < 0:
        return 0.0
    if mean > 500:
        return NormalDist(mean, math.sqrt(mean)).cdf(k + 0.5)
    log_term = -mean
    total = math.exp(log_term)
    for i in range(1, k + 1):
        log_term += math.log(mean) - math.log(i)
        total += math.exp(log_term)
    return min(1.0, total)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(x1: int, n1: int, x0: int, n0: int) -> float:
    """One-sided Fisher exact test: the chance of ``x1`` or more of ``n1`` when both samples share one rate.

    ``x1`` of ``n1`` now against ``x0`` of ``n0`` before (both proportions of the same segment's
    businesses). Exact (hypergeometric tail, conditioned on the ``x0 + x1`` total) rather than a
    two-proportion z-test because the counts compared here are tiny: a segment usually loses no
    issuer in a week, and a normal approximation around a rate of 0 calls two businesses a
    landslide or, with a continuity correction, misses seven. 1.0 when nothing points up.
    """
    n, successes = n0 + n1, x0 + x1
    if n1 <= 0 or n0 < 0 or x1 <= 0 or successes > n:
        return 1.0
    base = _log_choose(n, n1)
    first, last = max(x1, n1 - (n - successes)), min(successes, n1)
    tail = sum(math.exp(_log_choose(successes, k) + _log_choose(n - successes, n1 - k) - base)
               for k in range(first, last + 1))  # fmt: skip
    return min(1.0, tail)
