"""A drop that lasts keeps firing while it lasts (issue 24, point 4), on known figures (pure logic).

Once adoption_drop or volume_drop fires, the segment is judged against the baseline it fired against
(one per weekday), not against a same-weekday mean that takes the drop in within ``baseline_weeks``:
a segment that stays down stays alerted, and the alert resolves when the segment is back. The
segment: 90 eligible restaurants, 60 issuing 20 invoices every day but Sunday; the days run as the
evaluator runs them (the firing alerts' values handed back the next day).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from alerts.lifecycle import Instance, advance, mark_notified
from alerts.observe import FROZEN_BASELINE_RULES, segment_baselines, segment_observations
from alerts.rules import load_rules
from analytics.adoption import SegmentDay

RULES = load_rules()
DATA_START = dt.date(2024, 5, 6)  # after 30/4–1/5: eight weeks of plain history before START
START = dt.date(2024, 7, 1)  # a Monday: the drop's first day
WEEKS = 6  # how long it lasts
DAYS_AFTER = 14


def figures(invoices: Callable[[int, dt.date], int], eligible: int = 90) -> list[SegmentDay]:
    """Daily rows of the segment from what each business ``i`` issues on each day."""
    out = []
    for n in range((START - DATA_START).days + 7 * WEEKS + DAYS_AFTER):
        day = DATA_START + dt.timedelta(days=n)
        windows = [[day - dt.timedelta(days=j) for j in range(k) if day - dt.timedelta(days=j) >= DATA_START]
                   for k in (1, 7, 28)]  # fmt: skip
        active = [sum(any(invoices(i, d) for d in window) for i in range(eligible)) for window in windows]
        total = sum(invoices(i, day) for i in range(eligible))
        out.append(SegmentDay(day, "5610", "380", eligible, *active, active[1] / eligible, active[2] / eligible,
                              total, 0, 0, active[0], 0.0))  # fmt: skip
    return out


def during(day: dt.date) -> bool:
    return START <= day < START + dt.timedelta(weeks=WEEKS)


def stopped(i: int, day: dt.date) -> int:
    """27 of the 60 (45 %) stop for six weeks, then come back."""
    if i >= 60 or day.weekday() == 6:
        return 0
    return 0 if during(day) and i < 27 else 20


def halved(i: int, day: dt.date) -> int:
    """Every one of the 60 issues half as much for six weeks."""
    if i >= 60 or day.weekday() == 6:
        return 0
    return 10 if during(day) else 20


def run(rows: list[SegmentDay], rule: str, freeze: bool = True) -> dict[dt.date, str]:
    """The rule's state on each day from START, evaluated day by day as the evaluator does."""
    instances: dict[str, Instance] = {}
    states = {}
    for n in range(7 * WEEKS + DAYS_AFTER):
        day = START + dt.timedelta(days=n)
        firing = {
            (i.rule, i.labels["sector"], i.labels["unit"]): i.values
            for i in instances.values() if i.state == "firing" and i.rule in FROZEN_BASELINE_RULES
        }  # fmt: skip
        observed = segment_observations(rows, day, RULES, DATA_START, firing=firing if freeze else None)
        events = advance(instances, [o for o in observed if o.rule == rule], day, 1e9 + n * 86400.0,
                         repeat_interval_s=86400.0)  # fmt: skip
        mark_notified(instances, events)
        states[day] = next((i.state for i in instances.values() if i.rule == rule), "inactive")
    return states


def firing_span(states: dict[dt.date, str]) -> tuple[dt.date, dt.date]:
    """The first and the last day the alert was firing; asserts it fired once, without a gap."""
    days = sorted(d for d, s in states.items() if s == "firing")
    assert days, "never fired"
    assert (days[-1] - days[0]).days + 1 == len(days), f"a gap in the firing days: {days}"
    return days[0], days[-1]


def test_a_drop_of_issuers_lasting_six_weeks_fires_for_six_weeks_and_resolves_when_they_are_back():
    states = run(figures(stopped), "adoption_drop")
    first, last = firing_span(states)
    end = START + dt.timedelta(weeks=WEEKS)  # the first day back
    assert first <= START + dt.timedelta(days=2)
    assert last >= end - dt.timedelta(days=1), f"resolved on {last} while the drop lasted (it ends {end})"
    assert last < end + dt.timedelta(days=RULES.adoption_drop.clear_for + 1)
    assert states[end + dt.timedelta(days=DAYS_AFTER - 1)] == "resolved"


def test_without_the_frozen_baseline_the_same_drop_resolves_while_it_lasts():
    """The failure the frozen baseline is for: the same-weekday mean takes the drop in."""
    _, last = firing_span(run(figures(stopped), "adoption_drop", freeze=False))
    assert last < START + dt.timedelta(weeks=WEEKS - 1)


def test_a_volume_halving_for_six_weeks_fires_for_six_weeks_and_resolves_when_it_is_back():
    states = run(figures(halved), "volume_drop")
    first, last = firing_span(states)
    end = START + dt.timedelta(weeks=WEEKS)
    assert first <= START + dt.timedelta(days=2)
    assert last >= end - dt.timedelta(days=1), f"resolved on {last} while the fall lasted (it ends {end})"
    # it resolves when a whole week is back near its frozen baselines: within a week of the return
    assert last < end + dt.timedelta(days=7 + RULES.volume_drop.clear_for)
    _, unfrozen_last = firing_span(run(figures(halved), "volume_drop", freeze=False))
    assert unfrozen_last < START + dt.timedelta(weeks=WEEKS - 1)


def fired_drop(rows: list[SegmentDay]) -> Instance:
    """The segment's adoption_drop after the drop's first three days (it fires on the second)."""
    instances: dict[str, Instance] = {}
    for n in range(3):
        day = START + dt.timedelta(days=n)
        observed = [o for o in segment_observations(rows, day, RULES, DATA_START) if o.rule == "adoption_drop"]
        mark_notified(instances, advance(instances, observed, day, 1e9 + n, repeat_interval_s=86400.0))
    (alert,) = instances.values()
    return alert


def test_a_firing_alert_carries_the_weekday_baselines_it_fired_against():
    rows = figures(stopped)
    alert = fired_drop(rows)
    assert alert.state == "firing"
    # six weekdays at 60 of 90 issuing; Sunday, when nobody issues, at 0
    assert alert.values["baselines"] == {**{str(d): round(60 / 90, 4) for d in range(6)}, "6": 0.0}


def test_the_boards_show_the_frozen_baseline_while_the_alert_fires():
    rows = figures(stopped)
    alert = fired_drop(rows)
    firing = {("adoption_drop", "5610", "380"): alert.values}
    four_weeks_on = START + dt.timedelta(weeks=4, days=1)  # the live baseline has followed the drop down
    live_share, _ = segment_baselines(rows, four_weeks_on, RULES, DATA_START)[("5610", "380")]
    shown_share, _ = segment_baselines(rows, four_weeks_on, RULES, DATA_START, firing)[("5610", "380")]
    assert abs(live_share - 33 / 90) < 1e-9  # 27 of the 60 stopped four weeks ago
    assert shown_share == round(60 / 90, 4)
