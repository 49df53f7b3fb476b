"""adoption_slide on known figures (pure logic): which businesses issued on which days, turned into the
segment's daily rows as analytics.adoption computes them, then judged by alerts.observe.

The segment: 90 eligible restaurants, 60 of which issue every day but Sunday.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from alerts.lifecycle import advance, mark_notified
from alerts.observe import segment_observations
from alerts.rules import load_rules
from alerts.statistics import fisher_greater
from analytics.adoption import SegmentDay

RULES = load_rules()
START = dt.date(2024, 7, 1)  # a Monday; data from 6 May (after 30/4–1/5), so eight weeks of history
DATA_START = dt.date(2024, 5, 6)


def rows(
    stops: dict[int, dt.date], days: int = 80, eligible: int = 90, issuers: int = 60,
    closed: tuple[dt.date, dt.date] | None = None, adopters: dict[int, dt.date] | None = None,
) -> list[SegmentDay]:  # fmt: skip
    """Daily rows of one segment: issuer i issues every day but Sunday until ``stops[i]`` (exclusive),
    nobody issues within ``closed``, and ``adopters`` start issuing on their day."""
    adopters = adopters or {}

    def issued(i: int, day: dt.date) -> bool:
        if i >= issuers and i not in adopters:
            return False
        if i in adopters and day < adopters[i]:
            return False
        if closed and closed[0] <= day <= closed[1]:
            return False
        return day.weekday() != 6 and day < stops.get(i, dt.date.max)

    out = []
    for n in range(days):
        day = DATA_START + dt.timedelta(days=n)
        windows = [[day - dt.timedelta(days=j) for j in range(k) if day - dt.timedelta(days=j) >= DATA_START]
                   for k in (1, 7, 28)]  # fmt: skip
        active = [sum(any(issued(i, d) for d in window) for i in range(eligible)) for window in windows]
        out.append(SegmentDay(day, "5610", "380", eligible, *active, active[1] / eligible, active[2] / eligible,
                              0, 0, 0, active[0], 0.0))  # fmt: skip
    return out


def slide(day: dt.date, figures: list[SegmentDay], rules=RULES):
    found = [o for o in segment_observations(figures, day, rules, DATA_START) if o.rule == "adoption_slide"]
    return found[0] if found else None


def first_active(figures: list[SegmentDay], since: dt.date, days: int = 21, rules=RULES) -> int | None:
    """Days from ``since`` to the first day the rule's condition holds twice in a row (``for: 2``).

    Every day must have been judged (an observation), so a rule switched off fails instead of passing.
    """
    held = 0
    for k in range(days):
        observation = slide(since + dt.timedelta(days=k), figures, rules)
        assert observation is not None, f"not judged on {since + dt.timedelta(days=k)}"
        held = held + 1 if observation.active else 0
        if held == 2:
            return k
    return None


def test_a_slide_of_twelve_percent_a_week_fires_a_week_after_its_first_step():
    # six steps: 12% of those still issuing stop each Monday (7 of 60, then 6 of 53, ...)
    stops, left, next_seller = {}, 60, 0
    for step in range(6):
        count = round(0.12 * left)
        for i in range(next_seller, next_seller + count):
            stops[i] = START + dt.timedelta(weeks=step)
        next_seller, left = next_seller + count, left - count
    figures = rows(stops)
    # the first step's businesses issued last on Saturday: lapsed from Friday (day 5), fired on day 6 (`for: 2`)
    assert first_active(figures, START) == 6
    fired = slide(START + dt.timedelta(days=6), figures)
    assert fired.values["lapsed"] == 7 and fired.values["usual_lapsed_share"] == 0.0
    assert fired.values["p_value"] < RULES.adoption_slide.p_value
    # the daily rule's same-weekday baseline does not see a 12% step (well under its ten points)
    drop = [o for o in segment_observations(figures, START + dt.timedelta(days=6), RULES, DATA_START)
            if o.rule == "adoption_drop"]  # fmt: skip
    assert not drop[0].active


def test_one_business_stopping_or_a_tiny_segment_losing_three_stays_quiet():
    assert first_active(rows({0: START}), START) is None
    # four of fifteen lapse: a segment too small to judge (min_active 20) ...
    assert first_active(rows({i: START for i in range(4)}, eligible=18, issuers=15), START) is None
    # ... where four of twenty-five are enough
    assert first_active(rows({i: START for i in range(4)}, eligible=30, issuers=25), START) == 6


def test_a_holiday_week_is_neither_judged_nor_a_baseline():
    # everybody closed for nine days, as for Tết: all count as lapsed on the last three
    closed = (START - dt.timedelta(days=2), START + dt.timedelta(days=6))
    rules = dataclasses.replace(RULES, evaluation=dataclasses.replace(RULES.evaluation, extra_holidays=(closed,)))
    figures = rows({}, closed=closed)
    judged = [slide(START + dt.timedelta(days=k), figures, rules) for k in range(28)]
    assert not any(o is not None and o.active for o in judged)
    assert any(o is not None for o in judged[20:])  # judged again once two clean weeks of baseline are back
    # without the holiday in the rules, the closed days read as a slide: the guard is what keeps it quiet
    assert first_active(figures, START, days=7) is not None


def test_too_little_history_is_no_judgement():
    # lapses can be counted from day 27 of the data; two weeks of them are the least baseline
    stopped = {i: START for i in range(10)}
    assert slide(DATA_START + dt.timedelta(days=27 + 13), rows(stopped)) is None
    assert slide(DATA_START + dt.timedelta(days=27 + 14), rows(stopped)) is not None


def test_new_adopters_outnumbering_the_lapsed_are_no_decline():
    stops = {i: START for i in range(7)}
    assert first_active(rows(stops), START) == 6
    adopters = {60 + i: START for i in range(10)}  # ten new issuers the same week
    assert first_active(rows(stops, adopters=adopters), START) is None


def test_fisher_exact_tail():
    assert fisher_greater(3, 28, 0, 112) == pytest.approx(3276 / 447580)
    assert fisher_greater(10, 10, 0, 10) == pytest.approx(1 / 184756)
    assert fisher_greater(0, 50, 3, 200) == 1.0 and fisher_greater(5, 10, 5, 10) > 0.5


def test_a_firing_slide_keeps_the_baseline_it_fired_against_until_the_lapses_end():
    """A slide that goes on would become its own baseline within a month (three weeks of lapses per
    business) and "resolve" mid-slide; the evaluator hands the firing alert's baseline back instead."""
    stops, left, next_seller = {}, 60, 0
    for step in range(6):
        count = round(0.12 * left)
        stops.update({i: START + dt.timedelta(weeks=step) for i in range(next_seller, next_seller + count)})
        next_seller, left = next_seller + count, left - count
    figures = rows(stops, days=130)
    instances: dict = {}
    transitions = []
    for k in range(70):
        day = START + dt.timedelta(days=k)
        firing = {
            (i.rule, i.labels["sector"], i.labels["unit"]): i.values
            for i in instances.values() if i.rule == "adoption_slide" and i.state == "firing"
        }  # fmt: skip
        found = [o for o in segment_observations(figures, day, RULES, DATA_START, firing=firing)
                 if o.rule == "adoption_slide"]  # fmt: skip
        events = advance(instances, found, day, 0.0, repeat_interval_s=1e9)
        mark_notified(instances, events)
        transitions += [(k, e.type) for e in events]
    fired = [k for k, kind in transitions if kind == "firing"]
    resolved = [k for k, kind in transitions if kind == "resolved"]
    assert fired == [6] and len(resolved) == 1
    # the last step (day 35) lapses from day 40 and for three weeks: resolved once the lapses are over
    assert resolved[0] > 35 + 6 + 20, transitions
