"""dormant_issuer: a seller whose silence is rare *for that seller*, judged from its own days.

A real feed is lumpy: sellers have quiet days, a fixed closed weekday, part-time hours, holidays.
A rule that judges every seller by a Poisson model of its mean rate names hundreds of sellers
who never stopped. This one asks each seller's own history how often it missed a day it is
usually open, and how long its longest quiet spell was; a silence is named only when it is
longer than any the seller had and that unlikely at its own miss rate. Public holidays count
neither as history nor as silence, and neither do the weekdays the seller is usually closed.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from alerts.lifecycle import Observation
from alerts.rules import DormantIssuer, Rules

# a weekday is the seller's closed day when it issued on at most a fifth of that weekday's days, seen at
# least four times; a seller with more than two such weekdays is part-time, not closed on fixed days
CLOSED_WEEKDAY_SHARE = 0.2
CLOSED_WEEKDAY_SEEN = 4
MAX_CLOSED_WEEKDAYS = 2


@dataclass(frozen=True)
class SellerActivity:
    """One registered seller's recent issuing, for the dormant-issuer rule."""

    seller_id: str
    sector: str
    unit: str
    days: frozenset[dt.date]
    status_today: str
    usual_daily_invoices: float
    daily: Mapping[dt.date, int] = field(default_factory=dict)  # invoices by day; empty: days only


@dataclass(frozen=True)
class OwnHistory:
    """How one seller issued over its lookback, up to its last invoice."""

    open_weekdays: frozenset[int]  # Monday = 0; the others are its closed days
    open_days: int  # lookback days on its open weekdays (no holiday, no day before the data or the seller)
    missed: int  # of those, the days without an invoice
    longest_gap: int  # its longest run of missed open days
    zero_chance: float | None = None  # a day without an invoice by its own day-to-day spread (None: unknown)

    @property
    def miss_rate(self) -> float:
        """How likely it is to miss an open day.

        By the spread of its open days' invoices (a negative binomial with its own mean and variance:
        a filling station issuing two hundred a day does not miss a day by chance), never below the
        share of them it did miss. Without its counts, that share smoothed: a seller never seen
        missing is not certain never to.
        """
        if self.zero_chance is not None:
            return max(self.zero_chance, self.missed / self.open_days)
        return (self.missed + 1) / (self.open_days + 2)

    @property
    def issuing_share(self) -> float:
        return 1 - self.missed / self.open_days if self.open_days else 0.0

    def chance(self, silent_days: int) -> float:
        """How likely this seller is to be silent that many open days in a row by its own habits."""
        return self.miss_rate**silent_days

    def unusual(self, silent_days: int, at_least: int, max_chance: float) -> bool:
        """Whether a silence of that many open days is beyond its habits: at least ``at_least``, longer than any
        quiet spell it had, and less likely than ``max_chance`` (dormant_issuer and adoption_slide's lapses)."""
        return silent_days >= at_least and silent_days > self.longest_gap and self.chance(silent_days) < max_chance


def _counted(first: dt.date, last: dt.date, rules: Rules, data_start: dt.date) -> list[dt.date]:
    """The days from ``first`` to ``last`` (both included) that say something: no holiday, none before the data."""
    first = max(first, data_start)
    return [
        d for d in (first + dt.timedelta(days=i) for i in range((last - first).days + 1))
        if not rules.evaluation.is_holiday(d)
    ]  # fmt: skip


def zero_chance(counts: list[int]) -> float | None:
    """P(no invoice on a day) for a seller with these daily counts: negative binomial by their mean and
    variance (Poisson when they are not over-dispersed)."""
    if not counts:
        return None
    mean = sum(counts) / len(counts)
    if mean <= 0:
        return None
    variance = sum((c - mean) ** 2 for c in counts) / len(counts)
    if variance <= mean:
        return math.exp(-mean)
    shape = mean * mean / (variance - mean)
    return (shape / (shape + mean)) ** shape


