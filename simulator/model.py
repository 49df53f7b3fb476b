"""The analytic side of the model: counts at a scale, adoption dates, day factors, expected volume.

The generator draws from these; the calibration tests evaluate them directly, so checking the
342.78 M invoices of H1 2024 does not mean generating them.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from analytics.public_holidays import lunar_new_year
from simulator.reference import Reference, Sector

EPOCH = dt.date(1970, 1, 1)


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01: the integer form of a local date used in the arrays."""
    return (day - EPOCH).days


def from_day_number(number: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(number))


def scaled(count: int, scale: float) -> int:
    """A count at a scale, rounded half up (the same rule everywhere, so totals are predictable)."""
    return math.floor(count * scale + 0.5)


@dataclass(frozen=True)
class SectorCounts:
    """A sector's businesses at a scale: eligible (obliged), not obliged, adopters at the three anchors."""

    eligible: int
    not_obliged: int
    jan: int
    march: int
    june: int


def sector_counts(sector: Sector, scale: float) -> SectorCounts:
    eligible = scaled(sector.eligible, scale)
    jan = min(scaled(sector.adopters_jan, scale), eligible)
    march = min(max(scaled(sector.adopters_march, scale), jan), eligible)
    june = min(max(scaled(sector.adopters_june, scale), march), eligible)
    return SectorCounts(eligible, scaled(sector.not_obliged, scale), jan, march, june)


def adoption_days(ref: Reference, counts: SectorCounts) -> np.ndarray:
    """Adoption day numbers by rank (ascending): evenly spread within 2023, Q1 and Q2 2024.

    Rank k < jan adopted during 2023 (issuing on 2024-01-01); jan <= k < march between Jan 1 and
    Mar 31; march <= k < june between Apr 1 and Jun 30. So the count of adopters on any day is
    piecewise linear and exactly ``march`` on Mar 31 and ``june`` on Jun 30.
    """
    early0, start = day_number(ref.early_from), day_number(ref.period_start)
    march, june = day_number(ref.march_anchor), day_number(ref.june_anchor)
    spans = ((0, counts.jan, early0, start - early0), (counts.jan, counts.march, start, march - start + 1),
             (counts.march, counts.june, march + 1, june - march))  # fmt: skip
    days = np.empty(counts.june, dtype=np.int64)
    for lo, hi, first, length in spans:
        n = hi - lo
        if n > 0:
            days[lo:hi] = first + (np.arange(n, dtype=np.int64) * length) // n
    return days


def active_adopters(ref: Reference, sector: Sector, day: dt.date, scale: float = 1.0) -> int:
    """Adopters of a sector whose adoption day is on or before ``day`` (no scenario applied)."""
    days = adoption_days(ref, sector_counts(sector, scale))
    return int(np.searchsorted(days, day_number(day), side="right"))


def week_factors(ref: Reference, profile: str) -> np.ndarray:
    """Monday..Sunday factors with mean 1."""
    weights = np.asarray(ref.week_profiles[profile], dtype=np.float64)
    return weights * (7.0 / weights.sum())


def hour_cdf(ref: Reference, profile: str) -> np.ndarray:
    weights = np.asarray(ref.hour_profiles[profile], dtype=np.float64)
    return np.cumsum(weights) / weights.sum()


def day_factor(ref: Reference, sector: Sector, day: dt.date) -> float:
    """Expected volume on ``day`` relative to the sector's mean ordinary day: weekday × Tết × holidays.

    Tết and the holidays fall where the one calendar (analytics.public_holidays) puts them in ``day``'s
    year; Tết is always late January to mid-February, so its week before and its dip stay in that year.
    """
    factor = float(week_factors(ref, sector.week)[day.weekday()])
    offset = (day - lunar_new_year(day.year)).days
    if -len(ref.tet_pre) <= offset < 0:
        factor *= 1.0 + (sector.pre_tet_peak - 1.0) * ref.tet_pre[offset + len(ref.tet_pre)]
    elif 0 <= offset < len(ref.tet_dip):
        factor *= 1.0 - (1.0 - ref.tet_dip[offset]) * sector.tet_dip_scale
    for holiday in ref.holidays:
        days = holiday.days(day.year)
        if days is not None and days[0] <= day <= days[1]:
            factor *= holiday.factor(sector.week)
    return factor


def day_factors(ref: Reference, first: dt.date, days: int) -> np.ndarray:
    """(sectors, days) array of :func:`day_factor`."""
    out = np.empty((len(ref.sectors), days), dtype=np.float64)
    for s, sector in enumerate(ref.sectors):
        for d in range(days):
            out[s, d] = day_factor(ref, sector, first + dt.timedelta(days=d))
    return out


def expected_invoices_per_day(ref: Reference, first: dt.date, days: int, scale: float = 1.0) -> np.ndarray:
    """Expected valid invoices issued on each day (before malformed records), no scenario applied.

    Σ over sectors of active adopters × invoices/day × day factor: the per-issuer activity
    multipliers have mean 1 within a sector, so they drop out of the expectation.
    """
    factors = day_factors(ref, first, days)
    numbers = day_number(first) + np.arange(days)
    total = np.zeros(days, dtype=np.float64)
    for s, sector in enumerate(ref.sectors):
        adopted = adoption_days(ref, sector_counts(sector, scale))
        active = np.searchsorted(adopted, numbers, side="right")
        total += active * sector.invoices_per_day * factors[s]
    return total


def adopters_by(ref: Reference, day: dt.date, scale: float = 1.0) -> dict[str, int]:
    """Adopters per sector on ``day`` (the registry-level figure the articles report)."""
    return {s.vsic_code: active_adopters(ref, s, day, scale) for s in ref.sectors}


def allocate(total: int, weights: np.ndarray, cap: np.ndarray | None = None) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder), each <= cap.

    Deterministic: ties go to the lower index. Used for businesses per unit and adopters per unit.
    """
    weights = np.asarray(weights, dtype=np.float64)
    out = np.zeros(len(weights), dtype=np.int64)
    if total <= 0 or weights.sum() <= 0:
        return out
    cap = np.full(len(weights), np.iinfo(np.int64).max) if cap is None else np.asarray(cap, dtype=np.int64)
    if total > cap.sum():
        raise ValueError(f"cannot place {total} within caps summing to {cap.sum()}")
    free = np.ones(len(weights), dtype=bool)
    remaining = total
    while remaining > 0:
        w = np.where(free, weights, 0.0)
        if w.sum() <= 0:
            w = np.where(free, 1.0, 0.0)
        share = remaining * w / w.sum()
        base = np.floor(share).astype(np.int64)
        short = remaining - int(base.sum())
        order = np.lexsort((np.arange(len(w)), -(share - base)))
        base[order[:short]] += 1
        trial = out + base
        over = trial > cap
        if not over.any():
            return trial
        out = np.where(over, cap, out + np.where(over, 0, base))
        # keep what fits, give the rest out again among the units not at their cap
        remaining = total - int(out.sum())
        free &= out < cap
        out = np.minimum(out, cap)
    return out
