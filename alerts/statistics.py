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
