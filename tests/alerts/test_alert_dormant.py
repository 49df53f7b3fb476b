"""dormant_issuer judged by each seller's own history (issue 24, point 2), on known issuing days.

A seller is named only when its silence is longer than any quiet spell it had and unlikely at its own
miss rate; holidays and the weekdays it is usually closed are never silence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from alerts.dormant import SellerActivity, dormant_observations, own_history
from alerts.rules import load_rules

RULES = load_rules()
DATA_START = dt.date(2024, 6, 3)


def seller(issues: Callable[[dt.date], bool], last: dt.date, seller_id: str = "s1", per_day: float = 20.0,
           first: dt.date = DATA_START) -> SellerActivity:  # fmt: skip
    days = frozenset(d for d in (first + dt.timedelta(days=i) for i in range((last - first).days + 1)) if issues(d))
    return SellerActivity(seller_id, "4711", "380", days, "ACTIVE", per_day)


def named(sellers: list[SellerActivity], day: dt.date) -> list[str]:
    [observation] = dormant_observations(sellers, ["380"], day, RULES, DATA_START)
    return [s["seller_id"] for s in observation.values["sellers"]]


def every_day(day: dt.date) -> bool:
    return True


def test_a_seller_that_never_missed_a_day_is_named_after_three_open_days_not_before():
    last = dt.date(2024, 8, 1)  # eight weeks of history; the 2nd is its first silent day
    station = seller(every_day, last)
    assert named([station], last + dt.timedelta(days=2)) == []  # two days: (1/58)² is not rare enough
    assert named([station], last + dt.timedelta(days=3)) == ["s1"]
    [obs] = dormant_observations([station], ["380"], last + dt.timedelta(days=3), RULES, DATA_START)
    assert obs.values["sellers"][0]["silent_days"] == 3 and obs.values["sellers"][0]["longest_usual_gap"] == 0


def test_the_weekday_a_seller_is_closed_is_no_silence():
    def closed_mondays(day: dt.date) -> bool:
        return day.weekday() != 0

    last = dt.date(2024, 7, 27)  # a Saturday; Sunday, Monday, Tuesday silent
    tuesday = dt.date(2024, 7, 30)
    shop = seller(closed_mondays, last, "closed-on-mondays")
    assert own_history(shop.days, RULES.dormant_issuer, RULES, DATA_START).open_weekdays == frozenset(range(1, 7))
    assert named([shop], tuesday) == []  # Sunday and Tuesday: two open days
    assert named([seller(every_day, last, "open-every-day")], tuesday) == ["open-every-day"]  # three
    assert named([shop], tuesday + dt.timedelta(days=1)) == ["closed-on-mondays"]


def test_public_holidays_are_no_silence():
    last = dt.date(2024, 9, 1)  # the eve of National Day (2 and 3 September 2024)
    shop = seller(every_day, last)
    assert named([shop], dt.date(2024, 9, 4)) == []  # one open day silent, not three
    assert named([shop], dt.date(2024, 9, 6)) == ["s1"]


def test_a_lumpy_seller_is_named_only_after_a_silence_longer_than_its_own():
    def lumpy(day: dt.date) -> bool:  # misses one day in four, two in a row every fourth week
        n = (day - DATA_START).days
        return n % 4 != 3 and n % 28 not in (20, 21)

    last = dt.date(2024, 8, 1)
    shop = seller(lumpy, last)
    history = own_history(shop.days, RULES.dormant_issuer, RULES, DATA_START)
    assert history.longest_gap == 3 and 0.25 < history.miss_rate < 0.35
    assert named([shop], last + dt.timedelta(days=5)) == []  # a regular seller would be named by now
    assert named([shop], last + dt.timedelta(days=9)) == ["s1"]


def test_a_seller_that_started_late_is_judged_from_its_first_invoice():
    first = dt.date(2024, 7, 10)
    last = dt.date(2024, 8, 1)
    newcomer = seller(every_day, last, first=first)
    history = own_history(newcomer.days, RULES.dormant_issuer, RULES, DATA_START)
    assert history.missed == 0 and history.open_days == 23
    assert named([newcomer], last + dt.timedelta(days=3)) == ["s1"]


def test_small_and_irregular_sellers_are_not_watched():
    last = dt.date(2024, 8, 1)
    small = seller(every_day, last, "small", per_day=2.0)
    part_time = seller(lambda d: d.toordinal() % 3 == 0, last, "part-time")
    assert named([small, part_time], last + dt.timedelta(days=20)) == []


def test_by_its_daily_counts_a_big_steady_seller_is_named_after_one_silent_day_a_lumpy_one_later():
    last = dt.date(2024, 8, 1)

    def with_counts(seller_id: str, count: Callable[[int], int], sector: str = "4730") -> SellerActivity:
        days = [DATA_START + dt.timedelta(days=i) for i in range((last - DATA_START).days + 1)]
        daily = {d: count(i) for i, d in enumerate(days) if count(i)}
        mean = sum(daily.values()) / len(daily)
        return SellerActivity(seller_id, sector, "380", frozenset(daily), "ACTIVE", mean, daily)

    station = with_counts("station", lambda i: 200 + (i % 5) * 10)
    history = own_history(station.days, RULES.dormant_issuer, RULES, DATA_START, station.daily)
    assert history.zero_chance < 1e-50 and history.miss_rate == history.zero_chance
    assert named([station], last + dt.timedelta(days=1)) == ["station"]  # filling stations: silent_days 1
    # a shop of 1 to 40 a day, never a day without: its spread makes a silent day likely enough to wait
    lumpy = with_counts("lumpy", lambda i: (1, 60, 2, 30, 1, 5, 40)[i % 7], sector="4711")
    history = own_history(lumpy.days, RULES.dormant_issuer, RULES, DATA_START, lumpy.daily)
    assert 0.05 < history.zero_chance < 0.3
    needed = next(n for n in range(1, 20) if history.zero_chance**n < RULES.dormant_issuer.max_chance)
    assert needed >= 4
    assert named([lumpy], last + dt.timedelta(days=needed - 1)) == []
    assert named([lumpy], last + dt.timedelta(days=needed)) == ["lumpy"]
