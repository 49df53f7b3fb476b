"""volume_drop judged by the segment's own spread and by who carries the fall (issue 24, point 3).

Known figures: a segment of 30 sellers, each a fixed pattern of invoices a day; the evaluator's loop
as in test_alert_frozen (firing values handed back the next day). A fake ``SellerVolumes`` reads the
same patterns, so the breadth check sees what the totals came from.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Callable, Mapping, Sequence

from alerts.lifecycle import Instance, advance, mark_notified
from alerts.observe import FROZEN_BASELINE_RULES, segment_observations
from alerts.rules import load_rules
from analytics.adoption import SegmentDay

RULES = load_rules()
DATA_START = dt.date(2024, 5, 6)
DROP = dt.date(2024, 7, 2)  # a Tuesday
SELLERS = 30
Invoices = Callable[[int, dt.date], int]


class PatternVolumes:
    """The in-memory seam: per-seller invoices from the test's pattern."""

    def __init__(self, invoices: Invoices) -> None:
        self.invoices = invoices

    def invoices_by_seller(
        self, sector: str, unit: str, days: Sequence[dt.date]
    ) -> Mapping[str, Mapping[dt.date, int]]:
        return {f"s{i}": {d: self.invoices(i, d) for d in days} for i in range(SELLERS)}


def figures(invoices: Invoices, until: dt.date) -> list[SegmentDay]:
    out = []
    for n in range((until - DATA_START).days + 1):
        day = DATA_START + dt.timedelta(days=n)
        total = sum(invoices(i, day) for i in range(SELLERS))
        out.append(SegmentDay(day, "4711", "380", SELLERS, SELLERS, SELLERS, SELLERS, 1.0, 1.0, total, 0, 0,
                              SELLERS, 0.0))  # fmt: skip
    return out


def fired_on(invoices: Invoices, until: dt.date, breadth: bool = True) -> list[dt.date]:
    """The days volume_drop fired (its firing events), evaluated day by day from three weeks before DROP."""
    rows = figures(invoices, until)
    instances: dict[str, Instance] = {}
    fired = []
    day = DROP - dt.timedelta(weeks=3)
    while day <= until:
        firing = {(i.rule, i.labels["sector"], i.labels["unit"]): i.values for i in instances.values()
                  if i.state == "firing" and i.rule in FROZEN_BASELINE_RULES}  # fmt: skip
        sellers = PatternVolumes(invoices) if breadth else None
        observations = [o for o in segment_observations(rows, day, RULES, DATA_START, firing, sellers)
                        if o.rule == "volume_drop"]  # fmt: skip
        events = advance(instances, observations, day, day.toordinal() * 86400.0, repeat_interval_s=10**9)
        mark_notified(instances, events)
        fired += [e.day for e in events if e.type == "firing"]
        day += dt.timedelta(days=1)
    return fired


def wobble(day: dt.date, size: float) -> float:
    """The whole segment's day, 1 ± up to ``size``: the same for a day in every run (seeded by the day)."""
    return 1 + size * random.Random(day.toordinal()).uniform(-1, 1)


def steady(i: int, day: dt.date) -> int:
    return round(20 * wobble(day, 0.05))


def lumpy(i: int, day: dt.date) -> int:
    return round(20 * wobble(day, 0.6))


def test_a_steady_segment_halved_fires_the_day_after_the_fall_starts_and_stays_firing():
    def halved(i: int, day: dt.date) -> int:
        return steady(i, day) // 2 if day >= DROP else steady(i, day)

    assert fired_on(halved, DROP + dt.timedelta(weeks=4)) == [DROP + dt.timedelta(days=1)]


def test_one_bad_day_is_no_volume_drop():
    def one_day(i: int, day: dt.date) -> int:
        return steady(i, day) // 4 if day == DROP else steady(i, day)

    assert fired_on(one_day, DROP + dt.timedelta(weeks=1)) == []


def test_a_fall_within_a_lumpy_segments_own_spread_is_no_alert_where_a_steady_one_fires():
    def down(pattern: Invoices) -> Invoices:  # 45% down for three days
        def invoices(i: int, day: dt.date) -> int:
            fall = DROP <= day < DROP + dt.timedelta(days=3)
            return round(pattern(i, day) * 0.55) if fall else pattern(i, day)

        return invoices

    assert fired_on(down(steady), DROP + dt.timedelta(weeks=1))
    assert fired_on(down(lumpy), DROP + dt.timedelta(weeks=1)) == []


def test_a_fall_carried_by_two_big_sellers_is_theirs_not_the_segments():
    def two_big(i: int, day: dt.date) -> int:  # two sellers carry two thirds of the volume, and they stop
        if i < 2:
            return 0 if day >= DROP else 560
        return steady(i, day)

    until = DROP + dt.timedelta(weeks=1)
    assert fired_on(two_big, until) == []
    assert fired_on(two_big, until, breadth=False) == [DROP + dt.timedelta(days=1)]  # the check is what stops it


def test_a_shock_the_whole_unit_had_is_no_volume_drop_of_one_sector():
    """Two stormy days halve every sector of the unit: taken out by the median of the unit's other sectors."""

    def storm(i: int, day: dt.date) -> int:
        return steady(i, day) // 2 if DROP <= day < DROP + dt.timedelta(days=2) else steady(i, day)

    until = DROP + dt.timedelta(weeks=1)
    segment = figures(storm, until)
    others = [dataclasses.replace(r, sector=s) for s in ("5610", "5630", "4719") for r in segment]
    fired = []
    for rows in (segment + others, segment):  # with the unit's other sectors, and without them
        days = [DROP + dt.timedelta(days=n) for n in range(3)]
        fired.append([
            d for d in days for o in segment_observations(rows, d, RULES, DATA_START, sellers=PatternVolumes(storm))
            if o.rule == "volume_drop" and o.labels == {"sector": "4711", "unit": "380"} and o.active
        ])  # fmt: skip
    assert fired == [[], [DROP + dt.timedelta(days=1)]]


def test_a_real_fall_of_another_sector_in_the_unit_does_not_hide_this_ones():
    """The restaurants of the unit stop while its supermarkets halve: the median of the others does not move."""

    def halved(i: int, day: dt.date) -> int:
        return steady(i, day) // 2 if day >= DROP else steady(i, day)

    def stopped(i: int, day: dt.date) -> int:
        return 0 if day >= DROP else steady(i, day)

    until = DROP + dt.timedelta(weeks=1)
    rows = figures(halved, until) + [dataclasses.replace(r, sector="5610") for r in figures(stopped, until)]
    rows += [dataclasses.replace(r, sector=s) for s in ("5630", "4719") for r in figures(steady, until)]
    day = DROP + dt.timedelta(days=1)
    [seen] = [o for o in segment_observations(rows, day, RULES, DATA_START, sellers=PatternVolumes(halved))
              if o.rule == "volume_drop" and o.labels == {"sector": "4711", "unit": "380"}]  # fmt: skip
    assert seen.active and seen.values["window_ratio"] < 0.6
