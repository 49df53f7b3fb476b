"""Holidays come from one calendar (analytics.public_holidays, the `holidays` package) plus the rules'
extra days: any year works, the 2024 list the rules file kept is still covered, and the simulator
places its holidays from the same calendar (pure logic, no broker)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from alerts.rules import load_rules
from analytics import public_holidays
from analytics.public_holidays import days_off, is_holiday, lunar_new_year, official_holidays
from simulator.model import day_factor
from simulator.reference import load_reference

RULES = load_rules()
# evaluation.holidays of alerts/default_rules.yaml until the package replaced it
OLD_LIST_2024 = [
    (dt.date(2024, 2, 8), dt.date(2024, 2, 14)),
    (dt.date(2024, 4, 29), dt.date(2024, 5, 1)),
    (dt.date(2024, 9, 2), dt.date(2024, 9, 3)),
]


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def test_the_default_rules_list_no_day_of_their_own():
    assert RULES.evaluation.extra_holidays == ()


def test_every_day_of_the_old_2024_list_is_still_a_holiday():
    for first, last in OLD_LIST_2024:
        for day in days(first, last):
            assert RULES.evaluation.is_holiday(day), day


@pytest.mark.parametrize(
    ("first", "last"),
    [(dt.date(2025, 1, 28), dt.date(2025, 2, 1)), (dt.date(2026, 2, 16), dt.date(2026, 2, 20))],
)
def test_tet_2025_and_2026_are_holidays_with_no_list_entry(first, last):
    assert all(RULES.evaluation.is_holiday(day) for day in days(first, last))
    assert lunar_new_year(first.year) == {2025: dt.date(2025, 1, 29), 2026: dt.date(2026, 2, 17)}[first.year]
    # the day after the holiday is an ordinary day again
    assert not RULES.evaluation.is_holiday(last + dt.timedelta(days=1))


def test_national_day_2030_is_a_holiday():
    assert RULES.evaluation.is_holiday(dt.date(2030, 9, 2))


def test_an_ordinary_day_is_not():
    for day in (dt.date(2024, 7, 1), dt.date(2025, 3, 12), dt.date(2030, 10, 15)):
        assert not RULES.evaluation.is_holiday(day)


def test_extra_days_from_the_rules_file_are_holidays(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("evaluation:\n  extra_holidays:\n    - 2031-04-28\n    - [2027-08-19, 2027-08-20]\n")
    evaluation = load_rules(path).evaluation
    assert evaluation.extra_holidays == (
        (dt.date(2031, 4, 28), dt.date(2031, 4, 28)),
        (dt.date(2027, 8, 19), dt.date(2027, 8, 20)),
    )
    for day in (dt.date(2031, 4, 28), dt.date(2027, 8, 19), dt.date(2027, 8, 20)):
        assert evaluation.is_holiday(day) and not RULES.evaluation.is_holiday(day)
    assert not evaluation.is_holiday(dt.date(2027, 8, 21))
    assert evaluation.is_holiday(dt.date(2031, 9, 2))  # the public ones still count


def test_the_older_holidays_key_still_counts_as_extra_days(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("evaluation:\n  holidays:\n    - [2027-08-19, 2027-08-20]\n")
    evaluation = load_rules(path).evaluation
    assert evaluation.is_holiday(dt.date(2027, 8, 20)) and not evaluation.is_holiday(dt.date(2027, 8, 21))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("  extra_holidays: [[2027-08-20, 2027-08-19]]\n", "ends before it starts"),
        ("  extra_holidays: [20/8/2027]\n", "neither a date nor"),
        ("  extra_holidays: [[2027-08-19, 2027-08-20, 2027-08-21]]\n", "neither a date nor"),
        ("  extra_holidays: 2027-08-19\n", "must be a list"),
    ],
)
def test_a_malformed_extra_day_is_a_clear_error(tmp_path, body, match):
    path = tmp_path / "rules.yaml"
    path.write_text("evaluation:\n" + body)
    with pytest.raises(ValueError, match=match):
        load_rules(path)


def test_a_year_is_computed_once():
    official_holidays.cache_clear()
    start = time.perf_counter()
    for n in range(3 * 366):
        is_holiday(dt.date(2024, 1, 1) + dt.timedelta(days=n))
    assert official_holidays.cache_info().misses == 4  # 2024..2027: one per year, not one per day
    assert time.perf_counter() - start < 2.0


def test_a_long_weekend_spans_the_days_off_and_the_weekend_next_to_them():
    assert days_off("Liberation Day/Reunification Day", 2024) == (dt.date(2024, 4, 27), dt.date(2024, 5, 1))
    assert days_off("Hung Kings' Commemoration Day", 2024) == (dt.date(2024, 4, 18), dt.date(2024, 4, 18))
    assert days_off("no such day", 2024) is None


def test_the_simulator_takes_its_holidays_from_the_same_calendar():
    ref = load_reference()
    # the dates its reference file held for 2024, now from the calendar
    assert ref.tet_date == dt.date(2024, 2, 10) == lunar_new_year(2024)
    assert {h.name: h.days(2024) for h in ref.holidays} == {
        "Giỗ Tổ Hùng Vương": (dt.date(2024, 4, 18), dt.date(2024, 4, 18)),
        "30/4 – 1/5": (dt.date(2024, 4, 27), dt.date(2024, 5, 1)),
    }
    # and Tết moves with the lunar calendar: mùng 1 of 2025 is the year's low, as 10 February was in 2024
    sector = ref.sectors[0]
    for year in (2024, 2025):
        tet = lunar_new_year(year)
        month = [tet + dt.timedelta(days=k) for k in range(-20, 20)]
        assert min(month, key=lambda day: day_factor(ref, sector, day)) == tet


def test_only_the_calendar_module_asks_the_package():
    # one source: nothing else imports `holidays` (a second copy of the calendar would drift)
    root = Path(public_holidays.__file__).resolve().parent.parent
    askers = [
        path.relative_to(root).as_posix()
        for folder in ("alerts", "analytics", "simulator", "streams", "bench", "boards", "replay", "sinks", "deploy")
        for path in (root / folder).rglob("*.py")
        if any(line.strip() in ("import holidays", "from holidays import *") or line.startswith("from holidays ")
               for line in path.read_text(encoding="utf-8").splitlines())
    ]  # fmt: skip
    assert askers == ["analytics/public_holidays.py"]
