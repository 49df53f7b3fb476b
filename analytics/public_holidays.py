"""Vietnam's public holidays: the one calendar that the alert rules and the simulator read.

The days come from the `holidays` package, which places Tết and the Hùng Kings' day by the lunar
calendar and carries the government's swaps of working days (e.g. 29 April 2024, a Monday off for a
Saturday worked), so no hand-kept list runs out. What it cannot know (a provincial holiday, a swap
announced after the package's release) a caller passes as ``extra`` date ranges: the alert rules
take them from ``evaluation.extra_holidays``.

The package computes the lunar holidays up to 2100; later years have only the solar ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from functools import cache
from types import MappingProxyType

import holidays

COUNTRY = "VN"
# the package's English names are stable across its releases; the Vietnamese ones are translations
LANGUAGE = "en_US"
LUNAR_NEW_YEAR = "Lunar New Year"  # mùng 1 Tết

DateRange = tuple[dt.date, dt.date]


@cache
def official_holidays(year: int) -> Mapping[dt.date, str]:
    """The year's public holidays and official days off, by date; built once per year (the rules ask per day)."""
    days = holidays.country_holidays(COUNTRY, years=year, language=LANGUAGE)
    return MappingProxyType(dict(days))


def is_holiday(day: dt.date, extra: Sequence[DateRange] = ()) -> bool:
    """A public holiday or official day off, or within one of the ``extra`` ranges (both ends included)."""
    return day in official_holidays(day.year) or any(first <= day <= last for first, last in extra)


def _names(day: dt.date) -> list[str]:
    # the package joins the names of holidays falling on the same day with "; "
    name = official_holidays(day.year).get(day)
    return name.split("; ") if name else []


@cache
def lunar_new_year(year: int) -> dt.date:
    """The first day of Tết (mùng 1 tháng Giêng) in ``year``."""
    for day in official_holidays(year):
        if LUNAR_NEW_YEAR in _names(day):
            return day
    raise LookupError(f"the holidays package has no {LUNAR_NEW_YEAR!r} in {year} (it knows the lunar calendar to 2100)")


@cache
def days_off(name: str, year: int) -> DateRange | None:
    """The run of days off around the public holiday ``name`` (the package's English name) in ``year``.

    The holiday, the official days off next to it and the weekend adjoining: people take them as one
    long weekend (travel, shops closed), so 30/4–1/5 2024 runs from Saturday 27 April. None when the
    year has no such holiday.
    """
    dates = [day for day in official_holidays(year) if name in _names(day)]
    if not dates:
        return None
    one = dt.timedelta(days=1)

    def off(day: dt.date) -> bool:
        return day.weekday() >= 5 or day in official_holidays(day.year)

    first, last = min(dates), max(dates)
    while off(first - one):
        first -= one
    while off(last + one):
        last += one
    return first, last
