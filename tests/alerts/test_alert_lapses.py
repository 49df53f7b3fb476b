"""Lapsed businesses for adoption_slide, by each seller's own habits (alerts/lapses.py), on known days."""

from __future__ import annotations

import datetime as dt

from alerts.dormant import SellerActivity
from alerts.lapses import lapse_counts
from alerts.rules import load_rules

RULES = load_rules()
DATA_START = dt.date(2024, 6, 3)
STOP = dt.date(2024, 8, 5)  # a Monday


def restaurant(i: int, unit: str = "380", stops: dt.date | None = None, closed_weekday: int | None = None,
               status: str = "ACTIVE") -> SellerActivity:  # fmt: skip
    days = [DATA_START + dt.timedelta(days=n) for n in range(90)]
    daily = {d: 20 for d in days if (stops is None or d < stops) and d.weekday() != closed_weekday}
    return SellerActivity(f"r{i}", "5610", unit, frozenset(daily), status, 20.0, daily)


def test_a_stopped_regular_seller_has_lapsed_after_three_silent_days_and_stays_lapsed():
    sellers = [restaurant(i, stops=STOP if i < 5 else None) for i in range(40)]
    on = {n: lapse_counts(sellers, STOP + dt.timedelta(days=n), RULES, DATA_START)[("5610", "380")] for n in range(30)}
    assert on[0] == on[1] == (0, 40)  # one and two silent days: not yet
    assert on[2] == on[20] == (5, 40)  # from the third silent day
    assert on[29] == (0, 35)  # 28 days on they are no longer active in the segment


def test_closed_weekdays_holidays_closed_sellers_and_roll_ups():
    sellers = [restaurant(0, closed_weekday=0), restaurant(1, unit="381", stops=STOP),
               restaurant(2, stops=STOP, status="CLOSED")]  # fmt: skip
    tuesday = STOP + dt.timedelta(days=1)
    assert lapse_counts(sellers, tuesday, RULES, DATA_START)[("5610", "380")] == (0, 1)  # Mondays are its closed day
    counts = lapse_counts(sellers, STOP + dt.timedelta(days=2), RULES, DATA_START)
    assert counts[("5610", "381")] == (1, 1)
    assert counts[("5610", "*")] == counts[("*", "*")] == (1, 2)  # the closed business counts nowhere
    national_day = [restaurant(3, stops=dt.date(2024, 9, 1))]  # its last day the eve of 2-3 September
    assert lapse_counts(national_day, dt.date(2024, 9, 4), RULES, DATA_START)[("5610", "380")] == (0, 1)
    assert lapse_counts(national_day, dt.date(2024, 9, 6), RULES, DATA_START)[("5610", "380")] == (1, 1)