def own_history(
    days: frozenset[dt.date], rule: DormantIssuer, rules: Rules, data_start: dt.date,
    daily: Mapping[dt.date, int] | None = None,
) -> OwnHistory | None:  # fmt: skip
    """The seller's habits over ``rule.lookback_days`` up to its last invoice; None when too short to know them.

    The lookback ends at the last invoice, so a long silence keeps the seller judged by the habits it
    had, and starts at its first invoice in the data, so a seller that started late is not read as
    one that missed its first weeks.
    """
    last = max(days)
    history = _counted(max(last - dt.timedelta(days=rule.lookback_days - 1), min(days)), last, rules, data_start)
    if len(history) < rule.min_history_days:
        return None
    seen: dict[int, int] = defaultdict(int)
    issued: dict[int, int] = defaultdict(int)
    for d in history:
        seen[d.weekday()] += 1
        issued[d.weekday()] += d in days
    closed = {w for w, n in seen.items() if n >= CLOSED_WEEKDAY_SEEN and issued[w] <= CLOSED_WEEKDAY_SHARE * n}
    open_weekdays = frozenset(w for w in seen if len(closed) > MAX_CLOSED_WEEKDAYS or w not in closed)
    missed = run = longest = 0
    open_days = [d for d in history if d.weekday() in open_weekdays]
    for d in open_days:
        run = 0 if d in days else run + 1
        missed += d not in days
        longest = max(longest, run)
    chance = zero_chance([daily.get(d, 0) for d in open_days]) if daily else None
    return OwnHistory(open_weekdays, len(open_days), missed, longest, chance)


def silent_open_days(
    last: dt.date, day: dt.date, history: OwnHistory, rules: Rules, data_start: dt.date
) -> int:  # fmt: skip
    """The seller's open days after its last invoice up to ``day``: holidays and its closed weekdays left out."""
    after = _counted(last + dt.timedelta(days=1), day, rules, data_start)
    return sum(d.weekday() in history.open_weekdays for d in after)


def dormant_observations(
    sellers: Iterable[SellerActivity], units: Iterable[str], day: dt.date, rules: Rules,
    data_start: dt.date = dt.date.min,
) -> list[Observation]:  # fmt: skip
    """One observation per unit: active when some seller there is silent for longer than its habits explain."""
    silent_by_unit: dict[str, list[dict[str, object]]] = defaultdict(list)
    base = rules.dormant_issuer
    for seller in sellers:
        rule = rules.for_sector("dormant_issuer", seller.sector)
        if not rule.enabled or seller.status_today != "ACTIVE" or not seller.days:
            continue
        last = max(seller.days)
        if (day - last).days < rule.silent_days:  # cheap first cut: most sellers issued yesterday
            continue
        history = own_history(seller.days, rule, rules, data_start, seller.daily)
        if history is None or history.issuing_share < rule.min_active_share:
            continue
        if seller.usual_daily_invoices * history.issuing_share < rule.min_daily_invoices:
            continue  # a seller issuing a couple of invoices a day says little by a quiet spell
        silent = silent_open_days(last, day, history, rules, data_start)
        if not history.unusual(silent, rule.silent_days, rule.max_chance):
            continue
        silent_by_unit[seller.unit].append(
            {
                "seller_id": seller.seller_id,
                "sector": seller.sector,
                "last_invoice_day": last.isoformat(),
                "silent_days": silent,
                "usual_daily_invoices": round(seller.usual_daily_invoices * history.issuing_share, 1),
                "longest_usual_gap": history.longest_gap,
                "chance": float(f"{history.chance(silent):.2g}"),
            }
        )
    observations = []
    for unit in sorted(set(units) | set(silent_by_unit)):
        silent_sellers = sorted(silent_by_unit.get(unit, []), key=lambda s: str(s["seller_id"]))
        values = {"sellers": silent_sellers, "count": len(silent_sellers)}
        observations.append(
            Observation(
                "dormant_issuer", {"unit": unit}, bool(silent_sellers), base.severity, base.for_, base.clear_for,
                values,
            )
        )  # fmt: skip
    return observations
