"""pipeline_lag judged by burn-down (alerts/lag.py), on sequences of (time, lag) samples (pure logic).

The default rule: limit 50,000 records, clear within 900 s at the rate of the last 120 s, for 120 s,
clear_for 60 s. Samples come every 30 s, the evaluator's default interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from alerts.lag import LagWatch, condition_holds, judge_lag
from alerts.rules import load_rules

RULES = load_rules()
LIMIT = RULES.evaluation.max_consumer_lag
RULE = RULES.pipeline_lag


def replay(lag_at: Callable[[float], int], until: float, every: float = 30.0, rule=RULE) -> list[tuple[float, str]]:
    """Feed the samples in order as the evaluator does; return (time, 'firing'|'resolved') transitions."""
    watch, firing, changes = LagWatch(LIMIT, rule), False, []
    at = 0.0
    while at <= until:
        holds = condition_holds(watch.add(at, lag_at(at)), rule, firing)
        if holds != firing:
            firing = holds
            changes.append((at, "firing" if firing else "resolved"))
        at += every
    return changes


def draining(backlog: int, per_s: float, stalled_s: float = 0.0) -> Callable[[float], int]:
    """A fresh worker: the backlog unchanged while it starts, then falling at a steady rate."""
    return lambda t: max(0, round(backlog - per_s * max(0.0, t - stalled_s)))


def test_a_fresh_worker_draining_a_large_backlog_steadily_sends_nothing():
    # two million records (a day's feed) at 5,000 a second: over the limit for more than six minutes,
    # after a minute of start-up in which nothing moved
    assert replay(draining(2_000_000, 5_000, stalled_s=60), until=1_200) == []
    # the same at the evaluator interval of the demo and the tests (1 s)
    assert replay(draining(300_000, 3_000, stalled_s=10), until=300, every=1.0) == []


def test_a_stuck_worker_fires_within_minutes():
    changes = replay(lambda t: 400_000, until=600)
    # the first sample has no rate; the second shows none: behind from 30 s, fires once behind for 120 s
    assert changes == [(150.0, "firing")]


def test_a_worker_that_stops_mid_way_fires_and_resolves_once_it_drains_again():
    def lag(t: float) -> int:
        if t < 300:
            return round(1_000_000 - 2_000 * t)  # draining: 400,000 left at 300 s
        if t < 900:
            return 400_000  # stuck for ten minutes
        return max(0, round(400_000 - 4_000 * (t - 900)))  # going again: clears in 100 s

    changes = replay(lag, until=1_500)
    assert [kind for _, kind in changes] == ["firing", "resolved"]
    (fired_at, _), (resolved_at, _) = changes
    # behind once the rate window no longer shows a drain fast enough, then `for`: four minutes at most
    assert 300 + RULE.for_ < fired_at <= 300 + RULE.rate_window_s + RULE.for_
    assert 900 + RULE.clear_for <= resolved_at <= 900 + RULE.clear_for + 2 * 30


def test_a_worker_the_feed_outruns_fires():
    # the lag grows by 200 records a second: it never clears
    assert replay(lambda t: 60_000 + 200 * t, until=600) == [(150.0, "firing")]


def test_draining_too_slowly_to_clear_in_time_fires_and_fast_enough_does_not():
    # 300,000 at 100/s would take 50 minutes; at 1,000/s five (within clear_within_s = 15 minutes)
    assert replay(draining(300_000, 100), until=600) == [(150.0, "firing")]
    assert replay(draining(300_000, 1_000), until=600) == []


def test_the_judgement_names_its_figures():
    judged = judge_lag([(0.0, 600_000), (60.0, 540_000), (120.0, 480_000)], LIMIT, RULE)
    assert judged.verdict == "healthy" and judged.drain_per_s == 1_000 and judged.clears_in_s == 480
    stuck = judge_lag([(0.0, 600_000), (30.0, 600_000), (60.0, 600_000)], LIMIT, RULE)
    assert (stuck.verdict, stuck.drain_per_s, stuck.clears_in_s, stuck.behind_for_s) == ("behind", 0.0, None, 30.0)
    values = stuck.values(RULE)
    assert values["consumer_lag"] == 600_000 and values["max_consumer_lag"] == LIMIT
    under = judge_lag([(0.0, 10_000), (30.0, 20_000), (60.0, 40_000)], LIMIT, RULE)
    assert under.verdict == "healthy" and under.healthy_for_s == 60.0  # growing, but under the limit
    first = judge_lag([(0.0, 600_000)], LIMIT, RULE)
    assert first.verdict == "unknown" and first.drain_per_s is None  # one sample: no rate, no verdict yet


def test_ticks_sparser_than_the_rate_window_still_measure_a_rate():
    # an evaluation interval of five minutes against a two-minute window: the previous sample serves
    assert replay(draining(2_000_000, 5_000), until=1_800, every=300.0) == []
    assert replay(lambda t: 400_000, until=1_800, every=300.0) == [(600.0, "firing")]


def test_for_and_clear_within_are_configurable():
    patient = dataclasses.replace(RULE, for_=600.0, clear_within_s=3_600.0)
    assert replay(lambda t: 400_000, until=900, rule=patient) == [(630.0, "firing")]
    assert replay(draining(300_000, 100), until=900, rule=patient) == []  # 50 minutes is within the hour
