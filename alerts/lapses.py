"""Lapsed businesses for adoption_slide, told by each seller's own habits rather than by a fixed week.

A business that stops is lapsed, by the segment figures alone, only once it has issued nothing for
seven days: a slide shows a week after its first step at the earliest, and part-time and lumpy
sellers with a quiet week count as lapsed all along. Judged by its own history (alerts.dormant), a
seller that issued every day is lapsed after three silent open days, and a lumpy one only after a
silence longer than its own; holidays and closed weekdays are never silence.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping

from alerts.dormant import SellerActivity, own_history, silent_open_days
from alerts.lifecycle import PROVINCE
from alerts.rules import Rules

ACTIVE_DAYS = 28  # a business counts in its segment when it issued in the 28 days up to the day

# (lapsed, active) businesses per (sector, unit), roll-ups ('*') included
LapseCounts = Mapping[tuple[str, str], tuple[int, int]]


def is_lapsed(
    days: frozenset[dt.date], day: dt.date, rules: Rules, data_start: dt.date, daily: Mapping[dt.date, int]
) -> bool:
    """Whether a seller with these issuing days (none after ``day``) is silent on ``day`` beyond its habits."""
    rule = rules.adoption_slide
    history = own_history(days, rules.dormant_issuer, rules, data_start, daily)
    if history is None:
        return False
    silent = silent_open_days(max(days), day, history, rules, data_start)
    return history.unusual(silent, rule.lapse_silent_days, rule.lapse_chance)


def lapse_counts(sellers: Iterable[SellerActivity], day: dt.date, rules: Rules, data_start: dt.date) -> LapseCounts:
    """(lapsed, active) per segment on ``day``, from the sellers' days up to it (none after it is looked at)."""
    since = day - dt.timedelta(days=ACTIVE_DAYS - 1)
    recent = [day - dt.timedelta(days=k) for k in range(rules.adoption_slide.lapse_silent_days)]
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for seller in sellers:
        if seller.status_today != "ACTIVE":
            continue
        if any(d in seller.days for d in recent):  # most sellers: issued lately, active and not lapsed
            lapsed = False
        else:
            upto = frozenset(d for d in seller.days if d <= day)
            if not upto or max(upto) < since:
                continue
            lapsed = is_lapsed(upto, day, rules, data_start, seller.daily)
        for key in ((seller.sector, seller.unit), (seller.sector, PROVINCE), (PROVINCE, seller.unit),
                    (PROVINCE, PROVINCE)):  # fmt: skip
            counts[key][0] += lapsed
            counts[key][1] += 1
    return {key: (lapsed, active) for key, (lapsed, active) in counts.items()}
